"""Corpus -> WebDataset tar shards, a parquet index and a rejects table.

Each utterance becomes two tar members, ``<key>.flac`` (16 kHz mono, lossless FLAC at the
configured bit depth) and ``<key>.json`` (all its metadata). Items are written in sorted
(split, key) order with fixed tar metadata (mtime 0, uid/gid 0, no user names), so the same
corpus and parameters give byte-identical shards. A shard is written under a temporary name
and renamed when complete.

With `ShardSettings.lexicon`, utterances with a transcript get phones from lexicon files first
(`lexicon.py`), and the summary reports the words the files lack.

Decoding, checks, resampling and FLAC encoding run in a process pool; results come back in
input order, so the output does not depend on worker timing and memory stays flat.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..audio import BadAudio, encode_flac, read_audio_file, to_model_input
from ..frames import SAMPLE_RATE
from ..errors import UserError
from ..io import atomic_path
from ..settings import setting
from ..log import logger, progress_bar
from ..parallel import ordered_map
from .corpus import SPLITS, CorpusItem, Reject, read_corpus
from .lexicon import add_lexicon_phones, read_lexicon
from .superb_corpora import FORMATS as SUPERB_FORMATS

TAR_MTIME = 0  # fixed member time: reruns give identical bytes

INDEX_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("split", pa.string()),
    ("shard", pa.string()),
    ("num_samples", pa.int64()),
    ("duration", pa.float64()),
    ("speaker", pa.string()),
    ("text", pa.string()),
    ("phones", pa.list_(pa.string())),
    ("phone_start", pa.list_(pa.float64())),
    ("phone_end", pa.list_(pa.float64())),
    ("style", pa.string()),
    ("language", pa.string()),  # ISO 639 code (en, ru, zh, ...): picks the eSpeak voice, LID's label
    ("source", pa.string()),
    ("flac_offset", pa.int64()),  # where the key's FLAC bytes start in its tar, for random access
    ("flac_bytes", pa.int64()),
])
REJECTS_SCHEMA = pa.schema([("path", pa.string()), ("key", pa.string()), ("reason", pa.string())])


@dataclass(frozen=True)
class ShardSettings:
    """How a corpus becomes shards (the `shard` params section)."""

    input_format: str = setting("auto", "corpus layout; auto detects it (aishell: AISHELL-1's wav/ and transcript/; "
                                        "voxceleb1, iemocap, voicebank, vcc2020: SUPERB's corpora as published); "
                                        "voicebank_noisy, VoiceBank-DEMAND's noisy side, is never guessed",
                                choices=("auto", "librispeech", "aishell", "folder", "manifest", *SUPERB_FORMATS))
    default_split: str = setting("train", "split for items whose corpus gives none", choices=SPLITS)
    keep_unlisted: bool = setting(False, "a folder of audio with a metadata table: also shard the audio files the "
                                         "table does not list, with default_split and no metadata (false: they are "
                                         "rejects, 'not in the metadata table')")
    max_shard_mb: float = setting(64.0, "upper bound of one tar shard in MB", min=0.01)
    max_shard_items: int = setting(2000, "upper bound of utterances in one tar shard", min=1)
    flac_subtype: str = setting("PCM_16", "sample format in the shards (FLAC is lossless at that depth)",
                                choices=("PCM_16", "PCM_24"))
    min_seconds: float = setting(0.025, "shorter audio is rejected (one model frame is 400 samples = 25 ms)",
                                 min=0.025)
    max_seconds: float | None = setting(None, "longer audio is rejected (null: no limit)", min=0.025)
    silence_peak: float = setting(1e-4, "audio whose absolute peak is below this is rejected as silent", min=0.0)
    workers: int = setting(2, "decode/encode worker processes", min=1)
    lexicon: tuple[str, ...] = setting((), "pronunciation lexicon files (lines WORD PH1 PH2 ...; the first "
                                           "pronunciation of a word wins): every utterance with a transcript and no "
                                           "phones gets its words' phones; words missing from them are reported and "
                                           "leave their utterance without phones (s3prl's PR reads LibriSpeech with "
                                           "librispeech-lexicon-200k-g2p.txt,librispeech-lexicon-allothers-g2p.txt)")


@dataclass
class Encoded:
    """One utterance ready to be written."""

    key: str
    flac: bytes
    meta: dict[str, Any]


def _member_bytes(name: str, size: int) -> int:
    """A tar member's footprint: a 512-byte header plus the data padded to 512 bytes
    (GNU tar adds a header and a padded name block for names longer than 100 bytes)."""
    long_name = 512 + -(-(len(name.encode()) + 1) // 512) * 512 if len(name.encode()) > tarfile.LENGTH_NAME else 0
    return long_name + 512 + -(-size // 512) * 512


def _tar_file_bytes(members_bytes: int) -> int:
    """File size once closed: two zero end blocks, padded to tarfile's 10240-byte records."""
    return -(-(members_bytes + 1024) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


class TarShardWriter:
    """Writes ``<split>-NNNNNN.tar`` files of at most `max_bytes` / `max_items`, atomically."""

    def __init__(self, out_dir: Path, split: str, max_bytes: int, max_items: int):
        self.out_dir, self.split = out_dir, split
        self.max_bytes, self.max_items = max_bytes, max_items
        self.index = 0
        self._tar: tarfile.TarFile | None = None
        self._file = None
        self._tmp: Path | None = None
        self._items = 0
        self._bytes = 0

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}.tar"

    def write(self, key: str, members: dict[str, bytes]) -> tuple[str, dict[str, int]]:
        """Add one sample; returns the shard file name and each member's data offset in it."""
        size = sum(_member_bytes(f"{key}.{ext}", len(data)) for ext, data in members.items())
        if self._tar is not None and (self._items >= self.max_items
                                      or _tar_file_bytes(self._bytes + size) > self.max_bytes):
            self._finish()
            self.index += 1
        if self._tar is None:
            self._open()
        offsets = {}
        for ext in sorted(members):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(members[ext])
            info.mtime = TAR_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            header = info.tobuf(tarfile.GNU_FORMAT, self._tar.encoding, self._tar.errors)  # type: ignore[union-attr]
            offsets[ext] = self._tar.offset + len(header)  # type: ignore[union-attr]
            self._tar.addfile(info, io.BytesIO(members[ext]))  # type: ignore[union-attr]
        self._items += 1
        self._bytes += size
        return self.name, offsets

    def close(self) -> None:
        if self._tar is not None:
            self._finish()

    def _open(self) -> None:
        self._tmp = self.out_dir / f".{self.name}.tmp"
        self._file = open(self._tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT)
        self._items = self._bytes = 0

    def _finish(self) -> None:
        self._tar.close()  # type: ignore[union-attr]
        self._file.close()  # type: ignore[union-attr]
        os.replace(self._tmp, self.out_dir / self.name)  # type: ignore[arg-type]
        self._tar = self._file = self._tmp = None


