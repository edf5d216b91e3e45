"""Label quality: cluster usage, and phone purity / cluster purity / PNMI (HuBERT, Hsu et al. 2021).

With y the frame's phone and z its cluster label, from the joint distribution p(y, z):

- phone purity   = sum_z p(z) max_y p(y | z)   (how well a cluster predicts one phone)
- cluster purity = sum_y p(y) max_z p(z | y)   (how well a phone maps to one cluster)
- PNMI           = I(y; z) / H(y)              (phone uncertainty removed by knowing the label)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SILENCE = "sil"
WINDOW_SECONDS = 0.025  # MFCC frames and CNN frames both cover 25 ms


def frame_phones(phones: list[str], starts: list[float], ends: list[float], n_frames: int,
                 frame_rate: int) -> list[str]:
    """The phone under each frame's centre (frame i covers [i / rate, i / rate + 25 ms)); 'sil' elsewhere."""
    centres = np.arange(n_frames) / frame_rate + WINDOW_SECONDS / 2
    starts_a = np.asarray(starts, dtype=np.float64)
    ends_a = np.asarray(ends, dtype=np.float64)
    which = np.searchsorted(starts_a, centres, side="right") - 1
    out = []
    for centre, i in zip(centres, which):
        out.append(phones[i] if i >= 0 and centre < ends_a[i] else SILENCE)
    return out


class JointCounts:
    """Accumulates phone x cluster co-occurrence counts over utterances."""

    def __init__(self, n_clusters: int):
        self.n_clusters = n_clusters
        self.phones: dict[str, int] = {}
        self.rows: list[np.ndarray] = []

    def add(self, phones: list[str], labels: np.ndarray) -> None:
        if len(phones) != len(labels):
            raise ValueError(f"{len(phones)} phone frames but {len(labels)} labels")
        for phone, label in zip(phones, labels):
            row = self.phones.get(phone)
            if row is None:
                row = self.phones[phone] = len(self.rows)
                self.rows.append(np.zeros(self.n_clusters, dtype=np.int64))
            self.rows[row][label] += 1

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """Phone names and the (phones, clusters) count matrix."""
        names = list(self.phones)
        return names, np.stack(self.rows) if self.rows else np.zeros((0, self.n_clusters), dtype=np.int64)


def purity_and_pnmi(joint: np.ndarray) -> dict[str, float]:
    """Phone purity, cluster purity and PNMI of a (phones, clusters) count matrix."""
    total = joint.sum()
    if total == 0:
        raise ValueError("no frames to score")
    p = joint / total
    p_phone = p.sum(axis=1)
    p_cluster = p.sum(axis=0)
    phone_purity = float(p.max(axis=0).sum())
    cluster_purity = float(p.max(axis=1).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = p / (p_phone[:, None] * p_cluster[None, :])
        mutual = float(np.nansum(np.where(p > 0, p * np.log(ratio), 0.0)))
        phone_entropy = float(-np.nansum(np.where(p_phone > 0, p_phone * np.log(p_phone), 0.0)))
    pnmi = mutual / phone_entropy if phone_entropy > 0 else 0.0
    return {"phone_purity": phone_purity, "cluster_purity": cluster_purity, "pnmi": pnmi}


def cluster_usage(counts: np.ndarray) -> dict[str, float]:
    """How many clusters are used and how evenly: entropy in bits and its ratio to log2(k)."""
    total = counts.sum()
    p = counts[counts > 0] / total
    entropy = float(-(p * np.log2(p)).sum())
    return {"clusters_used": int((counts > 0).sum()), "usage_entropy_bits": entropy,
            "usage_entropy_ratio": entropy / np.log2(len(counts)) if len(counts) > 1 else 1.0}


def plot_cooccurrence(names: list[str], joint: np.ndarray, path: Path, title: str) -> None:
    """p(phone | cluster) heat map, clusters ordered by their most likely phone (as in HuBERT's Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phone_order = np.argsort(-joint.sum(axis=1))
    joint = joint[phone_order]
    names = [names[i] for i in phone_order]
    used = joint.sum(axis=0) > 0
    conditional = joint[:, used] / joint[:, used].sum(axis=0, keepdims=True)
    cluster_order = np.lexsort((-conditional.max(axis=0), conditional.argmax(axis=0)))
    conditional = conditional[:, cluster_order]
    fig, ax = plt.subplots(figsize=(max(6, 0.06 * conditional.shape[1] + 3), max(4, 0.16 * len(names) + 1.5)))
    image = ax.imshow(conditional, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlabel("cluster (sorted by most likely phone)")
    ax.set_ylabel("phone (by frequency)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="p(phone | cluster)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
