"""DVC stage `features`: MFCC / pitch / hidden-layer features into a feature folder
(`progre.features.extract`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from progre.config import FeaturesParams
from progre.data.shards import Shards
from progre.device import resolve_device
from progre.features.extract import FeatureSettings, extract_features, resolve_rank
from progre.io import atomic_dir
from progre.log import logger


@contextmanager
def output_folder(out: Path, world_size: int) -> Iterator[Path]:
    """One writer: build in a temporary folder and swap it in. Several: each publishes its own part."""
    if world_size == 1:
        with atomic_dir(out, overwrite=True) as tmp:
            yield tmp
    else:
        out.mkdir(parents=True, exist_ok=True)
        yield out


def run(p: FeaturesParams, kind: str, shards: Path, out: Path, checkpoint: Path | None = None,
        rank: int | None = None, world_size: int | None = None, pitch: Path | None = None) -> dict:
    rank, world_size = resolve_rank(rank, world_size)
    corpus = Shards(shards)
    with output_folder(out, world_size) as folder:
        stats = extract_features(kind, corpus, folder, p.to(FeatureSettings), resolve_device(p.device), checkpoint,
                                 pitch, rank, world_size)
    logger.info("%s features: %d utterances, %d frames, %.0fx real time, written to %s", kind,
                stats["utterances"], stats["frames"], 1.0 / max(stats["seconds_per_audio_second"], 1e-12), out)
    return stats
