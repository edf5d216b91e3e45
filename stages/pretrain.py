"""DVC stage `pretrain`: masked-prediction pretraining of ProgRE or HuBERT; rerun to resume
(`progre.train.pretrain`).

Run folder: train_state/ (resumable checkpoints and dvclive metrics; a persistent DVC output),
model/ (the final checkpoint every later stage reads), metrics.json, curves.png.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from progre.config import PretrainParams
from progre.data.shards import Shards
from progre.io import write_json
from progre.log import logger
from progre.outputs import run_folder
from progre.train.data import PlanSettings
from progre.train.distributed import init_distributed, shutdown
from progre.train.loop import TrainSettings
from progre.train.pretrain import ModelChoice, pretrain


def run(p: PretrainParams, out: Path, shards: Path, labels: Path, pitch: Path | None = None,
        speakers: Path | None = None) -> dict:
    dist = init_distributed()
    # rank 0 owns the run folder (the others write nothing into it)
    folder = run_folder(out, "pretrain", inputs=[shards, labels, pitch, speakers]) if dist.is_main else nullcontext()
    try:
        with folder:
            summary = pretrain(Shards(shards), labels, out, p.to(ModelChoice), p.to(PlanSettings),
                               p.to(TrainSettings), dist, pitch=pitch, speakers=speakers,
                               speaker_labels=p.speaker_labels)
            if dist.is_main:
                write_json(out / "metrics.json", summary)
    finally:
        shutdown(dist)
    if dist.is_main:
        logger.info("finished %d updates in %.0f s: masked accuracy %.3f (train)%s", summary["steps"],
                    summary["wall_seconds"], summary.get("train/acc_masked", float("nan")),
                    f", {summary['valid/acc_masked']:.3f} (valid)" if "valid/acc_masked" in summary else "")
    return summary
