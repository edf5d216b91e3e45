"""DVC stage `pseudo-speakers`: utterance embeddings -> k-means -> speakers.parquet (key -> speaker)
(`progre.cluster.speakers`)."""

from __future__ import annotations

from pathlib import Path

from progre.cluster.speakers import SpeakerSettings, pseudo_speakers
from progre.config import SpeakersParams
from progre.data.shards import Shards
from progre.device import resolve_device
from progre.io import write_json
from progre.log import logger
from progre.outputs import output_folder


def run(p: SpeakersParams, shards: Path, out: Path, checkpoint: Path | None = None, overwrite: bool = False) -> dict:
    corpus = Shards(shards)
    device = resolve_device(p.device)
    with output_folder(out, "pseudo-speakers", overwrite=overwrite, inputs=[shards, checkpoint]) as tmp:
        metrics = pseudo_speakers(corpus, checkpoint, p.to(SpeakerSettings), device, tmp)
        write_json(tmp / "metrics.json", metrics)
    logger.info("pseudo speakers: %s", ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in metrics.items()))
    return metrics
