"""Training metrics, written once, through dvclive (``train_state/dvclive``), and the curves plot.

dvclive keeps one TSV per metric (``plots/metrics/train/loss_masked.tsv``: step, value) and the
latest values in ``metrics.json``. A run resumed from a checkpoint older than its last logged step
(it was killed between a log and the next checkpoint) does not log those steps again: training is
deterministic, so they would repeat the same numbers.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..io import read_json


class MetricsLog:
    """Appends one record of named scalars per logged update to a dvclive folder."""

    def __init__(self, folder: Path, resume: bool):
        from dvclive import Live

        self.live = Live(str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)
        self.last_logged = self.live.read_step() if resume else 0

    def log(self, step: int, record: dict[str, float]) -> None:
        if step <= self.last_logged:
            return
        self.live.step = step
        for name, value in record.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    @staticmethod
    def latest(folder: Path) -> dict[str, Any]:
        """The latest value of every metric, by its full name ("train/loss_masked"); {} before any log."""
        path = Path(folder) / "metrics.json"
        return _flatten(read_json(path)) if path.is_file() else {}

    @staticmethod
    def history(folder: Path, name: str) -> list[tuple[int, float]]:
        """(step, value) of every logged value of `name` ("valid/acc_masked"), in step order."""
        path = Path(folder) / "plots" / "metrics" / f"{name}.tsv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        column = name.rsplit("/", 1)[-1]
        return [(int(float(r["step"])), float(r[column])) for r in rows]


def _flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """dvclive nests "train/loss" as {"train": {"loss": ...}}; undo it."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flatten(value, f"{name}/")
        else:
            out[name] = value
    return out


def plot_curves(folder: Path, out: Path, title: str) -> None:
    """Masked-prediction loss and accuracy (train and valid) against updates, from a dvclive folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not MetricsLog.history(folder, "train/loss_masked"):
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, name in zip(axes, ("loss_masked", "acc_masked")):
        for split, style in (("train", "-"), ("valid", "o--")):
            points = MetricsLog.history(folder, f"{split}/{name}")
            if points:
                ax.plot(*zip(*points), style, label=split, markersize=3)
        ax.set_xlabel("update")
        ax.set_title(name.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
