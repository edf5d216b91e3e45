"""Outputs users can trust: the bad-input table of `progre` commands, each case run as the console
script runs it, asserting the exit status, the one-line message, and that inputs and other outputs
are byte-for-byte intact; plus the output policy's locking and clean-up."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from progre import cli as cli_module
from progre.config import ShardParams
from progre.outputs import MARKER, output_folder
from stages import shard as shard_stage

from .conftest import noise, tone, write_audio


def run_cli(monkeypatch, capsys, cwd: Path, *args: str) -> tuple[int, str]:
    """`progre ARGS` in this process, as the console script runs it: (exit status, stderr)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["progre", "--quiet", *args])
    capsys.readouterr()
    try:
        cli_module.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under `roots` (a file root too) -> sha256 of its bytes."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def small_corpus(root: Path) -> Path:
    for i in range(4):
        write_audio(root / f"u{i}.wav", tone(0.5 + 0.1 * i, 200 + 50 * i), subtype="PCM_16")
    return root


@pytest.fixture
def corpus(tmp_path) -> Path:
    return small_corpus(tmp_path / "corpus")


@pytest.fixture
def shards(tmp_path, corpus) -> Path:
    shard_stage.run(ShardParams(workers=1), corpus, tmp_path / "shards")
    return tmp_path / "shards"


def foreign_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("months of work")
    return path


# --------------------------------------------------------------------------- the table
# id -> (setup(tmp_path, corpus, shards) -> (args, paths that must stay intact), expected message)


def _features_into_foreign(tmp, corpus, shards):
    out = foreign_folder(tmp / "mine")
    return ["features", "--kind", "mfcc", "--shards", str(shards), "--out", str(out)], [out, shards]


def _features_overwrite_foreign(tmp, corpus, shards):
    out = foreign_folder(tmp / "mine")
    return ["features", "--kind", "mfcc", "--shards", str(shards), "--out", str(out), "--overwrite"], [out, shards]


def _cluster_overwrite_foreign(tmp, corpus, shards):
    out = foreign_folder(tmp / "mine")
    return ["cluster", "--features", str(tmp / "nofeatures"), "--shards", str(shards), "--out", str(out),
            "--overwrite"], [out, shards]


def _evaluate_into_foreign(tmp, corpus, shards):
    out = foreign_folder(tmp / "mine")
    return ["evaluate", "--upstream", "mfcc", "--shards", str(shards), "--out", str(out)], [out, shards]


def _shard_onto_its_corpus(tmp, corpus, shards):
    return ["shard", str(corpus), "--out", str(corpus), "--overwrite"], [corpus]


def _shard_inside_its_corpus(tmp, corpus, shards):
    return ["shard", str(corpus), "--out", str(corpus / "audio"), "--overwrite"], [corpus]


def _shard_around_its_corpus(tmp, corpus, shards):
    return ["shard", str(corpus), "--out", str(tmp), "--overwrite"], [corpus, shards]


def _features_onto_its_shards(tmp, corpus, shards):
    return ["features", "--kind", "pitch", "--shards", str(shards), "--out", str(shards / "pitch")], [shards]


def _phone_start_not_a_number(tmp, corpus, shards):
    (corpus / "meta.csv").write_text("path,text,phones,phone_start,phone_end\nu0.wav,a,a b,0.0 abc,0.1 0.2\n")
    return ["shard", str(corpus), "--metadata", str(corpus / "meta.csv"), "--out", str(tmp / "o")], [corpus]


def _latin1_table(tmp, corpus, shards):
    (corpus / "meta.csv").write_bytes("path,text\nu0.wav,caf\u00e9 cr\u00e8me\n".encode("latin-1"))
    return ["shard", str(corpus), "--metadata", str(corpus / "meta.csv"), "--out", str(tmp / "o")], [corpus]


def _max_seconds_nan(tmp, corpus, shards):
    return ["shard", str(corpus), "--out", str(tmp / "o"), "--set", "max_seconds=nan"], [corpus]


