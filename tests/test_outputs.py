"""Outputs users can trust: the bad-input table of `progre` commands, each case run as the console
script runs it, asserting the exit status, the one-line message naming the file, and that inputs and
other outputs are byte-for-byte intact; plus the output policy's locking and clean-up."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from progre import cli as cli_module
from progre import outputs
from progre.config import ShardParams, SpeakersParams
from progre.io import WORK_OWNER
from progre.outputs import MARKER, output_folder
from stages import shard as shard_stage
from stages import speakers as speakers_stage

from .conftest import noise, phone_corpus, tone, write_audio

TINY_PRETRAIN = ["--set", "size=tiny", "--set", "max_steps=1", "--set", "checkpoint_every=1", "--set",
                 "batch_seconds=3", "--set", "crop_min_seconds=0.3", "--set", "crop_max_seconds=2", "--set",
                 "num_workers=0"]


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
    """Every file and link under `roots` (a file root too) -> sha256 of its bytes (a link: its target)."""
    out = {}
    for root in roots:
        if root.is_symlink() or root.is_file():
            paths = [root]
        else:
            paths = sorted(p for p in root.rglob("*") if p.is_symlink() or p.is_file())
        for path in paths:
            data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            out[str(path)] = hashlib.sha256(data).hexdigest()
    return out


def contents(root: Path) -> dict[str, str]:
    """`snapshot` keyed by the path inside `root` (a folder's contents wherever it lies)."""
    return {str(Path(p).relative_to(root)): h for p, h in snapshot(root).items()}


def small_corpus(root: Path) -> Path:
    for i in range(4):
        write_audio(root / f"u{i}.wav", tone(0.5 + 0.1 * i, 200 + 50 * i), subtype="PCM_16")
    return root


def foreign_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("months of work")
    return path


def half(path: Path) -> Path:
    """Cut `path` to half its length (a kill or a full disk while writing it)."""
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    return path


def marked(path: Path, written_by: str) -> Path:
    """A folder that looks like progre's output of the command `written_by`."""
    path.mkdir(parents=True)
    (path / "summary.json").write_text("{}\n")
    (path / MARKER).write_text(json.dumps({"written_by": written_by}, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- fixtures, built once per module


@dataclass
class Inputs:
    """What a case works with: copies it may change (corpus, shards, in the case's folder) and the
    module's read-only inputs of the phone corpus (each case lists those it must leave intact)."""

    tmp: Path
    corpus: Path
    shards: Path
    phone_shards: Path
    labels: Path
    pitch: Path
    mfcc: Path
    other_speakers: Path
    model: Path
    cache: Path
    monkeypatch: pytest.MonkeyPatch


@pytest.fixture(scope="module")
def built(tmp_path_factory, phone_shards, phone_labels) -> dict[str, Path]:
    """A small corpus and its shards; pseudo speakers of another corpus with the phone corpus's keys;
    a tiny run's model; a hidden-state cache of the phone corpus."""
    import torch

    from progre.config import FeaturesParams
    from progre.data.shards import Shards
    from progre.downstream.upstreams import cached_hidden_states, parse_upstream
    from stages import mfcc as mfcc_stage
    from stages import pretrain as pretrain_stage
    from tests.test_pretrain import tiny

    base = tmp_path_factory.mktemp("outputs")
    small_corpus(base / "corpus")
    shard_stage.run(ShardParams(workers=1), base / "corpus", base / "shards")
    phone_corpus(base / "other", n_utts=16, seed=1)  # the same keys, other audio
    shard_stage.run(ShardParams(workers=1), base / "other", base / "other_shards")
    speakers_stage.run(SpeakersParams(n_speakers=2), base / "other_shards", base / "other_speakers")
    labels, pitch = phone_labels
    mfcc_stage.run(FeaturesParams(sample_fraction=1.0), phone_shards, base / "mfcc")
    pretrain_stage.run(tiny(max_steps=1, checkpoint_every=1), base / "run", phone_shards, labels, pitch)
    cached_hidden_states(parse_upstream("mfcc"), Shards(phone_shards), base / "cache", seed=1234,
                         device=torch.device("cpu"))
    return {"base": base, "labels": labels, "pitch": pitch, "phone_shards": phone_shards}


@pytest.fixture
def inputs(built, tmp_path, monkeypatch) -> Inputs:
    base = built["base"]
    shutil.copytree(base / "corpus", tmp_path / "corpus")
    shutil.copytree(base / "shards", tmp_path / "shards")
    return Inputs(tmp_path, tmp_path / "corpus", tmp_path / "shards", built["phone_shards"], built["labels"],
                  built["pitch"], base / "mfcc", base / "other_speakers", base / "run" / "model", base / "cache",
                  monkeypatch)


# --------------------------------------------------------------------------- the table


@dataclass
class Case:
    args: list[str]
    intact: list[Path]
    """Inputs and other outputs: byte for byte the same after the run."""
    cwd: Optional[Path] = None
    after: Optional[Callable[[], None]] = None
    """More checks after the run (what a case that now succeeds does)."""
    code: int = 2
    held: list = field(default_factory=list)
    """Files whose locks another process holds during the run."""


def shard_case(x: Inputs, *more: str, corpus: Optional[Path] = None, intact: Optional[list] = None) -> Case:
    corpus = corpus or x.corpus
    return Case(["shard", str(corpus), *more, *ONE_WORKER], [corpus] if intact is None else intact)


def pretrain_args(x: Inputs, out: Path, *more: str, labels: Optional[Path] = None) -> list[str]:
    return ["pretrain", "--labels", str(labels or x.labels), "--shards", str(x.phone_shards), "--pitch", str(x.pitch),
            "--out", str(out), *TINY_PRETRAIN, *more]


def phone_inputs(x: Inputs) -> list[Path]:
    return [x.phone_shards, x.labels, x.pitch]


ONE_WORKER = ["--set", "workers=1"]  # no process pool to start
ALL_REJECTED = "--set max_seconds=0.03".split()  # every utterance is longer: the run fails after its start


# ---- the first probe's cases


def _features_into_foreign(x):
    out = foreign_folder(x.tmp / "mine")
    return Case(["features", "--kind", "mfcc", "--shards", str(x.shards), "--out", str(out)], [out, x.shards])


def _features_overwrite_foreign(x):
    out = foreign_folder(x.tmp / "mine")
    return Case(["features", "--kind", "mfcc", "--shards", str(x.shards), "--out", str(out), "--overwrite"],
                [out, x.shards])


def _cluster_overwrite_foreign(x):
    out = foreign_folder(x.tmp / "mine")
    return Case(["cluster", "--features", str(x.tmp / "nofeatures"), "--shards", str(x.shards), "--out", str(out),
                 "--overwrite"], [out, x.shards])


def _evaluate_into_foreign(x):
    out = foreign_folder(x.tmp / "mine")
    return Case(["evaluate", "--upstream", "mfcc", "--shards", str(x.shards), "--out", str(out)], [out, x.shards])


def _shard_onto_its_corpus(x):
    return shard_case(x, "--out", str(x.corpus), "--overwrite")


def _shard_inside_its_corpus(x):
    return shard_case(x, "--out", str(x.corpus / "audio"), "--overwrite")


def _shard_around_its_corpus(x):
    return shard_case(x, "--out", str(x.tmp), "--overwrite", intact=[x.corpus, x.shards])


def _features_onto_its_shards(x):
    return Case(["features", "--kind", "pitch", "--shards", str(x.shards), "--out", str(x.shards / "pitch")],
                [x.shards])


def _phone_start_not_a_number(x):
    (x.corpus / "meta.csv").write_text("path,text,phones,phone_start,phone_end\nu0.wav,a,a b,0.0 abc,0.1 0.2\n")
    return shard_case(x, "--metadata", str(x.corpus / "meta.csv"), "--out", str(x.tmp / "o"))


def _latin1_table(x):
    (x.corpus / "meta.csv").write_bytes("path,text\nu0.wav,caf\u00e9 cr\u00e8me\n".encode("latin-1"))
    return shard_case(x, "--metadata", str(x.corpus / "meta.csv"), "--out", str(x.tmp / "o"))


def _max_seconds_nan(x):
    return shard_case(x, "--out", str(x.tmp / "o"), "--set", "max_seconds=nan")


def _silence_peak_inf(x):
    return shard_case(x, "--out", str(x.tmp / "o"), "--set", "silence_peak=inf")


def _lr_zero(x):
    return Case(["pretrain", "--labels", str(x.tmp / "l"), "--shards", str(x.shards), "--out", str(x.tmp / "r"),
                 "--set", "lr=0"], [x.shards])


def _every_file_bad(x):
    bad = x.tmp / "bad"
    write_audio(bad / "silent.wav", np.zeros(8000, np.float32), subtype="PCM_16")
    (bad / "broken.flac").write_bytes(b"fLaC" + bytes(100))
    return shard_case(x, "--out", str(x.tmp / "o"), corpus=bad)


def _shard_while_locked(x):
    case = shard_case(x, "--out", str(x.shards), "--overwrite", intact=[x.corpus, x.shards])
    case.held.append(hold_lock(x.shards))
    return case


def hold_lock(out: Path):
    """The lock of the output `out`, held as another process would hold it (closing the file releases it)."""
    lock = open(out.parent / f".{out.name}.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return lock


def _pretrain_into_foreign(x):
    out = foreign_folder(x.tmp / "mine")
    return Case(pretrain_args(x, out), [out, *phone_inputs(x)])


def _report_over_its_input(x):
    return Case(["report", str(x.shards), "--out", str(x.tmp)], [x.shards])


# ---- data loss


def _input_named_like_a_leftover(x):
    old = x.tmp / ".corpus2.old"
    shutil.copytree(x.corpus, old)
    return shard_case(x, "--out", str(x.tmp / "corpus2"), *ALL_REJECTED, corpus=old)


def _user_folders_named_like_leftovers(x):
    mine = [x.tmp / ".shards.old", x.tmp / ".shards.my.tmp", x.tmp / ".shards.progre-work-abcd1234"]
    for folder in mine:
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
    return shard_case(x, "--out", str(x.shards), "--overwrite", *ALL_REJECTED, intact=[x.corpus, x.shards, *mine])


def _pretrain_into_a_labels_folder(x):
    labels = x.tmp / "labels"
    shutil.copytree(x.labels, labels)
    return Case(pretrain_args(x, labels), [labels, *phone_inputs(x)])


def _pretrain_into_a_feature_folder(x):
    features = x.tmp / "mfcc"
    shutil.copytree(x.mfcc, features)
    return Case(pretrain_args(x, features), [features, *phone_inputs(x)])


def _pretrain_into_an_evaluation(x):
    evaluation = marked(x.tmp / "eval", "progre evaluate")
    return Case(pretrain_args(x, evaluation), [evaluation, *phone_inputs(x)])


def _features_overwrite_a_labels_folder(x):
    labels = x.tmp / "labels"
    shutil.copytree(x.labels, labels)
    return Case(["features", "--kind", "mfcc", "--shards", str(x.shards), "--out", str(labels), "--overwrite"],
                [labels, x.shards])


def _killed_between_the_renames_then_a_failing_rerun(x):
    # the state a kill between the swap's two renames leaves: the output moved into the work folder's old/,
    # its replacement complete in new/, no output
    work = x.tmp / ".shards.progre-work-k1ll3d00"
    work.mkdir()
    (work / WORK_OWNER).write_text("progre\n")
    before = contents(x.shards)
    os.replace(x.shards, work / "old")
    shutil.copytree(work / "old", work / "new")

    def restored():
        assert contents(x.shards) == before and not work.exists()

    case = shard_case(x, "--out", str(x.shards), "--overwrite", *ALL_REJECTED)
    case.after = restored
    return case


def _overwrite_with_a_user_file_inside(x):
    x.monkeypatch.setattr(outputs, "COPY_SLACK_SECONDS", 0.0)
    marker = x.shards / MARKER
    marker.write_bytes(marker.read_bytes())  # written last, as by progre (the fixture's copy was not in order)
    stamp = marker.stat().st_ctime
    while time.time() < stamp + 0.05:  # the file clock ticks coarsely: the user's file comes later
        time.sleep(0.01)
    (x.shards / "notes.txt").write_text("mine")
    return shard_case(x, "--out", str(x.shards), "--overwrite", intact=[x.corpus, x.shards])


# ---- silently wrong


def _two_names_one_lock(x):
    link = x.tmp / "link"
    link.symlink_to(x.shards)
    case = shard_case(x, "--out", str(link), "--overwrite", intact=[x.corpus, x.shards, link])
    case.held.append(hold_lock(x.shards))
    return case


def _speakers_of_another_corpus(x):
    return Case(pretrain_args(x, x.tmp / "run", "--speakers", str(x.other_speakers), "--set", "speaker_labels=pseudo"),
                [*phone_inputs(x), x.other_speakers])


def _header_only_table(x):
    (x.corpus / "meta.csv").write_text("path,speaker\n")
    return shard_case(x, "--metadata", str(x.corpus / "meta.csv"), "--out", str(x.tmp / "o"))


def _empty_table(x):
    (x.corpus / "meta.csv").write_text("")
    return shard_case(x, "--metadata", str(x.corpus / "meta.csv"), "--out", str(x.tmp / "o"))


def _empty_parquet_table(x):
    pq.write_table(pa.table({"path": pa.array([], pa.string()), "speaker": pa.array([], pa.string())}),
                   x.corpus / "meta.parquet")
    return shard_case(x, "--metadata", str(x.corpus / "meta.parquet"), "--out", str(x.tmp / "o"))


def _unlisted_files(x):
    write_audio(x.corpus / "silent.wav", np.zeros(8000, np.float32), subtype="PCM_16")
    (x.corpus / "meta.csv").write_text("path,speaker\nsilent.wav,a\n")  # u0..u3.wav are not listed
    return shard_case(x, "--metadata", str(x.corpus / "meta.csv"), "--out", str(x.tmp / "o"))


def _path_above_the_corpus(x):
    (x.corpus / "meta.csv").write_text("path,speaker\nu0.wav,a\n../shards/u1.wav,b\n")
    return shard_case(x, "--metadata", str(x.corpus / "meta.csv"), "--out", str(x.tmp / "o"))


def _absolute_path_elsewhere(x):
    elsewhere = write_audio(x.tmp / "elsewhere" / "e.wav", tone(0.5), subtype="PCM_16")
    (x.corpus / "meta.csv").write_text(f"path,speaker\nu0.wav,a\n{elsewhere},b\n")
    return shard_case(x, "--metadata", str(x.corpus / "meta.csv"), "--out", str(x.tmp / "o"),
                      intact=[x.corpus, elsewhere])


def _unknown_split(x):
    (x.corpus / "meta.csv").write_text("path,split\nu0.wav,train\nu1.wav,trainwreck\n")
    return shard_case(x, "--metadata", str(x.corpus / "meta.csv"), "--out", str(x.tmp / "o"))


def _misspelled_params_section(x):
    (x.tmp / "params.yaml").write_text("sahrd:\n  workers: 1\n")
    return shard_case(x, "--params", str(x.tmp / "params.yaml"), "--out", str(x.tmp / "o"),
                      intact=[x.corpus, x.tmp / "params.yaml"])


def _names_that_gave_one_key(x):
    corpus = x.tmp / "keys"
    for i, name in enumerate(["c d.wav", "c_d.wav", "a_b/x.wav", "a/b/x.wav", "clip.mp3", "clip.ogg", "clip_mp3.wav"]):
        if name.endswith(".mp3"):
            sf.write(corpus / name, tone(0.5, 300 + 50 * i), 16000, format="MP3")
        else:
            write_audio(corpus / name, tone(0.5, 300 + 50 * i), subtype="VORBIS" if name.endswith(".ogg") else "PCM_16")

    def distinct():
        index = pq.read_table(x.tmp / "o" / "index.parquet").to_pylist()
        keys = {Path(r["source"]).relative_to(corpus).as_posix(): r["key"] for r in index}
        assert keys == {"c d.wav": "c=20d", "c_d.wav": "c_d", "a_b/x.wav": "a_b=2Fx", "a/b/x.wav": "a=2Fb=2Fx",
                        "clip.mp3": "clip=2Emp3", "clip.ogg": "clip_ogg", "clip_mp3.wav": "clip_mp3"}
        assert not pq.read_table(x.tmp / "o" / "rejects.parquet").num_rows

    return Case(["shard", str(corpus), "--out", str(x.tmp / "o"), *ONE_WORKER], [corpus], after=distinct, code=0)


def _broken_link_and_unreadable_folder(x):
    corpus = x.tmp / "c"
    corpus.mkdir()
    (corpus / "gone.wav").symlink_to(x.tmp / "nowhere.wav")
    locked = corpus / "locked"
    write_audio(locked / "u.wav", tone(0.5), subtype="PCM_16")
    scandir = os.scandir

    def unreadable(path="."):  # a folder without read permission (chmod does not stop root, who runs CI)
        if isinstance(path, (str, Path)) and Path(path) == locked:  # (scandir also takes file descriptors)
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)

    x.monkeypatch.setattr(os, "scandir", unreadable)
    return shard_case(x, "--out", str(x.tmp / "o"), corpus=corpus)


# ---- tracebacks


def _overwrite_through_a_link(x):
    link = x.tmp / "link"
    link.symlink_to(x.shards)
    before = contents(x.shards)

    def replaced_through_the_link():
        assert link.is_symlink() and os.readlink(link) == str(x.shards)
        after = contents(x.shards)
        assert sorted(after) == sorted(before) and after[MARKER] == before[MARKER]
        assert after["index.parquet"] != before["index.parquet"]  # written again, from this corpus
        assert pq.read_table(x.shards / "index.parquet").column("source")[0].as_py().startswith(str(x.corpus))
        assert sorted(p.name for p in x.tmp.iterdir() if p.name.startswith(".")) == [".shards.lock"]

    return Case(["shard", str(x.corpus), "--out", str(link), "--overwrite", *ONE_WORKER], [x.corpus], code=0,
                after=replaced_through_the_link)


def _dangling_link_out(x):
    (x.tmp / "link").symlink_to(x.tmp / "nowhere" / "o")
    return shard_case(x, "--out", str(x.tmp / "link"), intact=[x.corpus, x.tmp / "link"])


def _cache_given_a_file(x):
    (x.tmp / "cache").write_text("not a folder")
    return Case(["evaluate", "--upstream", "mfcc", "--shards", str(x.shards), "--out", str(x.tmp / "e"),
                 "--cache", str(x.tmp / "cache")], [x.shards, x.tmp / "cache"])


def _name_of_260_characters(x):
    return shard_case(x, "--out", str(x.tmp / ("n" * 260)))


def _name_too_long_for_what_progre_adds(x):
    return shard_case(x, "--out", str(x.tmp / ("n" * 240)))


def _parquet_table_with_integer_paths(x):
    pq.write_table(pa.table({"path": [0, 1], "speaker": ["a", "b"]}), x.corpus / "meta.parquet")
    return shard_case(x, "--metadata", str(x.corpus / "meta.parquet"), "--out", str(x.tmp / "o"))


def _parquet_table_with_float_phones(x):
    pq.write_table(pa.table({"path": ["u0.wav"], "phones": [[1.5, 2.5]]}), x.corpus / "meta.parquet")
    return shard_case(x, "--metadata", str(x.corpus / "meta.parquet"), "--out", str(x.tmp / "o"))


def _params_file_not_utf8(x):
    (x.tmp / "params.yaml").write_bytes("shard:\n  workers: 1  # caf\u00e9\n".encode("latin-1"))
    return shard_case(x, "--params", str(x.tmp / "params.yaml"), "--out", str(x.tmp / "o"),
                      intact=[x.corpus, x.tmp / "params.yaml"])


def _evaluate_without_learning_rates(x):
    return Case(["evaluate", "--upstream", "mfcc", "--shards", str(x.shards), "--out", str(x.tmp / "e"),
                 "--set", "lr=[]"], [x.shards])


def disk_full_while(x: Inputs, target: str, error: Exception) -> None:
    """`target` (module.name) raises `error` as a library does on a full disk, and the disk has no room."""
    def full(*args, **kwargs):
        raise error

    x.monkeypatch.setattr(target, full)
    x.monkeypatch.setattr(outputs, "free_bytes", lambda folder: 0)


def _disk_full_in_pretrain(x):
    from safetensors import SafetensorError

    disk_full_while(x, "progre.model.checkpoint.save_file",
                    SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    return Case(pretrain_args(x, x.tmp / "run"), phone_inputs(x))


def _disk_full_in_export(x):
    from safetensors import SafetensorError

    disk_full_while(x, "progre.model.checkpoint.save_file",
                    SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    return Case(["export", str(x.model), "--out", str(x.tmp / "exported")], [x.model])


def _disk_full_in_synth(x):
    disk_full_while(x, "progre.data.synth.write_utterance", sf.LibsndfileError(2))  # "System error."
    return Case(["synth", "--out", str(x.tmp / "corpus2"), "--preset", "tiny", "--set", "workers=1"], [x.corpus])


def _truncated_feature_part(x):
    pitch = x.tmp / "pitch"
    shutil.copytree(x.pitch, pitch)
    half(pitch / "part-000-of-001.npy")
    return Case(pretrain_args(x, x.tmp / "run") + ["--pitch", str(pitch)], [x.phone_shards, x.labels])


def _truncated_hidden_state_cache(x):
    cache = x.tmp / "cache"
    shutil.copytree(x.cache, cache)
    half(next(cache.glob("mfcc-*/part-000-of-001.npy")))
    return Case(["evaluate", "--upstream", "mfcc", "--shards", str(x.phone_shards), "--out", str(x.tmp / "e"),
                 "--cache", str(cache), "--set", "tasks=[sid]"], [x.phone_shards])


def _truncated_shard(x):
    half(x.shards / "train-000000.tar")
    return Case(["features", "--kind", "mfcc", "--shards", str(x.shards), "--out", str(x.tmp / "f")], [x.shards])


def _truncated_labels(x):
    labels = x.tmp / "labels"
    shutil.copytree(x.labels, labels)
    half(labels / "labels.parquet")
    return Case(pretrain_args(x, x.tmp / "run", labels=labels), phone_inputs(x))


# ---- litter


def _out_dot(x):
    here = x.tmp / "here"
    here.mkdir()

    def no_lock_named_dotdot():
        assert not list(x.tmp.rglob("..lock")) and not any(here.iterdir())

    return Case(["shard", str(x.corpus), "--out", "."], [x.corpus], cwd=here, after=no_lock_named_dotdot)


def _cache_inside_an_input(x):
    return Case(["evaluate", "--upstream", "mfcc", "--shards", str(x.shards), "--out", str(x.tmp / "e"),
                 "--cache", str(x.shards / "cache")], [x.shards],
                after=lambda: (not (x.shards / "cache").exists()) or pytest.fail("wrote into the shards"))


def _cache_in_a_user_folder(x):
    mine = foreign_folder(x.tmp / "mine")
    return Case(["evaluate", "--upstream", "mfcc", "--shards", str(x.shards), "--out", str(x.tmp / "e"),
                 "--cache", str(mine)], [x.shards, mine])


def _failed_pretrain_leaves_no_run_folder(x):
    args = [a for a in pretrain_args(x, x.tmp / "run") if a not in ("--pitch", str(x.pitch))]
    return Case(args, [x.phone_shards, x.labels],
                after=lambda: (not (x.tmp / "run").exists()) or pytest.fail("an empty run folder was left"))


CASES: dict[str, tuple[Callable[[Inputs], Case], str]] = {
    # the first probe
    "features into a folder of other files": (_features_into_foreign, r"mine already exists \(pass --overwrite"),
    "features --overwrite of a folder progre did not write": (_features_overwrite_foreign, "mine holds files that "
                                                                                           "progre did not write"),
    "cluster --overwrite of a folder progre did not write": (_cluster_overwrite_foreign, "progre did not write"),
    "evaluate into a folder of other files": (_evaluate_into_foreign, "mine already exists"),
    "shard --out its own corpus": (_shard_onto_its_corpus, "corpus is the input"),
    "shard --out inside its corpus": (_shard_inside_its_corpus, "audio is inside the input"),
    "shard --out a folder holding its corpus": (_shard_around_its_corpus, "holds the input .*corpus"),
    "features --out inside its shards": (_features_onto_its_shards, "pitch is inside the input"),
    "non-numeric phone_start": (_phone_start_not_a_number, r"meta.csv, line 2: phone_start value 'abc' is not a "
                                                           r"number"),
    "latin-1 metadata table": (_latin1_table, r"meta.csv is not UTF-8 text \(byte 0xe9"),
    "max_seconds=nan": (_max_seconds_nan, r"--set max_seconds: expected a finite number, got 'nan'"),
    "silence_peak=inf": (_silence_peak_inf, r"--set silence_peak: expected a finite number"),
    "lr=0": (_lr_zero, r"--set lr: 0.0 must be above 0.0"),
    "every file of the corpus is bad": (_every_file_bad, r"bad: every input was rejected \(1 silent, 1 unreadable\)"),
    "a second run into an output in use": (_shard_while_locked, r"another progre run is writing .*shards"),
    "pretrain into a folder of other files": (_pretrain_into_foreign, "mine holds files that progre did not write"),
    "report over its own input": (_report_over_its_input, "holds the input .*shards"),
    # data loss
    "an input named like a leftover of the output": (_input_named_like_a_leftover, r"\.corpus2\.old: every input "
                                                                                   r"was rejected"),
    "user folders named like leftovers beside the output": (_user_folders_named_like_leftovers, "corpus: every input "
                                                                                               "was rejected"),
    "pretrain --out a labels folder": (_pretrain_into_a_labels_folder, r"labels holds the output of `progre "
                                                                       r"cluster`"),
    "pretrain --out a feature folder": (_pretrain_into_a_feature_folder, r"mfcc holds the output of `progre "
                                                                         r"features`"),
    "pretrain --out an evaluation": (_pretrain_into_an_evaluation, r"eval holds the output of `progre evaluate`"),
    "features --overwrite of a labels folder": (_features_overwrite_a_labels_folder, r"labels holds the output of "
                                                                                     r"`progre cluster`"),
    "killed between the swap's renames, then a rerun that fails": (_killed_between_the_renames_then_a_failing_rerun,
                                                                  "corpus: every input was rejected"),
    "--overwrite of a progre folder the user put a file into": (_overwrite_with_a_user_file_inside,
                                                               r"shards holds notes.txt, changed after progre shard "
                                                               r"wrote the folder"),
    # silently wrong
    "two names of one output share its lock": (_two_names_one_lock, r"another progre run is writing .*shards"),
    "--speakers of another corpus": (_speakers_of_another_corpus, r"other_speakers belong to another corpus"),
    "a header-only metadata table": (_header_only_table, r"meta.csv has a header but no rows"),
    "an empty metadata table": (_empty_table, r"meta.csv is empty"),
    "a parquet metadata table without rows": (_empty_parquet_table, r"meta.parquet has a header but no rows"),
    "audio files the table does not list": (_unlisted_files, r"every input was rejected \(4 not in the metadata "
                                                             r"table, 1 silent\)"),
    "a table path above the corpus": (_path_above_the_corpus, r"meta.csv, line 3: path '../shards/u1.wav' lies "
                                                              r"outside the corpus folder"),
    "a table path elsewhere": (_absolute_path_elsewhere, r"meta.csv, line 3: path '.*elsewhere/e.wav' lies outside"),
    "an unknown split": (_unknown_split, r"meta.csv, line 3: unknown split 'trainwreck'"),
    "a misspelled params section": (_misspelled_params_section, r"params.yaml: unknown section sahrd \(did you mean "
                                                                r"shard\?\)"),
    "names that gave one key": (_names_that_gave_one_key, ""),
    "a broken link and an unreadable folder": (_broken_link_and_unreadable_folder,
                                               r"c: no usable audio found \(2 rejected: 1 broken symbolic link, 1 "
                                               r"folder cannot be read\)"),
    # tracebacks
    "--overwrite through a link to the output": (_overwrite_through_a_link, ""),
    "a dangling link --out": (_dangling_link_out, r"--out .*link is a symbolic link to .*nowhere/o, which does not "
                                                  r"exist"),
    "--cache given a file": (_cache_given_a_file, r"--cache .*cache is a file, not a folder"),
    "a 260-character name": (_name_of_260_characters, r"--out .*nnnn: the name n+\.\.\. is 260 bytes long"),
    "a name with no room for progre's names beside it": (_name_too_long_for_what_progre_adds,
                                                         r"--out .*nnn: the name is 240 bytes long"),
    "a parquet table with integer paths": (_parquet_table_with_integer_paths, r"meta.parquet: column path holds "
                                                                              r"int64 values, expected text"),
    "a parquet table with float phones": (_parquet_table_with_float_phones, r"meta.parquet: column phones holds "
                                                                            r"list<.*double> values"),
    "a params file that is not UTF-8": (_params_file_not_utf8, r"params.yaml is not UTF-8 text \(byte 0xe9"),
    "evaluate --set lr=[]": (_evaluate_without_learning_rates, r"--set lr: give at least one learning rate"),
    "a full disk in pretrain": (_disk_full_in_pretrain, r"cannot write .*run: the disk is full \(SafetensorError"),
    "a full disk in export": (_disk_full_in_export, r"cannot write .*exported: the disk is full"),
    "a full disk in synth": (_disk_full_in_synth, r"cannot write .*corpus2: the disk is full \(LibsndfileError"),
    "a truncated feature part": (_truncated_feature_part, r"pitch/part-000-of-001.npy cannot be read"),
    "a truncated hidden-state cache": (_truncated_hidden_state_cache, r"part-000-of-001.npy cannot be read .* a "
                                                                      r"damaged hidden-state cache entry"),
    "a truncated shard": (_truncated_shard, r"shards/train-000000.tar is truncated"),
    "a truncated labels.parquet": (_truncated_labels, r"labels/labels.parquet cannot be read"),
    # litter
    "--out .": (_out_dot, r"--out .*here is the current folder"),
    "--cache inside an input": (_cache_inside_an_input, r"--cache .*shards/cache is inside the input"),
    "--cache a folder of other files": (_cache_in_a_user_folder, r"--cache .*mine holds thesis.tex, which progre's "
                                                                 r"caches do not write"),
    "a failed pretrain": (_failed_pretrain_leaves_no_run_folder, r"the ProgRE model needs --pitch"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, inputs, monkeypatch, capsys):
    setup, message = CASES[case]
    run = setup(inputs)
    before = snapshot(*run.intact)
    try:
        code, stderr = run_cli(monkeypatch, capsys, run.cwd or inputs.tmp, *run.args)
    finally:
        for lock in run.held:
            lock.close()
    lines = stderr.strip().splitlines()
    assert code == run.code, stderr
    assert "Traceback" not in stderr
    if run.code == 2:
        assert len([line for line in lines if line.startswith("error: ")]) == 1 and lines[-1].startswith("error: ")
        assert re.search(message, lines[-1]), lines[-1]
    assert snapshot(*run.intact) == before
    if run.after is not None:
        run.after()


# --------------------------------------------------------------------------- what the cases now do


def test_unlisted_files_are_kept_when_asked(tmp_path):
    root = small_corpus(tmp_path / "c")
    (root / "meta.csv").write_text("path,speaker,split\nu0.wav,a,dev-clean\n")
    shard_stage.run(ShardParams(workers=1, keep_unlisted=True), root, tmp_path / "s", metadata=root / "meta.csv")
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "s" / "index.parquet").to_pylist()}
    assert sorted(rows) == ["u0", "u1", "u2", "u3"]
    assert (rows["u0"]["speaker"], rows["u0"]["split"]) == ("a", "valid") and rows["u1"]["speaker"] is None


def test_a_swap_killed_after_both_renames_is_finished_by_the_next_run(tmp_path):
    corpus = small_corpus(tmp_path / "c")
    out = tmp_path / "s"
    shard_stage.run(ShardParams(workers=1), corpus, out)
    work = tmp_path / ".s.progre-work-abcdefgh"  # killed while removing the replaced output
    (work / "old").mkdir(parents=True)
    (work / WORK_OWNER).write_text("progre\n")
    (work / "old" / "stale.tar").write_bytes(bytes(10))
    kept = tmp_path / ".s.progre-work-12345678"  # a previous output and its replacement, and the output exists
    for part in ("old", "new"):
        (kept / part).mkdir(parents=True)
    (kept / WORK_OWNER).write_text("progre\n")
    shard_stage.run(ShardParams(workers=1), corpus, out, overwrite=True)
    assert not work.exists() and kept.exists()


def test_speakers_written_before_the_fingerprint_are_read(built, tmp_path):
    from progre.cluster.speakers import read_speakers
    from progre.data.shards import Shards

    table = pq.read_table(built["base"] / "other_speakers" / "speakers.parquet")
    (tmp_path / "old").mkdir()
    pq.write_table(table.replace_schema_metadata({}), tmp_path / "old" / "speakers.parquet")
    assert read_speakers(tmp_path / "old", Shards(built["phone_shards"])) == read_speakers(built["base"] /
                                                                                           "other_speakers")


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


def test_an_unwritable_or_full_output_is_one_line(tmp_path, monkeypatch, capsys):
    import progre.data.sharding as sharding

    corpus = small_corpus(tmp_path / "corpus")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "train-000000.tar"))

    monkeypatch.setattr(sharding.TarShardWriter, "write", full)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, "shard", str(corpus), "--out", str(tmp_path / "o"),
                           *ONE_WORKER)
    assert code == 2 and stderr.strip().splitlines()[-1].startswith(f"error: cannot write {tmp_path / 'o'}: "
                                                                     f"the disk is full")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.progre-work-*"))
    monkeypatch.undo()

    def forbidden(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr("tempfile.mkdtemp", forbidden)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, "shard", str(corpus), "--out", str(tmp_path / "o"),
                           *ONE_WORKER)
    assert code == 2 and "cannot write" in stderr and "Permission denied" in stderr


def test_file_system_errors_no_reader_names_are_one_line_at_the_boundary(tmp_path, monkeypatch, capsys):
    import stages.shard

    def fails(*args, **kwargs):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(tmp_path / "x"))

    monkeypatch.setattr(stages.shard, "run", fails)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, "shard", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and stderr.strip() == f"error: {tmp_path / 'x'}: Is a directory"


