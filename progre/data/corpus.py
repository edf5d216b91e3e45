"""Corpus readers: find the utterances of a corpus and their metadata, without decoding audio.

These layouts are understood:

- LibriSpeech: ``[subset/]speaker/chapter/*.flac`` with ``speaker-chapter.trans.txt``; the split
  comes from the subset name (train-* -> train, dev-* -> valid, test-* -> test).
- A folder of audio (wav/flac/ogg/mp3, searched recursively) with an optional metadata table
  (csv/tsv/parquet) whose ``path`` column names files inside the folder (relative to it, or absolute),
  and any of ``key``, ``speaker``, ``text``, ``phones``, ``phone_start``, ``phone_end``, ``style``,
  ``split`` (train, valid or test; dev and val count as valid). In csv/tsv, list columns are
  space-separated. A table that is empty, has a row outside the folder, an unknown split or a column
  of the wrong type is a one-line error; audio files it does not list are rejects (or kept, with
  `keep_unlisted`). A broken symbolic link and a folder that cannot be read are rejects.
- A fairseq manifest (``.tsv``: first line the audio root, then ``relative/path<TAB>samples``),
  with transcripts from a ``.wrd`` file beside it when present; the split comes from its name.
- AISHELL-1 as published (``data_aishell``): ``wav/{train,dev,test}/SPEAKER/ID.wav`` (the speakers'
  archives in ``wav/`` extracted in place) and ``transcript/aishell_transcript_v0.8.txt`` (``ID``
  then the word-segmented Chinese text); the split comes from the folder under ``wav/``, the
  speaker from the one below, and the language is ``zh``. Audio without a transcript line is kept
  without text; a transcript line without audio is a reject.

SUPERB's corpora as published (VoxCeleb1, IEMOCAP, VoiceBank-DEMAND's clean and noisy sides, VCC2020
task 1) are read by `superb_corpora`, with the splits and labels of s3prl's recipes.

Readers yield `CorpusItem`s and report unusable rows as `Reject`s; nothing is dropped silently.

Keys: a reader names each item (its id, or its path in the corpus without the suffix); the key is
that name with every character other than ASCII letters, digits, ``_`` and ``-`` replaced by ``_``
(`sanitize_key`: ``speaker/utt 1`` -> ``speaker_utt_1``). Where two different names give one key
(``c d`` and ``c_d``, ``a_b/x`` and ``a/b/x``), each of them gets its escaped name instead
(`escaped_key`: ``c=20d``, ``c_d``, ``a_b=2Fx``, ``a=2Fb=2Fx``), which no other name gives, so
different files never share a key; only the same name twice (a table's key listed twice) is a
duplicate, and a reject.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..io import describe_error, read_utf8

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
LIST_COLUMNS = ("phones", "phone_start", "phone_end")
TEXT_COLUMNS = ("key", "speaker", "split", "text", "style", "language")
SPLITS = ("train", "valid", "test")
TABLE_SPLIT = re.compile(r"(?P<name>train|valid|validation|val|dev|test)([-_].*)?", re.IGNORECASE)
"""A split in a metadata table: train, valid, test (dev, val and validation count as valid), alone or
with a suffix after - or _ (train-clean-100, dev_other)."""
KEY_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass
class CorpusItem:
    """One utterance to shard: where its audio is and what is known about it."""

    key: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    """What the key was made from (an id, a path in the corpus without its suffix); the key when empty."""

    @classmethod
    def named(cls, name: str, path: Path, meta: dict[str, Any]) -> CorpusItem:
        return cls(sanitize_key(name), path, meta, name)


@dataclass
class Reject:
    """An input that will not be sharded, and why."""

    path: str
    reason: str
    key: str = ""


def sanitize_key(name: str) -> str:
    """A WebDataset-safe key: no dots (keys split at the first dot), no slashes or spaces."""
    key = re.sub(r"[^A-Za-z0-9_\-]", "_", name)
    return key.strip("_") or "utt"


def escaped_key(name: str) -> str:
    """A WebDataset-safe key that no other name gives: ASCII letters, digits, ``_`` and ``-`` kept, every
    other character written as ``=XX`` per byte of its UTF-8 (``a/b.c`` -> ``a=2Fb=2Ec``)."""
    return "".join(c if c in KEY_CHARACTERS else "".join(f"={b:02X}" for b in c.encode()) for c in name)


def distinct_keys(items: list[CorpusItem]) -> list[CorpusItem]:
    """Items whose different names gave one key get their escaped names as keys instead (an escaped key
    holds ``=`` unless it equals its name, so it cannot meet a key made by `sanitize_key`)."""
    names: dict[str, set[str]] = {}
    for item in items:
        names.setdefault(item.key, set()).add(item.name or item.key)
    for item in items:
        if len(names[item.key]) > 1:
            item.key = escaped_key(item.name or item.key)
    return items


def split_from_name(name: str, default: str) -> str:
    """train*/dev*/valid*/test* -> train/valid/test (LibriSpeech subsets, manifest names)."""
    lowered = name.lower()
    if lowered.startswith("train"):
        return "train"
    if lowered.startswith(("dev", "valid", "val")):
        return "valid"
    if lowered.startswith("test"):
        return "test"
    return default


AISHELL_TRANSCRIPTS = "transcript/aishell_transcript*.txt"
AISHELL_LANGUAGE = "zh"


def detect_format(corpus: Path) -> str:
    """librispeech, aishell, a SUPERB corpus (voxceleb1, iemocap, voicebank, vcc2020), folder or manifest,
    from what the path looks like (voicebank_noisy is never guessed: it is asked for)."""
    from .superb_corpora import DETECTORS  # here: superb_corpora builds on this module's items

    if corpus.is_file():
        if corpus.suffix == ".tsv":
            return "manifest"
        raise UserError(f"{corpus}: expected a folder or a fairseq .tsv manifest")
    if (corpus / "wav").is_dir() and next(corpus.glob(AISHELL_TRANSCRIPTS), None) is not None:
        return "aishell"
    for name, looks_like in DETECTORS:
        if looks_like(corpus):
            return name
    if next(corpus.rglob("*.trans.txt"), None) is not None:
        return "librispeech"
    return "folder"


def read_corpus(corpus: Path, input_format: str = "auto", metadata: Path | None = None,
                default_split: str = "train", keep_unlisted: bool = False) -> tuple[list[CorpusItem], list[Reject]]:
    """All items of a corpus (sorted by split, then key) and the rows that cannot be used. `metadata`: a
    folder's metadata table, or VoxCeleb1's split file when it is not in the corpus folder;
    `keep_unlisted`: audio files of a folder that its table does not list are items too (not rejects)."""
    from .superb_corpora import FORMATS, read_superb_corpus  # here: it builds on this module's items

    corpus = Path(corpus)
    if not corpus.exists():
        raise UserError(f"input {corpus} does not exist")
    fmt = detect_format(corpus) if input_format == "auto" else input_format
    if fmt == "librispeech":
        items, rejects = _read_librispeech(corpus, default_split)
    elif fmt == "aishell":
        items, rejects = _read_aishell(corpus, default_split)
    elif fmt == "manifest":
        items, rejects = _read_manifest(corpus, default_split)
    elif fmt == "folder":
        if metadata is None and (corpus / "metadata.parquet").is_file():
            metadata = corpus / "metadata.parquet"
        items, rejects = _read_folder(corpus, metadata, default_split, keep_unlisted)
    elif fmt in FORMATS:
        items, rejects = read_superb_corpus(corpus, fmt, metadata)
    else:
        raise UserError(f"unknown input format {fmt!r}")
    items, duplicates = _drop_duplicate_keys(distinct_keys(items))
    items.sort(key=lambda it: (SPLITS.index(it.meta["split"]), it.key))
    return items, rejects + duplicates


def _drop_duplicate_keys(items: list[CorpusItem]) -> tuple[list[CorpusItem], list[Reject]]:
    seen: dict[str, Path] = {}
    kept, rejects = [], []
    for item in items:
        if item.key in seen:
            rejects.append(Reject(str(item.path), f"duplicate key {item.key} (also {seen[item.key]})", item.key))
        else:
            seen[item.key] = item.path
            kept.append(item)
    return kept, rejects


def _read_librispeech(root: Path, default_split: str) -> tuple[list[CorpusItem], list[Reject]]:
    items, rejects = [], []
    for trans in sorted(root.rglob("*.trans.txt")):
        chapter_dir = trans.parent
        speaker = chapter_dir.parent.name
        subset_dir = chapter_dir.parent.parent  # the root itself when it is one subset
        split = split_from_name(subset_dir.name, default_split)
        for line in trans.read_text().splitlines():
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = next((chapter_dir / f"{utt_id}{s}" for s in AUDIO_SUFFIXES
                          if (chapter_dir / f"{utt_id}{s}").is_file()), None)
            if audio is None:
                rejects.append(Reject(str(chapter_dir / f"{utt_id}.flac"), "audio file missing", utt_id))
                continue
            items.append(CorpusItem.named(utt_id, audio, {"speaker": speaker, "text": text, "split": split}))
    return items, rejects


def _read_aishell(root: Path, default_split: str) -> tuple[list[CorpusItem], list[Reject]]:
    transcripts = sorted(root.glob(AISHELL_TRANSCRIPTS))
    if not transcripts or not (root / "wav").is_dir():
        raise UserError(f"{root}: not an AISHELL-1 folder (expected wav/ and {AISHELL_TRANSCRIPTS})")
    texts: dict[str, tuple[str, str]] = {}  # id -> (text, where: file:line)
    for transcript in transcripts:
        for number, line in enumerate(read_utf8(transcript).splitlines(), start=1):
            utt_id, _, text = line.strip().partition(" ")
            if utt_id:
                texts.setdefault(utt_id, (text.strip(), f"{transcript}:{number}"))
    items, found = [], set()
    wavs, rejects = audio_files(root / "wav")
    for wav in wavs:
        parts = wav.relative_to(root / "wav").parts
        meta: dict[str, Any] = {"split": split_from_name(parts[0], default_split) if len(parts) > 1 else default_split,
                                "language": AISHELL_LANGUAGE}
        if len(parts) > 2:
            meta["speaker"] = wav.parent.name
        if wav.stem in texts and texts[wav.stem][0]:
            meta["text"] = texts[wav.stem][0]
        found.add(wav.stem)
        items.append(CorpusItem.named(wav.stem, wav, meta))
    rejects += [Reject(where, "audio file missing", utt_id) for utt_id, (_, where) in texts.items() if utt_id not in found]
    return items, rejects


def _read_manifest(manifest: Path, default_split: str) -> tuple[list[CorpusItem], list[Reject]]:
    lines = manifest.read_text().splitlines()
    if not lines:
        raise UserError(f"{manifest}: empty manifest")
    root = Path(lines[0].strip())
    if not root.is_absolute():
        root = manifest.parent / root
    words_file = manifest.with_suffix(".wrd")
    words = words_file.read_text().splitlines() if words_file.is_file() else None
    entries = [ln for ln in lines[1:] if ln.strip()]
    if words is not None and len(words) != len(entries):
        raise UserError(f"{words_file}: {len(words)} lines but {manifest} lists {len(entries)} files")
    split = split_from_name(manifest.stem, default_split)
    items, rejects = [], []
    for i, entry in enumerate(entries):
        rel = entry.split("\t")[0]
        path = root / rel
        if not path.is_file():
            rejects.append(Reject(str(path), "audio file missing"))
            continue
        meta: dict[str, Any] = {"split": split}
        if words is not None:
            meta["text"] = words[i].strip()
        items.append(CorpusItem.named(str(Path(rel).with_suffix("")), path, meta))
    return items, rejects


def audio_files(root: Path) -> tuple[list[Path], list[Reject]]:
    """The audio files under `root` (searched recursively, sorted; symbolic links to folders are not
    followed), and as rejects the broken symbolic links among them and the folders that cannot be read."""
    files, rejects = [], []

    def unreadable(exc: OSError) -> None:
        rejects.append(Reject(str(exc.filename), f"folder cannot be read ({describe_error(exc)})"))

    for folder, _, names in os.walk(root, onerror=unreadable):
        for name in names:
            path = Path(folder) / name
            if path.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            if path.is_file():
                files.append(path)
            elif path.is_symlink() and not path.exists():
                rejects.append(Reject(str(path), f"broken symbolic link (to {os.readlink(path)})"))
    return sorted(files), sorted(rejects, key=lambda r: r.path)


def _read_folder(root: Path, metadata: Path | None, default_split: str,
                 keep_unlisted: bool = False) -> tuple[list[CorpusItem], list[Reject]]:
    audio, rejects = audio_files(root)
    rows = _read_table(metadata) if metadata is not None else []
    items = []
    listed: set[Path] = set()
    named: list[tuple[Path, dict[str, Any]]] = []  # items whose key comes from their path
    inside = os.path.abspath(root)
    for where, row in rows:
        if not row.get("path"):
            rejects.append(Reject(str(metadata), f"metadata row without a path ({where})"))
            continue
        path = Path(row["path"])
        path = path if path.is_absolute() else root / path
        if os.path.commonpath([inside, os.path.abspath(path)]) != inside:
            raise UserError(f"metadata table {metadata}, {where}: path {row['path']!r} lies outside the corpus folder "
                            f"{root}; list files inside it")
        if not path.is_file():
            rejects.append(Reject(str(path), "audio file missing", str(row.get("key") or "")))
            continue
        listed.add(path.resolve())
        meta = {k: v for k, v in row.items() if k not in ("path", "key") and v is not None}
        meta["split"] = _valid_split(meta.get("split"), default_split, metadata, where)  # type: ignore[arg-type]
        if row.get("key"):
            items.append(CorpusItem.named(str(row["key"]), path, meta))
        else:
            named.append((path, meta))
    unlisted = [path for path in audio if path.resolve() not in listed] if metadata is not None else audio
    if metadata is not None and not keep_unlisted:
        rejects += [Reject(str(path), f"not in the metadata table ({metadata.name})") for path in unlisted]
    else:
        named += [(path, {"split": default_split}) for path in unlisted]
    return items + _keys_from_paths(root, named), rejects


def _keys_from_paths(root: Path, named: list[tuple[Path, dict[str, Any]]]) -> list[CorpusItem]:
    """Keys from the paths relative to the corpus, without the suffix; files that share a path up to
    the suffix (clip.mp3, clip.ogg) keep it in the key (clip_mp3, clip_ogg), so neither is lost."""
    def stem_name(path: Path) -> str:
        return str(path.relative_to(root).with_suffix("")) if path.is_relative_to(root) else str(path.with_suffix(""))

    counts = Counter(stem_name(path) for path, _ in named)
    items = []
    for path, meta in named:
        name = stem_name(path)
        if counts[name] == 1:
            items.append(CorpusItem.named(name, path, meta))
        else:
            items.append(CorpusItem(sanitize_key(f"{name}_{path.suffix[1:]}"), path, meta, f"{name}{path.suffix}"))
    return items


def _valid_split(split: Any, default: str, table: Path, where: str) -> str:
    if split is None or split == "":
        return default
    match = TABLE_SPLIT.fullmatch(str(split))
    if match is None:
        raise UserError(f"metadata table {table}, {where}: unknown split {split!r} (use train, valid or test; dev "
                        f"and val count as valid)")
    name = match["name"].lower()
    return "train" if name == "train" else "test" if name == "test" else "valid"


def _read_table(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Rows of a csv/tsv/parquet metadata table as (where: "line N" or "row N", dict), list columns
    parsed; a table that cannot be read, has no rows or no path column, or holds a column of the wrong
    type is a one-line UserError naming the file (and the row)."""
    if not path.is_file():
        raise UserError(f"metadata table {path} does not exist")
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow's errors for a damaged or foreign file
            raise UserError(f"metadata table {path} cannot be read as parquet ({describe_error(exc)})") from None
        columns = table.column_names
        _check_parquet_types(path, table.schema)
        rows = [(f"row {number}", row) for number, row in enumerate(table.to_pylist(), start=1)]
        for _, row in rows:
            for col in TEXT_COLUMNS:
                if isinstance(row.get(col), int):
                    row[col] = str(row[col])
    elif path.suffix in (".csv", ".tsv"):
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
                rows = [(f"line {line}", row) for line, row in enumerate(reader, start=2)]  # line 1 is the header
                columns = list(reader.fieldnames or [])
        except UnicodeDecodeError as exc:
            raise UserError(f"metadata table {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                            f"offset {exc.start}); save it as UTF-8") from None
        except csv.Error as exc:
            raise UserError(f"metadata table {path}: {exc}") from None
        for where, row in rows:
            for col in LIST_COLUMNS:
                if row.get(col):
                    values = row[col].split()
                    row[col] = values if col == "phones" else [_seconds(v, path, where, col) for v in values]
                elif col in row:
                    row[col] = None
    else:
        raise UserError(f"metadata table {path}: expected .csv, .tsv or .parquet")
    if not columns:
        raise UserError(f"metadata table {path} is empty (no header, no rows)")
    if "path" not in columns:
        raise UserError(f"metadata table {path} has no 'path' column")
    if not rows:
        raise UserError(f"metadata table {path} has a header but no rows; list the audio files, or leave --metadata "
                        f"out")
    return rows


