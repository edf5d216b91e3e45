"""Frame label tables: key -> uint16 labels, with the label rate and provenance in the schema.

The label rate (100 Hz for MFCC, 50 Hz for layer features), the feature kind and layer, the
number of clusters and the corpus fingerprint travel inside labels.parquet, and every reader
checks them: iteration-2 labels read at the wrong rate, or labels of another corpus, are an
error rather than a silent misalignment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..io import reading

SCHEMA = pa.schema([("key", pa.string()), ("split", pa.string()), ("labels", pa.list_(pa.uint16()))])
FILE = "labels.parquet"


class LabelWriter:
    """Streams label rows into a parquet file (written to a temporary name, renamed on close)."""

    def __init__(self, folder: Path, meta: dict[str, Any]):
        self.path = Path(folder) / FILE
        self.tmp = Path(folder) / f".{FILE}.tmp"
        schema = SCHEMA.with_metadata({b"progre": json.dumps(meta, sort_keys=True).encode()})
        self.writer = pq.ParquetWriter(self.tmp, schema)
        self.schema = schema
        self.buffer: list[dict[str, Any]] = []

    def add(self, key: str, split: str, labels: np.ndarray) -> None:
        self.buffer.append({"key": key, "split": split, "labels": labels.astype(np.uint16)})
        if len(self.buffer) >= 1024:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []

    def close(self) -> None:
        self._flush()
        self.writer.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


@dataclass
class LabelSet:
    """All labels of a corpus in memory (uint16: 50 Hz labels of 1000 h take about 350 MB)."""

    labels: dict[str, np.ndarray]
    splits: dict[str, str]
    meta: dict[str, Any]
    source: Path | None = None
    """The folder (or file) they were read from."""

    @property
    def label_rate(self) -> int:
        return int(self.meta["label_rate"])

    @property
    def n_clusters(self) -> int:
        return int(self.meta["n_clusters"])


def read_labels(folder: Path) -> LabelSet:
    path = Path(folder) / FILE if Path(folder).is_dir() else Path(folder)
    if not path.is_file():
        raise UserError(f"{folder} holds no {FILE}; run `progre cluster` first")
    with reading(path, "rerun `progre cluster`"):
        table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(b"progre")
    if raw is None:
        raise UserError(f"{path} has no label metadata (label rate, clusters); it was not written by progre cluster")
    meta = json.loads(raw)
    keys = table.column("key").to_pylist()
    splits = table.column("split").to_pylist()
    column = table.column("labels").combine_chunks()
    values = column.values.to_numpy(zero_copy_only=False)
    offsets = column.offsets.to_numpy()
    labels = {k: values[offsets[i]:offsets[i + 1]] for i, k in enumerate(keys)}
    return LabelSet(labels, dict(zip(keys, splits)), meta, Path(folder))