def _silence_peak_inf(tmp, corpus, shards):
    return ["shard", str(corpus), "--out", str(tmp / "o"), "--set", "silence_peak=inf"], [corpus]


def _lr_zero(tmp, corpus, shards):
    return ["pretrain", "--labels", str(tmp / "l"), "--shards", str(shards), "--out", str(tmp / "r"),
            "--set", "lr=0"], [shards]


def _every_file_bad(tmp, corpus, shards):
    bad = tmp / "bad"
    write_audio(bad / "silent.wav", np.zeros(8000, np.float32), subtype="PCM_16")
    (bad / "broken.flac").write_bytes(b"fLaC" + bytes(100))
    return ["shard", str(bad), "--out", str(tmp / "o")], [bad]


def _shard_while_locked(tmp, corpus, shards):
    return ["shard", str(corpus), "--out", str(shards), "--overwrite"], [corpus, shards]


def _pretrain_into_foreign(tmp, corpus, shards):
    out = foreign_folder(tmp / "mine")
    return ["pretrain", "--labels", str(tmp / "l"), "--shards", str(shards), "--out", str(out)], [out, shards]


def _report_over_its_input(tmp, corpus, shards):
    return ["report", str(shards), "--out", str(tmp)], [shards]


CASES = {
    "features into a folder of other files": (_features_into_foreign, r"already exists \(pass --overwrite"),
    "features --overwrite of a folder progre did not write": (_features_overwrite_foreign, "progre did not write"),
    "cluster --overwrite of a folder progre did not write": (_cluster_overwrite_foreign, "progre did not write"),
    "evaluate into a folder of other files": (_evaluate_into_foreign, "already exists"),
    "shard --out its own corpus": (_shard_onto_its_corpus, "is the input"),
    "shard --out inside its corpus": (_shard_inside_its_corpus, "inside the input"),
    "shard --out a folder holding its corpus": (_shard_around_its_corpus, "holds the input"),
    "features --out inside its shards": (_features_onto_its_shards, "inside the input"),
    "non-numeric phone_start": (_phone_start_not_a_number, r"meta.csv, line 2: phone_start value 'abc' is not a number"),
    "latin-1 metadata table": (_latin1_table, r"meta.csv is not UTF-8 text \(byte 0xe9"),
    "max_seconds=nan": (_max_seconds_nan, r"--set max_seconds: expected a finite number, got 'nan'"),
    "silence_peak=inf": (_silence_peak_inf, r"--set silence_peak: expected a finite number"),
    "lr=0": (_lr_zero, r"--set lr: 0.0 must be above 0.0"),
    "every file of the corpus is bad": (_every_file_bad, r"every input was rejected \(1 silent, 1 unreadable\)"),
    "a second run into an output in use": (_shard_while_locked, "another progre run is writing"),
    "pretrain into a folder of other files": (_pretrain_into_foreign, "progre did not write"),
    "report over its own input": (_report_over_its_input, "holds the input"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, tmp_path, corpus, shards, monkeypatch, capsys):
    setup, message = CASES[case]
    args, intact = setup(tmp_path, corpus, shards)
    before = snapshot(*intact)
    lock = None
    if case == "a second run into an output in use":  # another process holds the output's lock
        lock = open(shards.parent / f".{shards.name}.lock", "a")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        code, stderr = run_cli(monkeypatch, capsys, tmp_path, *args)
    finally:
        if lock is not None:
            lock.close()
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert "Traceback" not in stderr and lines[-1].startswith("error: ")
    assert re.search(message, lines[-1]), lines[-1]
    assert snapshot(*intact) == before


# --------------------------------------------------------------------------- audio cases


def test_a_truncated_wav_is_rejected_and_same_stem_files_keep_distinct_keys(tmp_path):
    root = tmp_path / "c"
    path = write_audio(root / "cut.wav", noise(1.0, seed=1), subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:int(0.6 * len(data))])
    write_audio(root / "clip.ogg", tone(0.5, 300), subtype="VORBIS")
    sf.write(root / "clip.mp3", tone(0.5, 500), 16000, format="MP3")
    write_audio(root / "whole.wav", tone(0.5, 200), subtype="PCM_16")
    summary = shard_stage.run(ShardParams(workers=1), root, tmp_path / "s")
    rejects = pq.read_table(tmp_path / "s" / "rejects.parquet").to_pylist()
    assert [(Path(r["path"]).name, r["reason"].split(" (")[0]) for r in rejects] == [("cut.wav", "truncated")]
    assert "of the 16000 frames its header declares" in rejects[0]["reason"]
    keys = sorted(pq.read_table(tmp_path / "s" / "index.parquet").column("key").to_pylist())
    assert keys == ["clip_mp3", "clip_ogg", "whole"] and summary["utterances"] == 3


