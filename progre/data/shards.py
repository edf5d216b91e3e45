"""Reading a shard folder back: `Shards`, opened once per command.

A shard folder (written by `progre.data.sharding`) holds WebDataset tars of ``<key>.flac`` +
``<key>.json`` and ``index.parquet``, one row per utterance. `Shards` reads the index once and
serves

- the index itself (`rows`, `keys`, splits) and the corpus `fingerprint` that ties features,
  labels and checkpoints to this corpus; `metadata` reads the columns beyond the index's from the
  utterances' json members;
- streaming (`stream`): decoded utterances in shard-name order, each shard in its stored order,
  through webdataset's `WebDataset` pipeline, optionally split across ranks;
- random access (`read_audio`): one utterance's FLAC bytes read at the offset the index records.

A damaged folder (an index that cannot be read, a tar shorter than its index says or cut mid-block, a
member that does not read) is a one-line error naming the file, when the folder is opened where it can.

Random access does not use `wids`: on the same shards it was no faster (1.02x, FLAC decoding
dominates; `bench/reader.py`), and its dataset writes lock files into the shard folder (an input of
every later stage) or copies the shards to /tmp. Audio is decoded with soundfile: webdataset's own
audio decoder calls torchaudio.load, which needs torchcodec.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..audio import decode_audio_bytes
from ..errors import UserError
from ..io import reading
from .corpus import SPLITS

INDEX = "index.parquet"
RESHARD = "rerun `progre shard`"


@dataclass
class Utterance:
    """One decoded utterance: 16 kHz mono float32 samples and its metadata."""

    key: str
    wav: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _splits(split: str | Iterable[str] | None) -> list[str] | None:
    if split is None:
        return None
    wanted = [split] if isinstance(split, str) else list(split)
    for name in wanted:
        if name not in SPLITS:
            raise UserError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
    return wanted


class Shards:
    """A shard folder: its index (read once), fingerprint, splits, streaming and random access."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / INDEX).is_file():
            raise UserError(f"{self.folder} is not a shard folder (no {INDEX}); run `progre shard` first")
        with reading(self.folder / INDEX, RESHARD):
            self.index: pa.Table = pq.read_table(self.folder / INDEX)
        self._check_tar_sizes()

    def _check_tar_sizes(self) -> None:
        """Every tar at least as long as the index says (where its last FLAC ends) and whole tar blocks:
        a truncated shard is found when the folder is opened, not midway through a run."""
        if not {"shard", "flac_offset", "flac_bytes"} <= set(self.index.column_names):
            return
        ends: dict[str, int] = {}
        for shard, offset, size in zip(*(self.index.column(c).to_pylist() for c in ("shard", "flac_offset",
                                                                                    "flac_bytes"))):
            ends[shard] = max(ends.get(shard, 0), offset + size)
        for shard, end in sorted(ends.items()):
            path = self.folder / shard
            with reading(path, RESHARD):
                size = path.stat().st_size
            if size < end or size % tarfile.BLOCKSIZE:
                raise UserError(f"{path} is truncated ({size} bytes; its index needs at least {end} in whole "
                                f"{tarfile.BLOCKSIZE}-byte blocks); {RESHARD}")

    def __len__(self) -> int:
        return self.index.num_rows

    def __repr__(self) -> str:
        return f"Shards({str(self.folder)!r}, {len(self)} utterances)"

    def table(self, split: str | Iterable[str] | None = None) -> pa.Table:
        """The index rows of some splits (all when None), in index order."""
        wanted = _splits(split)
        if wanted is None:
            return self.index
        mask = np.isin(np.asarray(self.index.column("split").to_pylist(), dtype=object), wanted)
        return self.index.filter(pa.array(mask))

    def rows(self, split: str | Iterable[str] | None = None, columns: Iterable[str] | None = None) -> list[dict]:
        """Index rows as dicts (only `columns` that the index has, when given)."""
        table = self.table(split)
        if columns is not None:
            table = table.select([c for c in columns if c in table.column_names])
        return table.to_pylist()

    def keys(self, split: str | Iterable[str] | None = None) -> list[str]:
        return self.table(split).column("key").to_pylist()

    def column(self, name: str) -> dict[str, Any]:
        """key -> value of one index column (None for every key when the index lacks it)."""
        keys = self.keys()
        if name not in self.index.column_names:
            return dict.fromkeys(keys)
        return dict(zip(keys, self.index.column(name).to_pylist()))

    def metadata(self, columns: Iterable[str]) -> dict[str, dict[str, Any]]:
        """key -> {column: value (None when absent)} from each utterance's json member: every metadata
        column of the corpus, also those beyond the index's (``accent``, ``gender``, ...). Reads the tar
        headers and the json members only; the audio is skipped, not read."""
        columns = list(columns)
        values: dict[str, dict[str, Any]] = {}
        for path in self.tar_paths():
            try:
                with tarfile.open(path, "r:") as tar:
                    for member in tar:
                        if member.name.endswith(".json"):
                            meta = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                            values[member.name[:-len(".json")]] = {c: meta.get(c) for c in columns}
            except (tarfile.TarError, OSError, ValueError) as exc:
                raise UserError(f"{path}: cannot read its metadata ({exc}); re-run `progre shard`") from None
        return values

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the keys and lengths: ties features, labels and checkpoints to this corpus."""
        digest = hashlib.sha256()
        for key, n in zip(self.index.column("key").to_pylist(), self.index.column("num_samples").to_pylist()):
            digest.update(f"{key}:{n}\n".encode())
        return digest.hexdigest()[:16]

    def tar_paths(self, split: str | Iterable[str] | None = None) -> list[Path]:
        """The tar files holding the given splits, in name order."""
        return [self.folder / name for name in sorted(set(self.table(split).column("shard").to_pylist()))]

    # ------------------------------------------------------------------ streaming

    def stream(self, split: str | Iterable[str] | None = None, *, keys: set[str] | None = None,
               rank: int = 0, world_size: int = 1) -> Iterator[Utterance]:
        """Decoded utterances of the given splits, shard by shard in shard-name order (for all splits:
        test, train, valid), each shard in its stored order.

        With world_size > 1 the work is split: by shard when there are at least as many shards as
        ranks, else by position in the stream, so each utterance goes to exactly one rank. `keys`
        restricts to those utterances (the others are not decoded).
        """
        import webdataset as wds

        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is outside world size {world_size}")
        urls = [str(p) for p in self.tar_paths(split)]
        by_shard = len(urls) >= world_size

        def split_shards(source: Iterator[dict]) -> Iterator[dict]:
            return islice(source, rank, None, world_size) if by_shard else source

        wanted_splits = _splits(split)
        dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=split_shards, workersplitter=None,
                                 empty_check=False)
        if keys is not None:
            dataset = dataset.select(lambda sample: sample["__key__"] in keys)
        if not by_shard:
            dataset = dataset.compose(lambda source: islice(source, rank, None, world_size))
        samples = iter(dataset)
        while True:
            with reading(self.folder, f"a shard of it is damaged; {RESHARD}"):
                sample = next(samples, None)
                if sample is None:
                    return
                meta = json.loads(sample["json"])
            if wanted_splits is None or meta.get("split") in wanted_splits:
                yield Utterance(sample["__key__"], decode_audio_bytes(sample["flac"]), meta)

    # ------------------------------------------------------------------ random access

    def read_audio(self, shard: str, offset: int, size: int) -> np.ndarray:
        """Decode one utterance's FLAC from its tar at the offset and size the index records
        (`shard`, `flac_offset`, `flac_bytes`)."""
        with open(self.folder / shard, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise UserError(f"{self.folder / shard} is shorter than its index says; re-run `progre shard`")
        return decode_audio_bytes(data)
