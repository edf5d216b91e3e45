"""DVC stage `features`: MFCC / pitch / hidden-layer features into a feature folder.

- pitch: every utterance of every split (the model needs it at training and inference time)
- mfcc, layer: only the k-means sample (`sample_fraction` of the `sample_split` utterances);
  `progre cluster` computes the others on the fly with the same code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from progre.config import FeaturesParams
from progre.data.reader import corpus_fingerprint, iter_utterances, read_index
from progre.device import resolve_device
from progre.errors import UserError
from progre.features.compute import LayerComputer, MfccComputer, batches_by_seconds, pitch_of
from progre.features.store import FeatureWriter, write_meta
from progre.io import atomic_dir, write_json
from progre.log import logger, progress_bar
from progre.parallel import ordered_map


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """--rank/--world-size, else torchrun's RANK/WORLD_SIZE, else a single worker."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is not valid for world size {world_size}")
    return rank, world_size


def select_sample(shards: Path, fraction: float, split: str, seed: int) -> set[str]:
    """The utterances whose features are stored for k-means fitting (deterministic for a seed)."""
    keys = sorted(read_index(shards, split).column("key").to_pylist())
    if not keys:
        raise UserError(f"{shards}: the {split} split is empty, nothing to sample for k-means")
    if fraction <= 0:
        raise UserError("features.sample_fraction must be above 0 for mfcc and layer features")
    count = max(1, int(round(fraction * len(keys))))
    chosen = np.random.default_rng(seed).choice(len(keys), size=count, replace=False)
    return {keys[i] for i in chosen}


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
    if kind == "layer" and checkpoint is None:
        raise UserError("--kind layer needs --checkpoint (a model checkpoint folder)")
    fingerprint = corpus_fingerprint(shards)
    device = resolve_device(p.device)
    start = time.perf_counter()
    with output_folder(out, world_size) as folder:
        if kind == "pitch":
            stats, meta = _write_pitch(p, shards, folder, rank, world_size)
        else:
            keys = select_sample(shards, p.sample_fraction, p.sample_split, p.seed)
            computer = MfccComputer(device) if kind == "mfcc" else \
                LayerComputer(checkpoint, p.layer, device, p.chunk_seconds, pitch)  # type: ignore[arg-type]
            stats = _write_computed(computer, p, shards, keys, folder, rank, world_size)
            meta = computer.describe() | {"dtype": p.hidden_dtype if kind == "layer" else "float32",
                                          "sample_fraction": p.sample_fraction, "sample_split": p.sample_split,
                                          "seed": p.seed, "sampled_utterances": len(keys)}
        meta |= {"corpus": fingerprint, "world_size": world_size}
        stats["seconds_per_audio_second"] = (time.perf_counter() - start) / max(stats["audio_seconds"], 1e-9)
        if rank == 0:
            write_meta(folder, meta)
        write_json(folder / f"summary-{rank:03d}.json", stats)
    logger.info("%s features: %d utterances, %d frames, %.0fx real time, written to %s", kind,
                stats["utterances"], stats["frames"], 1.0 / max(stats["seconds_per_audio_second"], 1e-12), out)
    return stats


def _write_computed(computer, p: FeaturesParams, shards: Path, keys: set[str], folder: Path,
                    rank: int, world_size: int) -> dict:
    dtype = p.hidden_dtype if computer.kind == "layer" else "float32"
    writer = FeatureWriter(folder, computer.dim, dtype, rank, world_size)
    frames = 0
    audio = 0.0
    try:
        with progress_bar() as progress:
            task = progress.add_task(f"{computer.kind} features", total=len(keys) // world_size or None)
            utts = iter_utterances(shards, keys=keys, rank=rank, world_size=world_size)
            pool = 4 if computer.kind == "layer" else 1  # sort by length to cut padding in the model
            for batch in batches_by_seconds(utts, p.batch_seconds, pool=pool):
                for utt, feats in zip(batch, computer(batch)):
                    writer.add(utt.key, feats)
                    frames += len(feats)
                    audio += len(utt.wav) / 16000
                progress.advance(task, len(batch))
        count = writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"kind": computer.kind, "utterances": count, "frames": frames, "audio_seconds": audio}


def _write_pitch(p: FeaturesParams, shards: Path, folder: Path, rank: int, world_size: int) -> tuple[dict, dict]:
    writer = FeatureWriter(folder, 1, "float32", rank, world_size, {"voiced_fraction": pa.float32()})
    total = len(read_index(shards))
    unvoiced: list[str] = []
    frames = 0
    audio = 0.0
    utts = iter_utterances(shards, rank=rank, world_size=world_size)
    try:
        with progress_bar() as progress:
            task = progress.add_task("pitch (WORLD DIO)", total=total // world_size or None)
            for key, contour, voiced, seconds in ordered_map(pitch_of, utts, p.workers):
                writer.add(key, contour, voiced_fraction=voiced)
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
    stats = {"kind": "pitch", "utterances": count, "frames": frames, "audio_seconds": audio,
             "unvoiced_utterances": len(unvoiced), "unvoiced_keys": unvoiced}
    meta = {"kind": "pitch", "dim": 1, "dtype": "float32", "frame_rate": 50,
            "method": "WORLD DIO, 20 ms, log F0 z-normalised over voiced frames, unvoiced 0"}
    return stats, meta

