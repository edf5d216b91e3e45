"""DVC stage `pretrain`: masked-prediction pretraining of ProgRE or HuBERT; rerun to resume
(`progre.train.run`).

Run folder: train_state/ (resumable checkpoints and dvclive metrics; a persistent DVC output),
model/ (the final checkpoint every later stage reads), metrics.json, curves.png. With
`pretrain.nproc_per_node` above 1 the command starts itself once per GPU (`progre.train.launch`).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from progre.cluster.labels import read_labels
from progre.cluster.speakers import read_speakers
from progre.config import PretrainParams
from progre.data.shards import Shards
from progre.features.store import open_pitch_store
from progre.io import read_json, write_json
from progre.log import logger
from progre.outputs import run_folder
from progre.train.batches import PlanSettings
from progre.train.distributed import collective_errors, init_distributed, shutdown
from progre.train.launch import processes_to_start, run_ranks
from progre.train.loop import RunControl, TrainRecipe
from progre.train.run import ModelChoice, pretrain


def run(p: PretrainParams, out: Path, shards: Path, labels: Path, pitch: Path | None = None,
        speakers: Path | None = None, command: list[str] | None = None) -> dict:
    """Train in this process (a rank of torchrun's, or alone); with `command` (the arguments of `progre` that
    ran this) and `nproc_per_node` above 1, run that command once per GPU instead (`progre.train.launch`)."""
    processes = processes_to_start(p.nproc_per_node) if command is not None else 1
    if processes > 1:
        run_ranks(processes, command)
        return read_json(out / "metrics.json")
    dist = init_distributed(timeout_minutes=p.dist_timeout_minutes)
    # rank 0 owns the run folder (the others write nothing into it)
    init = Path(p.init) if p.init else None  # continued pretraining: the run folder must not hold it
    folder = run_folder(out, "pretrain", inputs=[shards, labels, pitch, speakers, init]) if dist.is_main \
        else nullcontext()
    try:
        with folder, collective_errors(dist):
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
