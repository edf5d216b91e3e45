"""`progre pseudo-speakers`: speaker ids for corpora without them, by k-means over utterance embeddings.

Embeddings: ``mfcc_stats`` (mean and standard deviation of the 13 static cepstra over the
utterance; the deltas mostly carry what is said, and adding them cut pseudo-speaker purity on
the demo corpus from 0.57 to 0.42)
or ``layer_mean`` (a checkpoint's hidden states of the transformer layers `layers`, each averaged
over the utterance's frames, then averaged over the layers: e.g. layers 4-6 of the iteration-1
model). Each dimension is standardised over the corpus and each embedding scaled to unit length
before k-means, so the clustering follows direction (cosine) rather than loudness.

Where every utterance of the corpus has a speaker id, the clusters are scored against them (NMI and
purity both ways, in the returned metrics and the log); otherwise the log says they cannot be.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..data.shards import Shards
from ..errors import UserError
from ..features.computing import compute_in_batches
from ..features.hidden import HiddenStateExtractor, layer_state, load_frozen_encoder
from ..features.mfcc_features import MfccComputer
from ..io import atomic_path, reading
from ..log import logger
from ..settings import setting
from .kmeans import KMeansModel, fit_kmeans

FILE = "speakers.parquet"
EMBEDDINGS = ("mfcc_stats", "layer_mean")


@dataclass(frozen=True)
class SpeakerSettings:
    """Pseudo-speaker clustering (the `speakers` params section)."""

    n_speakers: int = setting(24, "number of pseudo speakers", min=2)
    embedding: str = setting("mfcc_stats", "utterance embedding: mean and std of the static MFCC cepstra, or the mean "
                                           "of a checkpoint's layers' hidden states (--checkpoint)", choices=EMBEDDINGS)
    layers: list[int] = setting([4], "transformer layers (1-based) for layer_mean: each averaged over the frames, "
                                     "then over the layers", min=1)
    niter: int = setting(50, "k-means iterations", min=1)
    seed: int = setting(1234, "random seed")

    def __post_init__(self) -> None:
        if not self.layers:
            raise UserError("layers: give at least one layer")


def pseudo_speakers(shards: Shards, checkpoint: Path | None, settings: SpeakerSettings, device: torch.device,
                    folder: Path) -> dict[str, Any]:
    """Cluster every utterance of `shards` into `settings.n_speakers` pseudo speakers, embedded on
    `device` (with `checkpoint`'s layers for layer_mean); writes folder/speakers.parquet (key, split,
    speaker "pseudoNNNN") and returns the metrics: counts, and NMI and purity against the corpus
    speakers when every utterance has one (else the number of utterances without one)."""
    if settings.embedding == "layer_mean" and checkpoint is None:
        raise UserError("speakers.embedding=layer_mean needs --checkpoint")
    if len(shards) < settings.n_speakers:
        raise UserError(f"{len(shards)} utterances cannot form {settings.n_speakers} pseudo speakers")
    if settings.embedding == "mfcc_stats":
        computer, embed = MfccComputer(device), mfcc_stats
    else:
        encoder = load_frozen_encoder(checkpoint, device)  # type: ignore[arg-type]
        computer = HiddenStateExtractor(encoder, device, states=[layer_state(encoder, layer)
                                                                 for layer in settings.layers])
        embed = layers_mean
    keys, splits, true, embeddings = [], [], [], []
    for utt, feats in compute_in_batches(computer, shards.stream(), 60.0, description="utterance embeddings",
                                         total=len(shards)):
        embeddings.append(embed(np.asarray(feats, dtype=np.float32)))
        keys.append(utt.key)
        splits.append(utt.meta["split"])
        true.append(utt.meta.get("speaker"))
    labels = cluster_speakers(np.stack(embeddings), settings.n_speakers, settings.niter, settings.seed)
    metrics: dict[str, Any] = {"utterances": len(keys), "n_speakers": settings.n_speakers,
                               "speakers_used": int(len(np.unique(labels)))}
    unlabelled = sum(1 for t in true if not t)
    if unlabelled:
        metrics["utterances_without_speaker_id"] = unlabelled
        logger.info("pseudo speakers not scored: %d of %d utterances have no speaker id in the corpus", unlabelled,
                    len(keys))
    else:
        metrics |= speaker_purity(true, labels)
        logger.info("pseudo speakers against the corpus's %d speakers: NMI %.3f, purity %.3f (pseudo speakers' "
                    "largest true speaker), %.3f (true speakers' largest pseudo speaker)", len(set(true)),
                    metrics["normalised_mutual_information"], metrics["pseudo_speaker_purity"],
                    metrics["true_speaker_purity"])
    rows = [{"key": k, "split": s, "speaker": f"pseudo{int(lab):04d}"} for k, s, lab in zip(keys, splits, labels)]
    meta = {"corpus": shards.fingerprint, "embedding": settings.embedding}
    if settings.embedding == "layer_mean":
        meta |= {"layers": " ".join(map(str, settings.layers)), "checkpoint": str(checkpoint)}
    table = pa.Table.from_pylist(rows).replace_schema_metadata(meta)
    with atomic_path(Path(folder) / FILE) as path:
        pq.write_table(table, path)
    return metrics


def read_speakers(folder: Path, shards: Shards | None = None) -> dict[str, str]:
    """key -> pseudo-speaker id of a `progre pseudo-speakers` folder; with `shards`, checked to be of that
    corpus (the table records the corpus fingerprint)."""
    path = Path(folder) / FILE
    if not path.is_file():
        raise UserError(f"{folder} holds no {FILE}; run `progre pseudo-speakers` first")
    with reading(path, "rerun `progre pseudo-speakers`"):
        table = pq.read_table(path)
    corpus = (table.schema.metadata or {}).get(b"corpus")
    if shards is not None and corpus is not None and corpus.decode() != shards.fingerprint:
        raise UserError(f"the pseudo speakers in {folder} belong to another corpus than {shards.folder}; rerun "
                        f"`progre pseudo-speakers` on it")
    return dict(zip(table.column("key").to_pylist(), table.column("speaker").to_pylist()))


STATIC_CEPSTRA = 13


def mfcc_stats(features: np.ndarray) -> np.ndarray:
    """(frames, 39) MFCC with deltas -> (26,) mean and standard deviation of the static cepstra."""
    static = features[:, :STATIC_CEPSTRA]
    return np.concatenate([static.mean(axis=0), static.std(axis=0)])


def layers_mean(states: np.ndarray) -> np.ndarray:
    """(frames, layers, dim) hidden states -> (dim,): the mean over frames of each layer, averaged over the layers."""
    return states.mean(axis=0).mean(axis=0)


def normalise_embeddings(embeddings: np.ndarray) -> np.ndarray:
    z = (embeddings - embeddings.mean(axis=0)) / (embeddings.std(axis=0) + 1e-8)
    return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-8)


def cluster_speakers(embeddings: np.ndarray, n_speakers: int, niter: int, seed: int) -> np.ndarray:
    """(utterances, dim) -> pseudo-speaker index per utterance."""
    x = normalise_embeddings(embeddings).astype(np.float32)
    centroids, _ = fit_kmeans(x, n_speakers, niter=niter, nredo=5, init="kmeans++", seed=seed,
                              max_points_per_centroid=None)
    labels, _ = KMeansModel(centroids).assign(x)
    return labels


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def speaker_purity(true: list[str], pseudo: np.ndarray) -> dict[str, float]:
    """Purity of pseudo speakers against true ones, both ways, and normalised mutual information
    2 I / (H(true) + H(pseudo)), which (unlike PNMI) also penalises splitting a speaker."""
    from .quality import purity_and_pnmi

    names = sorted(set(true))
    row = {name: i for i, name in enumerate(names)}
    joint = np.zeros((len(names), int(pseudo.max()) + 1), dtype=np.int64)
    for name, label in zip(true, pseudo):
        joint[row[name], label] += 1
    scores = purity_and_pnmi(joint)
    p = joint / joint.sum()
    h_true, h_pseudo = _entropy(p.sum(axis=1)), _entropy(p.sum(axis=0))
    mutual = h_true + h_pseudo - _entropy(p.ravel())
    nmi = 2 * mutual / (h_true + h_pseudo) if h_true + h_pseudo > 0 else 1.0
    # in speaker terms: how pure each pseudo speaker is, and how whole each true speaker stays
    return {"pseudo_speaker_purity": scores["phone_purity"], "true_speaker_purity": scores["cluster_purity"],
            "normalised_mutual_information": nmi}
