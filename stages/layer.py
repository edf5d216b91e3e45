"""DVC stage `layer_iter1` (`progre features --kind layer`): one layer's hidden states of a checkpoint
for the k-means sample into a feature folder (`progre.features.layer_features`)."""

from __future__ import annotations

from pathlib import Path

from progre.config import FeaturesParams
from progre.data.shards import Shards
from progre.errors import UserError
from progre.features.layer_features import write_layer_features
from progre.features.store import open_pitch_store
from progre.features.writing import FeatureSettings, feature_folder, rank_and_device
from progre.log import logger


def run(p: FeaturesParams, shards: Path, out: Path, checkpoint: Path | None = None, pitch: Path | None = None,
        rank: int | None = None, world_size: int | None = None, overwrite: bool = False) -> dict:
    if checkpoint is None:
        raise UserError("--kind layer needs --checkpoint (a model checkpoint folder)")
    rank, world_size, device = rank_and_device(rank, world_size, p.device)
    corpus = Shards(shards)
    contours = open_pitch_store(pitch, corpus) if pitch is not None else None
    with feature_folder(out, [shards, checkpoint, pitch], rank, world_size, overwrite) as folder:
        stats = write_layer_features(corpus, checkpoint, contours, p.to(FeatureSettings), device, folder, rank=rank,
                                     world_size=world_size)
    logger.info("layer features: %d utterances, %d frames, %.0fx real time, written to %s", stats["utterances"],
                stats["frames"], 1.0 / max(stats["seconds_per_audio_second"], 1e-12), out)
    return stats
