"""Sharded feature arrays with a parquet offsets table.

A feature folder holds, per writer (rank) r of W:

- ``part-r-of-W.npy``: all of that writer's frames, one (frames, dim) array (memory-mapped on read)
- ``index-r-of-W.parquet``: key, part, offset (first row), num_frames
- ``meta.json``: what the features are (kind, dim, dtype, frame rate, layer, checkpoint, corpus
  fingerprint, world size), written by rank 0.

Several writers can fill one folder (``--rank/--world-size``); readers merge the parts and
check that none is missing. Each part is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..data.shards import Shards
from ..frames import num_frames
from ..errors import UserError
from ..io import read_json, reading, write_json

INDEX_SCHEMA = pa.schema([("key", pa.string()), ("part", pa.string()), ("offset", pa.int64()),
                          ("num_frames", pa.int64())])


def part_name(rank: int, world_size: int) -> str:
    return f"part-{rank:03d}-of-{world_size:03d}"


class FeatureWriter:
    """Appends (frames, dim) arrays of utterances to one part file; `close` publishes it."""

    def __init__(self, folder: Path, dim: int, dtype: str, rank: int = 0, world_size: int = 1):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim, self.dtype = dim, np.dtype(dtype)
        self.name = part_name(rank, world_size)
        self._tmp = self.folder / f".{self.name}.bin.tmp"
        self._file = open(self._tmp, "wb")
        self._rows: list[dict[str, Any]] = []
        self._offset = 0

    def add(self, key: str, features: np.ndarray) -> None:
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"{key}: expected (frames, {self.dim}) features, got {features.shape}")
        self._file.write(np.ascontiguousarray(features, dtype=self.dtype).tobytes())
        self._rows.append({"key": key, "part": self.name, "offset": self._offset,
                           "num_frames": features.shape[0]})
        self._offset += features.shape[0]

    def close(self) -> int:
        """Write the .npy part and its index; returns the number of utterances."""
        self._file.close()
        npy_tmp = self.folder / f".{self.name}.npy.tmp"
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self._offset, self.dim)}
        with open(npy_tmp, "wb") as out, open(self._tmp, "rb") as raw:  # streamed: memory stays flat
            np.lib.format.write_array_header_2_0(out, header)
            shutil.copyfileobj(raw, out, 1 << 22)
        os.replace(npy_tmp, self.folder / f"{self.name}.npy")
        self._tmp.unlink()
        index_tmp = self.folder / f".index-{self.name[5:]}.parquet.tmp"
        pq.write_table(pa.Table.from_pylist(self._rows, schema=INDEX_SCHEMA), index_tmp)
        os.replace(index_tmp, self.folder / f"index-{self.name[5:]}.parquet")
        return len(self._rows)

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def read_table(path: Path, remedy: str) -> pa.Table:
    with reading(path, remedy):
        return pq.read_table(path)


def read_part(path: Path, dim: int, remedy: str) -> np.ndarray:
    """A part file, memory-mapped: a (frames, dim) array, or a one-line error naming it."""
    with reading(path, remedy):
        array = np.load(path, mmap_mode="r")
    if array.ndim != 2 or array.shape[1] != dim:
        raise UserError(f"{path} holds an array of shape {array.shape}, not (frames, {dim}); {remedy}")
    return array


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    write_json(Path(folder) / "meta.json", meta)


class FeatureStore:
    """Read access to a feature folder: `store[key]` -> (frames, dim) array. A damaged file (truncated,
    cut by a kill or a full disk) is a one-line error naming it and `remedy`."""

    def __init__(self, folder: Path, remedy: str = "rerun `progre features`"):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise UserError(f"{folder} is not a feature folder (no meta.json); run `progre features` first")
        self.meta: dict[str, Any] = read_json(meta_path, remedy)
        world = int(self.meta.get("world_size", 1))
        parts = [part_name(r, world) for r in range(world)]
        missing = [p for p in parts if not (self.folder / f"index-{p[5:]}.parquet").is_file()]
        if missing:
            raise UserError(f"{folder}: incomplete, missing {', '.join(missing)} "
                            f"(a rank of the {world}-way run has not finished)")
        self.index = pa.concat_tables([read_table(self.folder / f"index-{p[5:]}.parquet", remedy) for p in parts])
        keys = self.index.column("key").to_pylist()
        self._rows = {k: i for i, k in enumerate(keys)}
        if len(self._rows) != len(keys):
            raise UserError(f"{folder}: an utterance appears in more than one part")
        self._arrays = {p: read_part(self.folder / f"{p}.npy", self.dim, remedy) for p in parts}
        self._part = self.index.column("part").to_pylist()
        self._offset = self.index.column("offset").to_pylist()
        self._frames = self.index.column("num_frames").to_pylist()
        for part, array in self._arrays.items():
            rows = [o + n for p, o, n in zip(self._part, self._offset, self._frames) if p == part]
            if max(rows, default=0) > len(array):
                raise UserError(f"{self.folder / f'{part}.npy'} holds {len(array)} frames, fewer than its index "
                                f"lists ({max(rows)}); {remedy}")

    def __reduce__(self):
        """Pickled as its folder (a spawned worker reopens it), never as the arrays it maps."""
        return type(self), (self.folder,)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def keys(self) -> list[str]:
        return list(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, key: str) -> np.ndarray:
        i = self._rows[key]
        start = self._offset[i]
        return self._arrays[self._part[i]][start:start + self._frames[i]]

    def total_frames(self) -> int:
        return int(sum(self._frames))

    def stacked(self, dtype: str = "float32") -> np.ndarray:
        """All frames of all utterances as one (frames, dim) array (for k-means fitting)."""
        return np.concatenate([np.asarray(a, dtype=dtype) for a in self._arrays.values()], axis=0)

    def sample_frames(self, count: int, seed: int, dtype: str = "float32") -> np.ndarray:
        """`count` frames drawn uniformly without replacement (seeded), in `stacked` order, read from the
        memory-mapped parts a piece at a time: the memory needed is the sample's, not the folder's
        (a 10% sample of 960 h of 768-d layer features is 26 GB in float16, 53 GB as float32)."""
        total = self.total_frames()
        if count >= total:
            return self.stacked(dtype)
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
        out = np.empty((count, self.dim), dtype=dtype)
        start = filled = 0
        for array in self._arrays.values():
            lo, hi = np.searchsorted(chosen, [start, start + len(array)])
            for piece in range(lo, hi, 1 << 16):
                rows = chosen[piece:min(piece + (1 << 16), hi)] - start
                out[filled:filled + len(rows)] = array[rows]
                filled += len(rows)
            start += len(array)
        return out


def open_pitch_store(folder: Path, shards: Shards | None = None) -> FeatureStore:
    """A `--pitch` folder, checked: it must hold pitch contours, of `shards`' corpus when given."""
    store = FeatureStore(folder)
    if store.kind != "pitch":
        raise UserError(f"--pitch {folder} holds {store.kind} features, not pitch contours")
    if shards is not None and store.meta.get("corpus") != shards.fingerprint:
        raise UserError(f"the pitch contours in {folder} were computed on another corpus than {shards.folder}")
    return store


def read_pitch(store: FeatureStore, key: str, num_samples: int) -> np.ndarray:
    """The (T,) float32 contour of one utterance, checked against its length in samples."""
    if key not in store:
        raise UserError(f"the pitch folder {store.folder} has no contour for {key}")
    contour = np.array(store[key][:, 0], dtype=np.float32)  # a copy: the store is read-only
    if len(contour) != num_frames(num_samples):
        raise UserError(f"{key}: the pitch folder has {len(contour)} frames for {num_samples} samples, "
                        f"expected {num_frames(num_samples)} (pitch of other audio?)")
    return contour
