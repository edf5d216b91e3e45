"""DVC stage `pitch` (`progre features --kind pitch`): the WORLD DIO pitch contour of every utterance
into a feature folder (`progre.features.pitch_features`)."""

from __future__ import annotations

from pathlib import Path

from progre.config import FeaturesParams
from progre.data.shards import Shards
from progre.features.pitch_features import write_pitch_features
from progre.features.writing import FeatureSettings, feature_folder, resolve_rank
from progre.log import logger


def run(p: FeaturesParams, shards: Path, out: Path, rank: int | None = None, world_size: int | None = None,
        overwrite: bool = False) -> dict:
    rank, world_size = resolve_rank(rank, world_size)
    corpus = Shards(shards)
    with feature_folder(out, [shards], rank, world_size, overwrite) as folder:
        stats = write_pitch_features(corpus, p.to(FeatureSettings), folder, rank=rank, world_size=world_size)
    logger.info("pitch features: %d utterances, %d frames, %.0fx real time, written to %s", stats["utterances"],
                stats["frames"], 1.0 / max(stats["seconds_per_audio_second"], 1e-12), out)
    return stats
