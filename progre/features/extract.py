"""`progre features`: MFCC, pitch contours or a layer's hidden states of a corpus, into a feature folder.

- pitch: every utterance of every split (the model needs it at training and inference time);
- mfcc, layer: only the k-means sample (`sample_fraction` of the `sample_split` utterances);
  `progre cluster` computes the others on the fly with the same computer.

Work splits over ranks (`rank` of `world_size`): each writes its own part of the folder, and rank 0
the folder's meta.json.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.shards import Shards
from ..errors import UserError
from ..frames import SAMPLE_RATE
from ..io import write_json
from ..log import logger, progress_bar
from ..parallel import ordered_map
from .computers import LayerComputer, MfccComputer, batches_by_seconds, pitch_of
from .store import FeatureWriter, open_pitch_store, write_meta

KINDS = ("mfcc", "pitch", "layer")


@dataclass(frozen=True)
class FeatureSettings:
    """How features are extracted (the `features` params section)."""

    sample_fraction: float = 0.1
    sample_split: str = "train"
    seed: int = 1234
    batch_seconds: float = 120.0
    chunk_seconds: float = 30.0
    layer: int = 6
    hidden_dtype: str = "float16"
    precision: str = "auto"
    workers: int = 2


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """--rank/--world-size, else torchrun's RANK/WORLD_SIZE, else a single worker."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is not valid for world size {world_size}")
    return rank, world_size


def select_sample(shards: Shards, fraction: float, split: str, seed: int) -> set[str]:
    """The utterances whose features are stored for k-means fitting (deterministic for a seed)."""
    keys = sorted(shards.keys(split))
    if not keys:
        raise UserError(f"{shards.folder}: the {split} split is empty, nothing to sample for k-means")
    if fraction <= 0:
        raise UserError("features.sample_fraction must be above 0 for mfcc and layer features")
    count = max(1, int(round(fraction * len(keys))))
    chosen = np.random.default_rng(seed).choice(len(keys), size=count, replace=False)
    return {keys[i] for i in chosen}


def extract_features(kind: str, shards: Shards, folder: Path, settings: FeatureSettings, device: torch.device,
                     checkpoint: Path | None = None, pitch: Path | None = None, rank: int = 0,
                     world_size: int = 1) -> dict[str, Any]:
    """Write this rank's features of `kind` into `folder` (and rank 0 the meta.json); returns its stats."""
    if kind not in KINDS:
        raise UserError(f"unknown feature kind {kind!r}; kinds: {', '.join(KINDS)}")
    if kind == "layer" and checkpoint is None:
        raise UserError("--kind layer needs --checkpoint (a model checkpoint folder)")
    if kind == "layer" and pitch is not None:
        open_pitch_store(pitch, shards)
    start = time.perf_counter()
    if kind == "pitch":
        stats = _write_pitch(shards, folder, settings.workers, rank, world_size)
        meta: dict[str, Any] = {"kind": "pitch", "dim": 1, "dtype": "float32", "frame_rate": 50,
                                "method": "WORLD DIO, 20 ms, log F0 z-normalised over voiced frames, unvoiced 0"}
    else:
        keys = select_sample(shards, settings.sample_fraction, settings.sample_split, settings.seed)
        computer = MfccComputer(device) if kind == "mfcc" else \
            LayerComputer(checkpoint, settings.layer, device, settings.chunk_seconds, pitch,  # type: ignore[arg-type]
                          settings.precision)
        dtype = settings.hidden_dtype if kind == "layer" else "float32"
        stats = _write_computed(computer, shards, keys, folder, dtype, settings.batch_seconds, rank, world_size)
        meta = computer.describe() | {"dtype": dtype, "sample_fraction": settings.sample_fraction,
                                      "sample_split": settings.sample_split, "seed": settings.seed,
                                      "sampled_utterances": len(keys)}
    meta |= {"corpus": shards.fingerprint, "world_size": world_size}
    stats["seconds_per_audio_second"] = (time.perf_counter() - start) / max(stats["audio_seconds"], 1e-9)
    if rank == 0:
        write_meta(folder, meta)
    write_json(folder / f"summary-{rank:03d}.json", stats)
    return stats


def _write_computed(computer, shards: Shards, keys: set[str], folder: Path, dtype: str, batch_seconds: float,
                    rank: int, world_size: int) -> dict:
    writer = FeatureWriter(folder, computer.dim, dtype, rank, world_size)
    frames = 0
    audio = 0.0
    try:
        with progress_bar() as progress:
            task = progress.add_task(f"{computer.kind} features", total=len(keys) // world_size or None)
            utts = shards.stream(keys=keys, rank=rank, world_size=world_size)
            pool = 4 if computer.kind == "layer" else 1  # sort by length to cut padding in the model
            for batch in batches_by_seconds(utts, batch_seconds, pool=pool):
                for utt, feats in zip(batch, computer(batch)):
                    writer.add(utt.key, feats)
                    frames += len(feats)
                    audio += len(utt.wav) / SAMPLE_RATE
                progress.advance(task, len(batch))
        count = writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"kind": computer.kind, "utterances": count, "frames": frames, "audio_seconds": audio}


def _write_pitch(shards: Shards, folder: Path, workers: int, rank: int, world_size: int) -> dict:
    writer = FeatureWriter(folder, 1, "float32", rank, world_size)
    unvoiced: list[str] = []
    frames = 0
    audio = 0.0
    utts = shards.stream(rank=rank, world_size=world_size)
    try:
        with progress_bar() as progress:
            task = progress.add_task("pitch (WORLD DIO)", total=len(shards) // world_size or None)
            for key, contour, voiced, seconds in ordered_map(pitch_of, utts, workers):
                writer.add(key, contour)
                frames += len(contour)
                audio += seconds
                if voiced == 0.0:
                    unvoiced.append(key)
                progress.advance(task)
        count = writer.close()
    except BaseException:
        writer.abort()
        raise
    if unvoiced:
        logger.warning("%d utterances have no voiced frame (their pitch input is all zeros): %s%s",
                       len(unvoiced), ", ".join(unvoiced[:10]), " ..." if len(unvoiced) > 10 else "")
    return {"kind": "pitch", "utterances": count, "frames": frames, "audio_seconds": audio,
            "unvoiced_utterances": len(unvoiced), "unvoiced_keys": unvoiced}
