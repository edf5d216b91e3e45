"""What a task prepares from: the corpus's index rows by split (`split_rows`), and for the tasks that
read audio themselves (SE, VC), `CorpusAudio`, which reads a row's audio through the command's one
`Shards`.

Tasks never open the corpus: the evaluation (and the VC judges, with the same `split_rows`) hands
them these. Nothing here labels, filters or caches anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..data.corpus import SPLITS
from ..data.shards import Shards

AUDIO_COLUMNS = ("shard", "flac_offset", "flac_bytes")
"""The index columns that locate a row's FLAC in its shard: a task that reads audio lists them."""


def split_rows(shards: Shards, columns: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """split -> the index rows of its utterances (index order), each with its key, split and `columns`.
    Columns the index lacks (any metadata column beyond its schema, for `cls:COLUMN`) come from the
    utterances' json members."""
    wanted = list(dict.fromkeys(columns))
    indexed = set(shards.index.column_names)
    extra = [c for c in wanted if c not in indexed]
    meta = shards.metadata(extra) if extra else {}
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for row in shards.rows(columns=list(dict.fromkeys(["key", "split", *wanted]))):
        row.update(meta.get(row["key"], {}))
        rows[row["split"]].append(row)
    return rows


@dataclass(frozen=True)
class CorpusAudio:
    """The audio behind index rows, for the tasks that read it (SE, VC): `read(row)` decodes the row's
    FLAC (the row holds `AUDIO_COLUMNS`). `fingerprint` is the corpus's, and `cache` a folder where
    such a task keeps what is the same for every upstream of this corpus (None: nothing is kept)."""

    read: Callable[[dict[str, Any]], np.ndarray]
    fingerprint: str
    cache: Optional[Path] = None

    @classmethod
    def of(cls, shards: Shards, cache: Optional[Path] = None) -> "CorpusAudio":
        """The audio of `shards`' rows, read by byte offset (`Shards.read_audio`)."""
        return cls(partial(_read_row, shards), shards.fingerprint, cache)


def _read_row(shards: Shards, row: dict[str, Any]) -> np.ndarray:
    return shards.read_audio(row["shard"], row["flac_offset"], row["flac_bytes"])
