"""DVC stage `features`: MFCC / pitch / hidden-layer features into a feature folder
(`progre.features.extract`)."""

from __future__ import annotations

from pathlib import Path

from progre.config import FeaturesParams
from progre.data.shards import Shards
from progre.device import resolve_device
from progre.features.extract import FeatureSettings, extract_features, resolve_rank
from progre.log import logger
from progre.outputs import output_folder, run_folder


def run(p: FeaturesParams, kind: str, shards: Path, out: Path, checkpoint: Path | None = None,
        rank: int | None = None, world_size: int | None = None, pitch: Path | None = None,
        overwrite: bool = False) -> dict:
    """One writer builds the folder aside and swaps it in; several ranks each write their own part in place."""
    rank, world_size = resolve_rank(rank, world_size)
    corpus = Shards(shards)
    inputs = [shards, checkpoint, pitch]
    folder_of = (output_folder(out, "features", overwrite=overwrite, inputs=inputs) if world_size == 1 else
                 run_folder(out, "features", inputs=inputs, rank=rank))
    with folder_of as folder:
        stats = extract_features(kind, corpus, folder, p.to(FeatureSettings), resolve_device(p.device), checkpoint,
                                 pitch, rank, world_size)
    logger.info("%s features: %d utterances, %d frames, %.0fx real time, written to %s", kind,
                stats["utterances"], stats["frames"], 1.0 / max(stats["seconds_per_audio_second"], 1e-12), out)
    return stats
