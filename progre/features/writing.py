"""What the three writers of feature folders share (`progre features --kind pitch|mfcc|layer`): their
settings, the worker's rank and output folder, the k-means sample, and `write_features`, which runs a
computer over this rank's utterances into its part of the folder.

- pitch: every utterance of every split (the model needs it at training and inference time);
- mfcc, layer: only the k-means sample (`sample_fraction` of the `sample_split` utterances);
  `progre cluster` computes the others on the fly with the same computer.

Work splits over ranks (`rank` of `world_size`): each writes its own part of the folder, and rank 0
the folder's meta.json; on CUDA each rank computes on its own GPU (`rank_and_device`). The writers of
each kind are pitch_features.py, mfcc_features.py and layer_features.py; this module never loads a model.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.corpus import SPLITS
from ..data.shards import Shards
from ..device import PRECISIONS, rank_device
from ..errors import UserError
from ..frames import SAMPLE_RATE
from ..io import write_json
from ..outputs import output_folder, run_folder
from ..settings import setting
from .computing import FeatureComputer, compute_in_batches
from .store import FeatureWriter, write_meta

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FeatureSettings:
    """How features are extracted (the `features` params section)."""

    sample_fraction: float = setting(0.1, "fraction of the sample_split utterances whose features are stored for "
                                          "k-means fitting (HuBERT: 0.1)", min=0.0, max=1.0)
    sample_split: str = setting("train", "split the k-means sample is drawn from", choices=SPLITS)
    seed: int = setting(1234, "random seed of the utterance sample")
    batch_seconds: float = setting(120.0, "audio seconds per batch for MFCC and hidden features (and per batch "
                                          "handed to the pitch workers)", min=1.0)
    chunk_seconds: float = setting(30.0, "longer utterances are processed in chunks of this length (hidden "
                                         "features)", min=1.0)
    layer: int = setting(6, "transformer layer (1-based) for hidden features", min=1)
    hidden_dtype: str = setting("float16", "storage type of hidden features", choices=("float16", "float32"))
    precision: str = setting("auto", "hidden features: auto is bf16 autocast on CUDA, fp32 on CPU",
                             choices=PRECISIONS)
    workers: int = setting(2, "CPU worker processes for pitch", min=1)


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """--rank/--world-size, else torchrun's RANK/WORLD_SIZE, else a single worker."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is not valid for world size {world_size}")
    return rank, world_size


def rank_and_device(rank: int | None, world_size: int | None, device: str) -> tuple[int, int, torch.device]:
    """This writer's rank and world size (`resolve_rank`) and its device (`device.rank_device`): on CUDA
    the GPU of its rank on its node, cuda:LOCAL_RANK under torchrun, else the rank modulo the visible GPUs."""
    rank, world_size = resolve_rank(rank, world_size)
    return rank, world_size, rank_device(device, rank)


def feature_folder(out: Path, inputs: list[Path | None], rank: int, world_size: int,
                   overwrite: bool = False) -> AbstractContextManager[Path]:
    """Where this rank writes: one writer builds the folder aside and swaps it in (`output_folder`);
    several ranks each write their own part in place (`run_folder`)."""
    if world_size == 1:
        return output_folder(out, "features", overwrite=overwrite, inputs=inputs)
    return run_folder(out, "features", inputs=inputs, rank=rank)


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


def sample_meta(settings: FeatureSettings, keys: set[str]) -> dict[str, Any]:
    """The meta.json entries that say which utterances a sampled folder holds."""
    return {"sample_fraction": settings.sample_fraction, "sample_split": settings.sample_split,
            "seed": settings.seed, "sampled_utterances": len(keys)}


def write_features(computer: FeatureComputer, shards: Shards, folder: Path, *, keys: set[str] | None, dtype: str,
                   batch_seconds: float, pool: int, rank: int, world_size: int, meta: dict[str, Any],
                   started: float) -> dict[str, Any]:
    """Write `computer`'s features of this rank's utterances (those of `keys`; all when None) into
    `folder`, stored as `dtype`, then summary-R.json (the counts, `computer.summary()` and the time since
    `started` per audio second) and, on rank 0, meta.json (`computer.describe()`, the dtype, `meta`, the
    corpus fingerprint and the world size); returns the summary."""
    writer = FeatureWriter(folder, computer.dim, dtype, rank, world_size)
    frames = 0
    audio = 0.0
    total = len(shards if keys is None else keys) // world_size or None
    try:
        utts = shards.stream(keys=keys, rank=rank, world_size=world_size)
        for utt, feats in compute_in_batches(computer, utts, batch_seconds, pool=pool, total=total,
                                             description=f"{computer.kind} features"):
            writer.add(utt.key, feats)
            frames += len(feats)
            audio += len(utt.wav) / SAMPLE_RATE
        count = writer.close()
    except BaseException:
        writer.abort()
        raise
    stats = {"kind": computer.kind, "utterances": count, "frames": frames, "audio_seconds": audio}
    stats |= computer.summary()
    stats["seconds_per_audio_second"] = (time.perf_counter() - started) / max(audio, 1e-9)
    if rank == 0:
        write_meta(folder, computer.describe() | {"dtype": dtype} | meta |
                   {"corpus": shards.fingerprint, "world_size": world_size})
    write_json(folder / f"summary-{rank:03d}.json", stats)
    return stats
