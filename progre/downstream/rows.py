"""What a task prepares from: the corpus's index rows by split (`split_rows`), and for the tasks that
read audio themselves (SE, VC), `CorpusAudio`, which reads a row's audio through the command's one
`Shards`.

For cross-validation (`fold_rows`), the rows of every split are dealt again by a fold column: each
fold is the test split once, with valid and train from the other folds.

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


FOLD_VALID_EVERY = 5
"""In cross-validation, every fifth utterance (by key) of each training fold is valid: the rule of the
IEMOCAP reader's own split (`data.superb_corpora`), which holds out a fifth of the training sessions
as s3prl's ``valid_ratio: 0.2`` does (s3prl draws that fifth at random from the pooled sessions)."""


def fold_rows(rows: dict[str, list[dict[str, Any]]], column: str
              ) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], list[str]]:
    """Cross-validation over `column`: fold name (its value as text) -> split -> rows, and notes on the rows
    left out. Fold f's test split is the rows whose `column` is f; of every other fold's rows, sorted by
    key, each `FOLD_VALID_EVERY`-th is valid and the rest train. Folds come in natural order (2 before
    10). Rows without a value are in no fold. Fewer than two folds: no folds (the corpus's split stands)."""
    everything = sorted((r for split in SPLITS for r in rows[split]), key=lambda r: r["key"])
    by_fold: dict[str, list[dict[str, Any]]] = {}
    missing = 0
    for row in everything:
        value = row.get(column)
        if value is None or str(value).strip() == "":
            missing += 1
            continue
        by_fold.setdefault(str(value).strip(), []).append(row)
    if len(by_fold) < 2:
        return {}, []
    notes = [f"{missing} utterances without a {column} value are in no fold and left out"] if missing else []
    names = sorted(by_fold, key=lambda v: (0, int(v), v) if v.isdigit() else (1, 0, v))
    folds = {}
    for test in names:
        split: dict[str, list[dict[str, Any]]] = {"train": [], "valid": [], "test": list(by_fold[test])}
        for other in names:
            if other == test:
                continue
            for i, row in enumerate(by_fold[other]):
                split["valid" if i % FOLD_VALID_EVERY == FOLD_VALID_EVERY - 1 else "train"].append(row)
        folds[test] = {s: split[s] for s in SPLITS}
    return folds, notes
