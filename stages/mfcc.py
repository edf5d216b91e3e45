"""DVC stage `mfcc` (`progre features --kind mfcc`): MFCC of the k-means sample into a feature folder
(`progre.features.mfcc_features`)."""

from __future__ import annotations

from pathlib import Path

from progre.config import FeaturesParams
from progre.data.shards import Shards
from progre.features.mfcc_features import write_mfcc_features
from progre.features.writing import FeatureSettings, feature_folder, rank_and_device
from progre.log import logger


def run(p: FeaturesParams, shards: Path, out: Path, rank: int | None = None, world_size: int | None = None,
        overwrite: bool = False) -> dict:
    rank, world_size, device = rank_and_device(rank, world_size, p.device)
    corpus = Shards(shards)
    with feature_folder(out, [shards], rank, world_size, overwrite) as folder:
        stats = write_mfcc_features(corpus, p.to(FeatureSettings), device, folder, rank=rank, world_size=world_size)
    logger.info("mfcc features: %d utterances, %d frames, %.0fx real time, written to %s", stats["utterances"],
                stats["frames"], 1.0 / max(stats["seconds_per_audio_second"], 1e-12), out)
    return stats
