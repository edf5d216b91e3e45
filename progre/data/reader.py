"""Reading shards back: the parquet index, and a streaming WebDataset of decoded utterances.

Every later stage reads audio through `iter_utterances` (plain iteration, optionally split
across ranks) or `shard_dataset` (a WebDataset pipeline for torch DataLoaders, split by node
and worker). Audio is decoded with soundfile from the tar bytes; webdataset's own audio
decoder would call torchaudio.load, which needs torchcodec.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..audio import decode_audio_bytes
from ..errors import UserError
from .corpus import SPLITS


@dataclass
class Utterance:
    """One decoded utterance: 16 kHz mono float32 samples and its metadata."""

    key: str
    wav: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def check_shard_dir(shards: Path) -> Path:
    shards = Path(shards)
    if not (shards / "index.parquet").is_file():
        raise UserError(f"{shards} is not a shard folder (no index.parquet); run `progre shard` first")
    return shards


def read_index(shards: Path, split: str | Iterable[str] | None = None) -> pa.Table:
    """The index table (key, split, shard, num_samples, ...), optionally of some splits only."""
    table = pq.read_table(check_shard_dir(shards) / "index.parquet")
    if split is not None:
        wanted = [split] if isinstance(split, str) else list(split)
        for name in wanted:
            if name not in SPLITS:
                raise UserError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        mask = np.isin(np.asarray(table.column("split").to_pylist(), dtype=object), wanted)
        table = table.filter(pa.array(mask))
    return table


def corpus_fingerprint(shards: Path) -> str:
    """A short hash of the keys and lengths in the index: ties features and labels to a corpus."""
    table = read_index(shards)
    digest = hashlib.sha256()
    for key, n in zip(table.column("key").to_pylist(), table.column("num_samples").to_pylist()):
        digest.update(f"{key}:{n}\n".encode())
    return digest.hexdigest()[:16]


def shard_paths(shards: Path, split: str | Iterable[str] | None = None) -> list[Path]:
    """The tar files holding the given splits, in order."""
    table = read_index(shards, split)
    names = sorted(set(table.column("shard").to_pylist()))
    return [Path(shards) / name for name in names]


def read_audio_at(shards: Path, shard: str, offset: int, size: int) -> np.ndarray:
    """Random access: decode one utterance's FLAC from its tar at the offset the index records."""
    with open(Path(shards) / shard, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise UserError(f"{shards}/{shard} is shorter than its index says; re-run `progre shard`")
    return decode_audio_bytes(data)


def decode_sample(sample: dict[str, Any]) -> Utterance:
    """A raw WebDataset sample (``__key__``, ``flac``, ``json`` bytes) -> Utterance."""
    meta = json.loads(sample["json"])
    return Utterance(sample["__key__"], decode_audio_bytes(sample["flac"]), meta)


def _tar_samples(path: Path) -> Iterator[dict[str, Any]]:
    """Group the members of one tar by key, in file order (our shards keep a key's members together)."""
    import tarfile

    current: dict[str, Any] = {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            current[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
    if current:
        yield current


def iter_utterances(shards: Path, split: str | Iterable[str] | None = None, *, keys: set[str] | None = None,
                    rank: int = 0, world_size: int = 1) -> Iterator[Utterance]:
    """Decoded utterances of the given splits, shard by shard in shard-name order (so, for all
    splits: test, train, valid), each shard in its stored order.

    With world_size > 1 the work is split: by shard when there are at least as many shards as
    workers, otherwise by utterance position, so each utterance goes to exactly one rank.
    `keys` restricts to those utterances (others are skipped without decoding).
    """
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is outside world size {world_size}")
    paths = shard_paths(shards, split)
    by_shard = len(paths) >= world_size
    wanted_splits = None if split is None else ({split} if isinstance(split, str) else set(split))
    position = 0
    for i, path in enumerate(paths):
        if by_shard and i % world_size != rank:
            continue
        for sample in _tar_samples(path):
            if keys is not None and sample["__key__"] not in keys:
                continue
            mine = by_shard or position % world_size == rank
            position += 1
            if not mine:
                continue
            utt = decode_sample(sample)
            if wanted_splits is not None and utt.meta.get("split") not in wanted_splits:
                continue
            yield utt


def shard_dataset(shards: Path, split: str | Iterable[str], *, shuffle_shards: bool = False,
                  resampled: bool = False, seed: int = 0):
    """A webdataset pipeline of decoded Utterances, split by node (rank) and DataLoader worker.

    With `resampled`, shards are drawn with replacement forever (use with a fixed epoch length
    under DDP so no rank starves); otherwise each shard is read once per epoch and the number
    of shards should be at least ranks x workers.
    """
    import webdataset as wds

    urls = [str(p) for p in shard_paths(shards, split)]
    if not urls:
        raise UserError(f"{shards}: no shards for split {split}")
    if resampled:
        dataset = wds.WebDataset(urls, resampled=True, shardshuffle=False, seed=seed,
                                 nodesplitter=None, workersplitter=None, empty_check=False)
    else:
        dataset = wds.WebDataset(urls, shardshuffle=len(urls) if shuffle_shards else False, seed=seed,
                                 nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker,
                                 empty_check=False)
    return dataset.map(decode_sample)