def _check_parquet_types(path: Path, schema: pa.Schema) -> None:
    """Each known column of a parquet table holds what it means: text (integers read as text) for path
    (text only), key, speaker, split, text, style and language; a list of text for phones; lists of
    numbers for the phone times; any other column plain values or lists of them (kept in the json)."""
    def plain(t: pa.DataType) -> bool:
        return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
                or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t))

    def text(t: pa.DataType) -> bool:
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)

    def listed(t: pa.DataType, ok) -> bool:
        return pa.types.is_null(t) or ((pa.types.is_list(t) or pa.types.is_large_list(t)) and ok(t.value_type))

    for column in schema:
        t, name = column.type, column.name
        if name == "path":
            good, expected = text(t), "text"
        elif name in TEXT_COLUMNS:
            good, expected = text(t) or pa.types.is_integer(t), "text"
        elif name == "phones":
            good, expected = listed(t, text), "lists of phone names (text)"
        elif name in ("phone_start", "phone_end"):
            good, expected = listed(t, lambda v: pa.types.is_floating(v) or pa.types.is_integer(v)), \
                "lists of numbers (seconds)"
        else:
            good, expected = plain(t) or listed(t, plain), "plain values (text, numbers, true/false) or lists of them"
        if not good:
            raise UserError(f"metadata table {path}: column {name} holds {t} values, expected {expected}")


def _seconds(value: str, path: Path, where: str, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not math.isfinite(number):
        raise UserError(f"metadata table {path}, {where}: {column} value {value!r} is not a number of seconds")
    return number