def encode_item(item: CorpusItem, settings: ShardSettings) -> Encoded | Reject:
    """Decode, check and convert one item; a Reject carries the reason when it is unusable."""
    try:
        data, rate = read_audio_file(item.path)
        max_samples = int(settings.max_seconds * SAMPLE_RATE) if settings.max_seconds else None
        wav, info = to_model_input(data, rate, silence_peak=settings.silence_peak,
                                   min_samples=int(round(settings.min_seconds * SAMPLE_RATE)),
                                   max_samples=max_samples)
        meta = _clean_meta(item)
    except BadAudio as exc:
        return Reject(str(item.path), str(exc), item.key)
    meta.update(key=item.key, source=str(item.path), num_samples=len(wav),
                duration=round(len(wav) / SAMPLE_RATE, 6), sample_rate_in=info.sample_rate_in,
                channels_in=info.channels_in, gain=info.gain)
    return Encoded(item.key, encode_flac(wav, settings.flac_subtype), meta)


def _clean_meta(item: CorpusItem) -> dict[str, Any]:
    """Copy the item's metadata, checking that phone lists and their times line up."""
    meta = dict(item.meta)
    meta.pop("duration", None)  # recomputed from the decoded audio
    phones = meta.get("phones")
    for col in ("phone_start", "phone_end"):
        times = meta.get(col)
        if times is not None and (phones is None or len(times) != len(phones)):
            raise BadAudio(f"metadata: {col} has {len(times)} values but phones has "
                           f"{0 if phones is None else len(phones)}")
    return meta


def _set_worker_settings(settings: ShardSettings) -> None:
    global _WORKER_SETTINGS
    _WORKER_SETTINGS = settings


def _encode_in_worker(item: CorpusItem) -> Encoded | Reject:
    return encode_item(item, _WORKER_SETTINGS)  # type: ignore[arg-type]


_WORKER_SETTINGS: ShardSettings | None = None


