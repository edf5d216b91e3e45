"""DVC stage `pretrain`: masked-prediction pretraining of ProgRE or HuBERT; rerun to resume
(`progre.train.run`).

Run folder: train_state/ (resumable checkpoints and dvclive metrics; a persistent DVC output),
model/ (the final checkpoint every later stage reads), metrics.json, curves.png.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from progre.cluster.labels import read_labels
from progre.cluster.speakers import read_speakers
from progre.config import PretrainParams
from progre.data.shards import Shards
from progre.features.store import open_pitch_store
from progre.io import write_json
from progre.log import logger
from progre.outputs import run_folder
from progre.train.batches import PlanSettings
from progre.train.distributed import init_distributed, shutdown
from progre.train.loop import RunControl, TrainRecipe
from progre.train.run import ModelChoice, pretrain


def run(p: PretrainParams, out: Path, shards: Path, labels: Path, pitch: Path | None = None,
        speakers: Path | None = None) -> dict:
    dist = init_distributed()
    # rank 0 owns the run folder (the others write nothing into it)
    init = Path(p.init) if p.init else None  # continued pretraining: the run folder must not hold it
    folder = run_folder(out, "pretrain", inputs=[shards, labels, pitch, speakers, init]) if dist.is_main \
        else nullcontext()
    try:
        with folder:
            corpus = Shards(shards)
            pitch_store = open_pitch_store(pitch, corpus) if pitch is not None else None
            speaker_ids = read_speakers(speakers, corpus) if speakers is not None else None
            summary = pretrain(corpus, read_labels(labels), pitch_store, speaker_ids, p.to(ModelChoice),
                               p.to(PlanSettings), p.to(TrainRecipe), p.to(RunControl), dist, out)
            if dist.is_main:
                write_json(out / "metrics.json", summary)
    finally:
        shutdown(dist)
    if dist.is_main:
        logger.info("finished %d updates in %.0f s: masked accuracy %.3f (train)%s", summary["steps"],
                    summary["wall_seconds"], summary.get("train/acc_masked", float("nan")),
                    f", {summary['valid/acc_masked']:.3f} (valid)" if "valid/acc_masked" in summary else "")
    return summary