# --------------------------------------------------------------------------- the policy


def test_leftovers_of_killed_runs_are_removed_by_the_next_run(tmp_path):
    corpus = small_corpus(tmp_path / "c")
    out = tmp_path / "s"
    killed = tmp_path / ".s.progre-work-k1ll3d00"
    (killed / "new").mkdir(parents=True)
    (killed / WORK_OWNER).write_text("progre\n")
    (killed / "new" / "train-000000.tar").write_bytes(bytes(1000))
    unmarked = tmp_path / ".s.progre-work-n0mark00"  # named alike, but not progre's: not touched
    unmarked.mkdir()
    (unmarked / "notes.txt").write_text("mine")
    other = tmp_path / ".other.progre-work-abcdefgh"  # another output's: not touched
    (other / "new").mkdir(parents=True)
    (other / WORK_OWNER).write_text("progre\n")
    legacy = [tmp_path / ".s.k1ll3d.tmp", tmp_path / ".s.old"]  # the names of earlier versions: not touched
    for folder in legacy:
        folder.mkdir()
    shard_stage.run(ShardParams(workers=1), corpus, out)
    assert not killed.exists() and unmarked.exists() and other.exists() and all(f.exists() for f in legacy)
    assert (out / MARKER).is_file() and (out / "index.parquet").is_file()