def test_an_unwritable_or_full_output_is_one_line(tmp_path, corpus, monkeypatch, capsys):
    import progre.data.sharding as sharding

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "train-000000.tar"))

    monkeypatch.setattr(sharding.TarShardWriter, "write", full)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, "shard", str(corpus), "--out", str(tmp_path / "o"))
    assert code == 2 and stderr.strip().splitlines()[-1].startswith(f"error: cannot write {tmp_path / 'o'}: "
                                                                     f"the disk is full")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*.tmp"))
    monkeypatch.undo()

    def forbidden(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr("tempfile.mkdtemp", forbidden)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, "shard", str(corpus), "--out", str(tmp_path / "o"))
    assert code == 2 and "cannot write" in stderr and "Permission denied" in stderr


# --------------------------------------------------------------------------- the policy


def test_leftovers_of_killed_runs_are_removed_by_the_next_run(tmp_path, corpus):
    out = tmp_path / "s"
    killed = tmp_path / ".s.k1ll3d.tmp"
    killed.mkdir()
    (killed / "train-000000.tar").write_bytes(bytes(1000))
    (tmp_path / ".s.old").mkdir()
    other = tmp_path / ".other.abc.tmp"  # another output's: not touched
    other.mkdir()
    shard_stage.run(ShardParams(workers=1), corpus, out)
    assert not killed.exists() and not (tmp_path / ".s.old").exists() and other.exists()
    assert (out / MARKER).is_file() and (out / "index.parquet").is_file()


def test_overwrite_replaces_only_what_progre_wrote_and_the_marker_is_fixed(tmp_path, corpus):
    out = tmp_path / "s"
    shard_stage.run(ShardParams(workers=1), corpus, out)
    first = snapshot(out)
    shard_stage.run(ShardParams(workers=1), corpus, out, overwrite=True)
    assert snapshot(out) == first  # reruns are byte-identical, the marker included
    with output_folder(tmp_path / "empty", "test") as tmp:  # an absent or empty folder needs no --overwrite
        (tmp / "x").write_text("1")
    assert (tmp_path / "empty" / "x").read_text() == "1"


def test_a_failed_run_leaves_the_previous_output(tmp_path, corpus):
    out = tmp_path / "s"
    shard_stage.run(ShardParams(workers=1), corpus, out)
    before = snapshot(out)
    with pytest.raises(RuntimeError):
        with output_folder(out, "test", overwrite=True) as tmp:
            (tmp / "half").write_text("half")
            raise RuntimeError("killed")
    assert snapshot(out) == before and not list(tmp_path.glob(".s.*.tmp"))


def test_table_rows_of_a_parquet_metadata_keep_explicit_keys(tmp_path):
    root = small_corpus(tmp_path / "c")
    pq.write_table(pa.Table.from_pylist([{"path": "u0.wav", "key": "first"}, {"path": "u1.wav", "key": "first"}]),
                   root / "meta.parquet")
    shard_stage.run(ShardParams(workers=1), root, tmp_path / "s", metadata=root / "meta.parquet")
    rejects = pq.read_table(tmp_path / "s" / "rejects.parquet").to_pylist()
    assert [r["reason"].split(" (")[0] for r in rejects] == ["duplicate key first"]  # the user's keys: not renamed
