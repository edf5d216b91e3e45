"""Plots of an evaluation: bars of learned layer weights (one per hidden state, in the upstream's state
order), and spectrograms of audio examples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_path


@dataclass
class WeightPanel:
    """One upstream's weights for one task."""

    title: str
    names: list[str]
    weights: list[float]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, panel: WeightPanel, ymax: float) -> None:
    positions = range(len(panel.names))
    ax.bar(positions, panel.weights, width=0.7, color="tab:blue")
    ax.set_xlim(-0.7, len(panel.names) - 0.3)
    ax.axhline(1.0 / len(panel.names), color="grey", linestyle="--", linewidth=1, label="uniform")
    ax.set_xticks(list(positions), panel.names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, ymax)
    ax.set_title(panel.title, fontsize=10)


def save_weight_plot(path: Path, panel: WeightPanel) -> None:
    """One panel to a PNG (written atomically)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(3.5, 0.5 * len(panel.names) + 1.5), 3.2))
    _draw(ax, panel, ymax=min(1.0, max(panel.weights) * 1.15 + 0.02))
    ax.set_ylabel("weight (softmax)")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def save_weight_grid(path: Path, panels: list[WeightPanel], title: str) -> None:
    """Panels side by side with a shared y axis (one task, one panel per upstream), to a PNG."""
    plt = _pyplot()
    widths = [max(1.5, 0.45 * len(p.names) + 0.6) for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths) + 1.0, 3.4), squeeze=False,
                             gridspec_kw={"width_ratios": widths}, sharey=True)
    ymax = min(1.0, max(max(p.weights) for p in panels) * 1.15 + 0.02)
    for ax, panel in zip(axes[0], panels):
        _draw(ax, panel, ymax)
    axes[0][0].set_ylabel("weight (softmax)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def save_spectrograms(path: Path, rows: list[tuple[str, np.ndarray]], title: str, sample_rate: int = 16000) -> None:
    """Log-magnitude spectrograms (25 ms Hann windows, 10 ms hop, 0-8 kHz) one above the other, on a
    shared colour scale, to a PNG."""
    plt = _pyplot()
    window, hop = 400, 160
    spectra = []
    for _, wav in rows:
        wav = np.asarray(wav, dtype=np.float64)
        frames = [wav[i:i + window] * np.hanning(window) for i in range(0, max(len(wav) - window, 0) + 1, hop)]
        power = np.abs(np.fft.rfft(np.array(frames), n=512)) ** 2 if frames else np.zeros((1, 257))
        spectra.append(10 * np.log10(power.T + 1e-10))
    top = max(float(s.max()) for s in spectra)
    fig, axes = plt.subplots(len(rows), 1, figsize=(7.5, 1.5 * len(rows) + 0.6), squeeze=False, sharex=True)
    for ax, (label, _), spectrum in zip(axes[:, 0], rows, spectra):
        seconds = spectrum.shape[1] * hop / sample_rate
        ax.imshow(spectrum, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                  extent=(0, seconds, 0, sample_rate / 2000))
        ax.set_title(label, fontsize=8, loc="left")
        ax.set_yticks([0, 4, 8])
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("seconds (frequency in kHz)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