def test_overwrite_replaces_only_what_progre_wrote_and_the_marker_is_fixed(tmp_path):
    corpus = small_corpus(tmp_path / "c")
    out = tmp_path / "s"
    shard_stage.run(ShardParams(workers=1), corpus, out)
    first = snapshot(out)
    assert json.loads((out / MARKER).read_text()) == {"written_by": "progre shard"}
    shard_stage.run(ShardParams(workers=1), corpus, out, overwrite=True)
    assert snapshot(out) == first  # reruns are byte-identical, the marker included
    with output_folder(tmp_path / "empty", "test") as tmp:  # an absent or empty folder needs no --overwrite
        (tmp / "x").write_text("1")
    assert (tmp_path / "empty" / "x").read_text() == "1"


def test_a_failed_run_leaves_the_previous_output(tmp_path):
    corpus = small_corpus(tmp_path / "c")
    out = tmp_path / "s"
    shard_stage.run(ShardParams(workers=1), corpus, out)
    before = snapshot(out)
    with pytest.raises(RuntimeError):
        with output_folder(out, "shard", overwrite=True) as tmp:
            (tmp / "half").write_text("half")
            raise RuntimeError("killed")
    assert snapshot(out) == before and not list(tmp_path.glob(".s.progre-work-*"))


def test_table_rows_of_a_parquet_metadata_keep_explicit_keys(tmp_path):
    root = small_corpus(tmp_path / "c")
    pq.write_table(pa.Table.from_pylist([{"path": "u0.wav", "key": "first"}, {"path": "u1.wav", "key": "first"},
                                         {"path": "u2.wav", "key": "third"}, {"path": "u3.wav", "key": "fourth"}]),
                   root / "meta.parquet")
    shard_stage.run(ShardParams(workers=1), root, tmp_path / "s", metadata=root / "meta.parquet")
    rejects = pq.read_table(tmp_path / "s" / "rejects.parquet").to_pylist()
    assert [r["reason"].split(" (")[0] for r in rejects] == ["duplicate key first"]  # the user's keys: not renamed
