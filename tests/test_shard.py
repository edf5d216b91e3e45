"""progre shard: corpus readers, bad-input handling, determinism and the round trip through the reader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from progre.audio import resample
from progre.config import ShardParams
from progre.data.corpus import read_corpus, sanitize_key
from progre.data.shards import Shards
from progre.errors import UserError
from stages import shard as shard_stage

from .conftest import noise, tone, write_audio

Q16 = 1.0 / 32768  # one step of 16-bit quantisation


def rejects_of(out: Path) -> dict[str, str]:
    return {Path(r["path"]).name: r["reason"] for r in pq.read_table(out / "rejects.parquet").to_pylist()}


def test_bad_inputs_are_handled_or_rejected_with_reasons(messy_corpus, tmp_path):
    out = tmp_path / "shards"
    summary = shard_stage.run(ShardParams(workers=1), messy_corpus, out)
    keys = Shards(out).keys()
    assert sorted(keys) == ["good_a1", "good_a2", "narrow8k", "stereo48k"]
    reasons = rejects_of(out)
    assert reasons["silent.wav"].startswith("silent")
    assert reasons["nan.wav"].startswith("non-finite")
    assert reasons["inf.wav"].startswith("non-finite")
    assert reasons["short.wav"].startswith("too short")
    assert reasons["corrupt.flac"].startswith("unreadable")
    assert reasons["text.ogg"].startswith("unreadable")
    assert reasons["empty.wav"].startswith("empty file")
    assert summary["rejected"] == 7 and summary["utterances"] == 4
    assert sum(summary["rejects_by_reason"].values()) == 7


def test_round_trip_equals_source_within_16_bit_quantisation(messy_corpus, tmp_path):
    out = tmp_path / "shards"
    shard_stage.run(ShardParams(workers=1), messy_corpus, out)
    got = {u.key: u for u in Shards(out).stream()}

    import soundfile as sf

    a1, _ = sf.read(messy_corpus / "good" / "a1.wav", dtype="float32")
    np.testing.assert_allclose(got["good_a1"].wav, a1, atol=Q16)  # 16-bit source: exact up to float
    stereo, rate = sf.read(messy_corpus / "stereo48k.wav", dtype="float32")
    expected = resample(stereo.mean(axis=1).astype(np.float32), rate)
    assert got["stereo48k"].meta["channels_in"] == 2 and got["stereo48k"].meta["sample_rate_in"] == 48000
    assert len(got["stereo48k"].wav) == 8000
    np.testing.assert_allclose(got["stereo48k"].wav, expected, atol=Q16)
    narrow, _ = sf.read(messy_corpus / "narrow8k.wav", dtype="float32")
    assert len(got["narrow8k"].wav) == 2 * len(narrow)
    for utt in got.values():
        assert utt.meta["num_samples"] == len(utt.wav)


def test_24_bit_storage_keeps_float_detail(tmp_path):
    quiet = (noise(0.5, seed=9) * 1e-3).astype(np.float32)  # detail far below one 16-bit step
    write_audio(tmp_path / "c" / "q.wav", quiet, subtype="FLOAT")
    out = tmp_path / "s"
    shard_stage.run(ShardParams(workers=1, flac_subtype="PCM_24", silence_peak=1e-6), tmp_path / "c", out)
    (utt,) = list(Shards(out).stream())
    np.testing.assert_allclose(utt.wav, quiet, atol=1.0 / 2**23)


def test_reruns_give_byte_identical_shards_and_pool_matches_inline(messy_corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shard_stage.run(ShardParams(workers=1, max_shard_items=2), messy_corpus, a)
    shard_stage.run(ShardParams(workers=2, max_shard_items=2), messy_corpus, b)
    tars = sorted(p.name for p in a.glob("*.tar"))
    assert tars == ["train-000000.tar", "train-000001.tar"]
    assert tars == sorted(p.name for p in b.glob("*.tar"))
    for name in tars + ["index.parquet"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_shard_size_bound(tmp_path):
    for i in range(5):
        write_audio(tmp_path / "c" / f"u{i}.wav", noise(1.0, seed=i), subtype="PCM_16")
    out = tmp_path / "s"
    shard_stage.run(ShardParams(workers=1, max_shard_mb=0.06), tmp_path / "c", out)  # ~2 x 1 s FLAC noise
    counts = {}
    for shard in Shards(out).index.column("shard").to_pylist():
        counts[shard] = counts.get(shard, 0) + 1
    assert len(counts) >= 2 and max(counts.values()) <= 2
    assert all((out / name).stat().st_size <= 0.06e6 for name in counts)


def test_metadata_table_labels_splits_missing_files_duplicates_and_phone_mismatch(tmp_path):
    root = tmp_path / "c"
    for name in ("s1", "s2", "s3", "s4"):
        write_audio(root / f"{name}.wav", noise(0.5, seed=len(name)), subtype="PCM_16")
    (root / "meta.tsv").write_text(
        "path\tkey\tspeaker\ttext\tsplit\tphones\tphone_start\tphone_end\n"
        "s1.wav\tutt_1\tA\thello\ttrain\th e l o\t0 0.1 0.2 0.3\t0.1 0.2 0.3 0.4\n"
        "s2.wav\tutt_2\tB\tworld\tdev\t\t\t\n"
        "s3.wav\tutt_1\tA\tagain\ttest\t\t\t\n"
        "missing.wav\tutt_9\tA\tnope\ttrain\t\t\t\n"
        "s4.wav\tutt_4\tB\tbad phones\ttest\ta b\t0 0.1 0.2\t0.1 0.2 0.3\n")
    out = tmp_path / "s"
    shard_stage.run(ShardParams(workers=1), root, out, metadata=root / "meta.tsv")
    index = {r["key"]: r for r in Shards(out).rows()}
    assert set(index) == {"utt_1", "utt_2"}
    assert index["utt_1"]["phones"] == ["h", "e", "l", "o"] and index["utt_1"]["phone_end"][-1] == 0.4
    assert index["utt_2"]["split"] == "valid" and index["utt_2"]["speaker"] == "B"
    reasons = rejects_of(out)
    assert reasons["missing.wav"] == "audio file missing"
    assert reasons["s3.wav"].startswith("duplicate key utt_1")
    assert "phone_start has 3 values but phones has 2" in reasons["s4.wav"]


def test_librispeech_layout(tmp_path):
    root = tmp_path / "LibriSpeech"
    for subset, spk in (("train-clean-100", "19"), ("dev-clean", "84"), ("test-clean", "61")):
        chapter = root / subset / spk / "100"
        write_audio(chapter / f"{spk}-100-0000.flac", noise(0.5, seed=int(spk)), subtype="PCM_16")
        (chapter / f"{spk}-100.trans.txt").write_text(f"{spk}-100-0000 HELLO WORLD\n{spk}-100-0001 NO AUDIO\n")
    items, rejects = read_corpus(root)
    assert [(i.key, i.meta["split"], i.meta["speaker"], i.meta["text"]) for i in items] == [
        ("19-100-0000", "train", "19", "HELLO WORLD"),
        ("84-100-0000", "valid", "84", "HELLO WORLD"),
        ("61-100-0000", "test", "61", "HELLO WORLD")]
    assert sorted(r.reason for r in rejects) == ["audio file missing"] * 3
    single, _ = read_corpus(root / "dev-clean")  # a subset folder on its own
    assert [i.meta["split"] for i in single] == ["valid"]


def test_fairseq_manifest_with_words(tmp_path):
    audio = tmp_path / "audio"
    write_audio(audio / "x" / "u1.flac", noise(0.5, seed=1), subtype="PCM_16")
    write_audio(audio / "x" / "u2.flac", noise(0.5, seed=2), subtype="PCM_16")
    (tmp_path / "valid.tsv").write_text(f"{audio}\nx/u1.flac\t8000\nx/u2.flac\t8000\n")
    (tmp_path / "valid.wrd").write_text("first one\nsecond one\n")
    items, rejects = read_corpus(tmp_path / "valid.tsv")
    assert [(i.key, i.meta["split"], i.meta["text"]) for i in items] == [
        ("x_u1", "valid", "first one"), ("x_u2", "valid", "second one")]
    assert not rejects
    (tmp_path / "valid.wrd").write_text("only one line\n")
    with pytest.raises(UserError, match="1 lines but"):
        read_corpus(tmp_path / "valid.tsv")


def test_keys_have_no_dots():
    assert sanitize_key("a/b.c d.wav") == "a_b_c_d_wav"
    assert "." not in sanitize_key("speaker.1/utt.2")


def test_user_errors(tmp_path, messy_corpus):
    with pytest.raises(UserError, match="does not exist"):
        shard_stage.run(ShardParams(), tmp_path / "nope", tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        shard_stage.run(ShardParams(), messy_corpus, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no usable audio"):
        shard_stage.run(ShardParams(), tmp_path / "empty", tmp_path / "out2")


def test_cli_error_is_one_line_and_nonzero(tmp_path):
    result = subprocess.run([sys.executable, "-m", "progre.cli", "shard", str(tmp_path / "missing"),
                             "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_interrupted_run_leaves_nothing_that_looks_complete(messy_corpus, tmp_path, monkeypatch):
    from progre.data import sharding

    calls = {"n": 0}
    real = sharding.encode_item

    def failing(item, params):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(item, params)

    monkeypatch.setattr(sharding, "encode_item", failing)
    out = tmp_path / "shards"
    with pytest.raises(KeyboardInterrupt):
        shard_stage.run(ShardParams(workers=1, max_shard_items=1), messy_corpus, out)
    assert not out.exists()
    assert not list(tmp_path.rglob("*.tar")) and not list(tmp_path.rglob("index.parquet"))


def test_rank_splitting_covers_every_utterance_once(tmp_path):
    for i in range(7):
        write_audio(tmp_path / "c" / f"u{i}.wav", tone(0.1 + 0.01 * i, 200 + 10 * i), subtype="PCM_16")
    for items_per_shard in (1, 100):  # by shard, and by position when shards < ranks
        out = tmp_path / f"s{items_per_shard}"
        shard_stage.run(ShardParams(workers=1, max_shard_items=items_per_shard), tmp_path / "c", out)
        parts = [[u.key for u in Shards(out).stream("train", rank=r, world_size=3)] for r in range(3)]
        flat = [k for part in parts for k in part]
        assert sorted(flat) == sorted(Shards(out).keys())
        assert len(flat) == len(set(flat)) and all(parts)


def test_stream_reads_shards_in_name_order_and_members_in_stored_order(messy_corpus, tmp_path):
    import io
    import json
    import tarfile

    import soundfile as sf

    out = tmp_path / "s"
    shard_stage.run(ShardParams(workers=1, max_shard_items=2), messy_corpus, out)
    shards = Shards(out)
    expected = []  # read back with plain tarfile, as any WebDataset reader would
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as f:
            members = {m.name: f.extractfile(m).read() for m in f}
        for name in sorted(members):
            key, ext = name.split(".", 1)
            if ext == "flac":
                expected.append((key, sf.read(io.BytesIO(members[name]), dtype="float32")[0],
                                 json.loads(members[f"{key}.json"])))
    streamed = list(shards.stream())
    assert [u.key for u in streamed] == [k for k, _, _ in expected]
    for utt, (_, wav, meta) in zip(streamed, expected):
        np.testing.assert_array_equal(utt.wav, wav)
        assert utt.meta == meta
    assert [u.key for u in shards.stream("train", keys={"good_a2", "narrow8k"})] == ["good_a2", "narrow8k"]
    assert len(shards.fingerprint) == 16 and len(shards) == 4
    assert isinstance(shards.table("train"), pa.Table) and shards.keys("test") == []
    with pytest.raises(UserError, match="unknown split"):
        shards.keys("dev")
    with pytest.raises(UserError, match="not a shard folder"):
        Shards(tmp_path)


def test_index_offsets_give_random_access_to_the_audio(messy_corpus, tmp_path):
    out = tmp_path / "s"
    shard_stage.run(ShardParams(workers=1, max_shard_items=2), messy_corpus, out)
    shards = Shards(out)
    streamed = {u.key: u.wav for u in shards.stream()}
    for row in shards.rows():
        np.testing.assert_array_equal(shards.read_audio(row["shard"], row["flac_offset"], row["flac_bytes"]),
                                      streamed[row["key"]])