def shard_corpus(corpus: Path, metadata: Path | None, settings: ShardSettings, out_dir: Path) -> dict[str, Any]:
    """Read `corpus` (any layout of `progre.data.corpus`, with its `metadata` table if given) and write its
    shards, index and rejects into `out_dir`; returns the summary (counts per split, rejects by reason)."""
    items, rejects = read_corpus(corpus, settings.input_format, metadata, settings.default_split,
                                 settings.keep_unlisted)
    if not items:
        reasons = ", ".join(f"{n} {reason}" for reason, n in rejects_by_reason(rejects).items())
        raise UserError(f"{corpus}: no usable audio found ({len(rejects)} rejected"
                        + (f": {reasons}" if reasons else "") + ")")
    lexicon = _add_lexicon_phones(items, settings.lexicon) if settings.lexicon else None
    logger.info("sharding %d utterances from %s (%d rejected while reading the corpus)",
                len(items), corpus, len(rejects))
    summary = write_shards(items, rejects, out_dir, settings)
    if not summary["utterances"]:
        reasons = ", ".join(f"{n} {reason}" for reason, n in summary["rejects_by_reason"].items())
        raise UserError(f"{corpus}: every input was rejected ({reasons}); nothing to shard")
    summary["flac_subtype"] = settings.flac_subtype
    if lexicon is not None:
        summary["lexicon"] = lexicon
    return summary


def _add_lexicon_phones(items: list[CorpusItem], files: tuple[str, ...]) -> dict[str, Any]:
    """Phones from the lexicon `files` for the items with a transcript (`lexicon.add_lexicon_phones`),
    logged; returns the report for summary.json."""
    report = add_lexicon_phones(items, read_lexicon(files))
    report["files"] = list(files)
    logger.info("lexicon: phones for %d utterances from %d words of %s", report["utterances_with_lexicon_phones"],
                report["entries"], ", ".join(files))
    if report["missing_words"]:
        logger.warning("lexicon: %d words (%d occurrences) are in no lexicon file, first %s; %d utterances with them "
                       "get no phones (listed in summary.json)", report["missing_words"],
                       report["missing_word_occurrences"], ", ".join(report["first_missing_words"]),
                       len(report["utterances_without_phones"]))
    return report


def write_shards(items: list[CorpusItem], rejects: list[Reject], out_dir: Path,
                 settings: ShardSettings) -> dict[str, Any]:
    """Write shards, index.parquet, rejects.parquet into `out_dir`; return the summary."""
    writers = {split: TarShardWriter(out_dir, split, int(settings.max_shard_mb * 1e6), settings.max_shard_items)
               for split in SPLITS}
    rows: list[dict[str, Any]] = []
    rejects = list(rejects)
    with progress_bar() as progress:
        task = progress.add_task("sharding", total=len(items))
        results = ordered_map(_encode_in_worker, items, settings.workers, initializer=_set_worker_settings,
                              initargs=(settings,))
        for result in results:
            progress.advance(task)
            if isinstance(result, Reject):
                rejects.append(result)
                continue
            meta = result.meta
            payload = json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
            shard, offsets = writers[meta["split"]].write(result.key, {"flac": result.flac, "json": payload})
            rows.append({col: meta.get(col) for col in INDEX_SCHEMA.names}
                        | {"shard": shard, "flac_offset": offsets["flac"], "flac_bytes": len(result.flac)})
    for writer in writers.values():
        writer.close()

    with atomic_path(out_dir / "index.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), tmp)
    reject_rows = [{"path": r.path, "key": r.key, "reason": r.reason} for r in rejects]
    with atomic_path(out_dir / "rejects.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(reject_rows, schema=REJECTS_SCHEMA), tmp)
    return summarize(rows, rejects, sorted(p.name for p in out_dir.glob("*.tar")))


def summarize(rows: list[dict[str, Any]], rejects: list[Reject], shard_names: list[str]) -> dict[str, Any]:
    """Counts and durations per split, and rejects by reason (the stage's metrics)."""
    summary: dict[str, Any] = {"utterances": len(rows), "hours": round(sum(r["duration"] for r in rows) / 3600, 4),
                               "shards": len(shard_names), "rejected": len(rejects), "splits": {}}
    for split in SPLITS:
        split_rows = [r for r in rows if r["split"] == split]
        summary["splits"][split] = {
            "utterances": len(split_rows),
            "minutes": round(sum(r["duration"] for r in split_rows) / 60, 3),
            "speakers": len({r["speaker"] for r in split_rows if r.get("speaker")}),
            "shards": sum(1 for name in shard_names if name.startswith(f"{split}-")),
        }
    summary["rejects_by_reason"] = rejects_by_reason(rejects)
    return summary


def rejects_by_reason(rejects: list[Reject]) -> dict[str, int]:
    """How many rejects each reason has (its words before any detail in parentheses), by reason."""
    return dict(sorted(Counter(r.reason.split(" (")[0] for r in rejects).items()))
