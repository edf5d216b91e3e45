"""SUPERB's corpora as published (progre/data/superb_corpora.py) and phones from a lexicon
(progre/data/lexicon.py): each layout built tiny in the test, sharded, its splits and labels checked,
and its bad or missing parts named in one line or listed as rejects."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from progre.config import ShardParams, load_params
from progre.data.corpus import detect_format, read_corpus
from progre.data.shards import Shards
from progre.downstream.enhancement import paired_view
from progre.errors import UserError
from progre.log import logger
from stages import shard as shard_stage

from .conftest import noise, tone, write_audio


def _wav(path: Path, seed: int, seconds: float = 0.3) -> None:
    write_audio(path, tone(seconds, 150.0 + 10 * (seed % 40)) + noise(seconds, amp=0.01, seed=seed), subtype="PCM_16")


def _rejects(out: Path) -> list[tuple[str, str, str]]:
    return [(r["key"], Path(r["path"]).name, r["reason"]) for r in pq.read_table(out / "rejects.parquet").to_pylist()]


def _one_line_error(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------- VoxCeleb1


def voxceleb1(root: Path, folders=("wav",)) -> Path:
    """Three speakers; utterances spread over `folders` (one wav/, or s3prl's dev/wav and test/wav)."""
    files = ["id10001/1zcIwhmdeo4/00001.wav", "id10001/1zcIwhmdeo4/00002.wav", "id10001/7w0IBEWc9Qw/00001.wav",
             "id10002/C_FxV-qG9_s/00001.wav", "id10003/na8-QEFmj44/00001.wav", "id10003/na8-QEFmj44/00003.wav"]
    for i, rel in enumerate(files):
        _wav(root / folders[i % len(folders)] / rel, i)
    return root


VOXCELEB1_SPLIT = ("1 id10001/1zcIwhmdeo4/00001.wav\n1 id10001/7w0IBEWc9Qw/00001.wav\n2 id10001/1zcIwhmdeo4/00002.wav\n"
                   "1 id10002/C_FxV-qG9_s/00001.wav\n3 id10003/na8-QEFmj44/00001.wav\n"
                   "3 id10003/na8-QEFmj44/00002.wav\n")  # 00002 of id10003 is missing; its 00003 is unlisted


def test_voxceleb1_shards_with_superb_sid_split(tmp_path):
    root = voxceleb1(tmp_path / "VoxCeleb1")
    (root / "iden_split.txt").write_text(VOXCELEB1_SPLIT)
    assert detect_format(root) == "voxceleb1"
    out = tmp_path / "shards"
    summary = shard_stage.run(ShardParams(workers=1), root, out)
    rows = {r["key"]: (r["split"], r["speaker"]) for r in Shards(out).rows()}
    assert rows == {"id10001_1zcIwhmdeo4_00001": ("train", "id10001"), "id10001_7w0IBEWc9Qw_00001": ("train", "id10001"),
                    "id10002_C_FxV-qG9_s_00001": ("train", "id10002"),
                    "id10001_1zcIwhmdeo4_00002": ("valid", "id10001"), "id10003_na8-QEFmj44_00001": ("test", "id10003")}
    assert all("." not in key for key in rows)
    assert summary["splits"]["train"]["speakers"] == 2
    assert sorted(_rejects(out)) == [("id10003_na8-QEFmj44_00002", "00002.wav", "audio file missing"),
                                     ("id10003_na8-QEFmj44_00003", "00003.wav", "not in iden_split.txt")]


def test_voxceleb1_in_s3prl_dev_and_test_folders_with_the_split_file_elsewhere(tmp_path):
    root = voxceleb1(tmp_path / "VoxCeleb1", folders=("dev/wav", "test/wav"))
    split_file = tmp_path / "meta" / "iden_split.txt"
    split_file.parent.mkdir()
    split_file.write_text(VOXCELEB1_SPLIT)
    assert detect_format(root) == "voxceleb1"
    _one_line_error(r"iden_split.txt does not exist.*--metadata", read_corpus, root)
    items, rejects = read_corpus(root, metadata=split_file)
    assert [(i.key, i.meta["split"]) for i in items][:2] == [("id10001_1zcIwhmdeo4_00001", "train"),
                                                             ("id10001_7w0IBEWc9Qw_00001", "train")]
    assert {i.path.parts[-5] for i in items} == {"dev", "test"}
    assert len(items) == 5 and len(rejects) == 2


def test_voxceleb1_bad_parts_are_one_line(tmp_path):
    root = voxceleb1(tmp_path / "VoxCeleb1")
    (root / "iden_split.txt").write_text("1 id10001/1zcIwhmdeo4/00001.wav\n4 id10001/1zcIwhmdeo4/00002.wav\n")
    message = _one_line_error("line 2", read_corpus, root)
    assert "iden_split.txt" in message and "'4 id10001/1zcIwhmdeo4/00002.wav'" in message
    (root / "iden_split.txt").write_text("1 00001.wav\n")
    _one_line_error("line 1", read_corpus, root)
    (root / "iden_split.txt").write_bytes(b"1 id10001/\xff\n")
    _one_line_error("is not UTF-8", read_corpus, root)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "iden_split.txt").write_text(VOXCELEB1_SPLIT)
    _one_line_error("no wav/ folder", read_corpus, tmp_path / "empty", "voxceleb1")


# --------------------------------------------------------------------------- IEMOCAP

EMO_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _emo_line(utterance: str, emotion: str, start: float = 1.0) -> str:
    return f"[{start:.4f} - {start + 2:.4f}]\t{utterance}\t{emotion}\t[2.5000, 2.5000, 2.5000]\n"


def iemocap(root: Path) -> Path:
    """Session1 (test under fold 1) and Session2 with one improvised dialog each; every label kind."""
    sessions = {
        1: {"Ses01F_impro01": [("F000", "neu"), ("M000", "exc"), ("F001", "fru"), ("M001", "ang")]},
        2: {"Ses02M_impro03": [("F000", "sad"), ("M000", "hap"), ("F001", "neu"), ("M001", "exc"), ("F002", "ang"),
                               ("M002", "sad"), ("F003", "xxx"), ("M003", "bored")]},
    }
    seed = 0
    for session, dialogs in sessions.items():
        folder = root / f"Session{session}"
        labels = folder / "dialog" / "EmoEvaluation"
        labels.mkdir(parents=True)
        for dialog, utterances in dialogs.items():
            text = EMO_HEADER
            for suffix, emotion in utterances:
                utterance = f"{dialog}_{suffix}"
                _wav(folder / "sentences" / "wav" / dialog / f"{utterance}.wav", seed)
                seed += 1
                text += _emo_line(utterance, emotion) + "C-E1:\tNeutral;\t()\nA-E1:\tval 3; act 2; dom  2;\t()\n\n"
            (labels / f"{dialog}.txt").write_text(text)
            (labels / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 macOS resource fork \xff")
        (labels / "Categorical").mkdir()  # IEMOCAP's per-annotator files, not read
        (labels / "Categorical" / f"{dialog}_e1_cat.txt").write_text("not a label line\n")
    # a label line without audio (the file's last line), and audio without a label line
    with open(root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02M_impro03.txt", "a") as f:
        f.write(_emo_line("Ses02M_impro03_F009", "neu"))
    _wav(root / "Session2" / "sentences" / "wav" / "Ses02M_impro03" / "Ses02M_impro03_M009.wav", 99)
    return root


def test_iemocap_shards_superb_four_classes_with_fold_and_speaker(tmp_path):
    root = iemocap(tmp_path / "IEMOCAP_full_release")
    assert detect_format(root) == "iemocap"
    out = tmp_path / "shards"
    shard_stage.run(ShardParams(workers=1), root, out)
    shards = Shards(out)
    rows = {r["key"]: (r["split"], r["style"], r["speaker"]) for r in shards.rows()}
    assert rows == {
        "Ses01F_impro01_F000": ("test", "neu", "Ses01F"), "Ses01F_impro01_M000": ("test", "hap", "Ses01M"),
        "Ses01F_impro01_M001": ("test", "ang", "Ses01M"),
        # Session2's six, sorted by key: every fifth is valid
        "Ses02M_impro03_F000": ("train", "sad", "Ses02F"), "Ses02M_impro03_F001": ("train", "neu", "Ses02F"),
        "Ses02M_impro03_F002": ("train", "ang", "Ses02F"), "Ses02M_impro03_M000": ("train", "hap", "Ses02M"),
        "Ses02M_impro03_M001": ("valid", "hap", "Ses02M"), "Ses02M_impro03_M002": ("train", "sad", "Ses02M")}
    folds = shards.metadata(["fold"])
    assert {key: m["fold"] for key, m in folds.items()} == {key: int(key[4]) for key in rows}
    label_file = root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02M_impro03.txt"
    last_line = len(label_file.read_text().splitlines())
    rejects = {key: (name, reason) for key, name, reason in _rejects(out)}
    assert rejects == {
        "Ses01F_impro01_F001": ("Ses01F_impro01_F001.wav", "emotion outside SUPERB's four classes (fru)"),
        "Ses02M_impro03_F003": ("Ses02M_impro03_F003.wav", "emotion outside SUPERB's four classes (xxx)"),
        "Ses02M_impro03_M003": ("Ses02M_impro03_M003.wav", f"unknown emotion ('bored' at {label_file}:31)"),
        "Ses02M_impro03_F009": (f"Ses02M_impro03.txt:{last_line}", "audio file missing"),
        "Ses02M_impro03_M009": ("Ses02M_impro03_M009.wav", "no line in dialog/EmoEvaluation")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejects_by_reason"] == {"audio file missing": 1, "emotion outside SUPERB's four classes": 2,
                                            "no line in dialog/EmoEvaluation": 1, "unknown emotion": 1}


def test_iemocap_bad_parts_are_one_line(tmp_path):
    root = iemocap(tmp_path / "IEMOCAP_full_release")
    labels = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    good = labels.read_text()
    labels.write_text(good + "[6.2901 - 8.2357] Ses01F_impro01_F000\n")
    message = _one_line_error(f"line {len(good.splitlines()) + 1}:", read_corpus, root)
    assert str(labels) in message
    labels.write_text(good)
    (root / "Session2" / "sentences").rename(root / "Session2" / "audio")
    _one_line_error(r"Session2/sentences/wav does not exist", read_corpus, root)


# --------------------------------------------------------------------------- LibriSpeech phones from a lexicon


def librispeech(root: Path) -> Path:
    for subset, speaker, text in (("train-clean-100", "19", "HELLO WORLD\n19-198-0001 THE WORLD'S END"),
                                  ("dev-clean", "84", "HELLO ZYZZYVA WORLD"), ("test-clean", "61", "WORLD")):
        chapter = root / subset / speaker / "198"
        _wav(chapter / f"{speaker}-198-0000.flac", int(speaker))
        if subset.startswith("train"):
            _wav(chapter / f"{speaker}-198-0001.flac", 7)
        (chapter / f"{speaker}-198.trans.txt").write_text(f"{speaker}-198-0000 {text}\n")
    return root


def test_librispeech_phones_from_a_lexicon_and_missing_words_reported(tmp_path):
    corpus = librispeech(tmp_path / "LibriSpeech")
    first = tmp_path / "librispeech-lexicon-200k-g2p.txt"
    first.write_text("HELLO\tHH AH0 L OW1\nWORLD W ER1 L D\nHELLO HH EH0 L OW1\n\n")  # HELLO's first wins
    second = tmp_path / "librispeech-lexicon-allothers-g2p.txt"
    second.write_text("WORLD W AO1 R L D\nTHE  DH AH0\nWORLD'S\tW ER1 L D Z\n")  # WORLD: the first file's wins
    params = load_params(ShardParams, None, overrides=[f"lexicon={first},{second}", "workers=1"])
    assert params.lexicon == (str(first), str(second))
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        summary = shard_stage.run(params, corpus, tmp_path / "shards")
    finally:
        logger.removeHandler(handler)
    rows = {r["key"]: r["phones"] for r in Shards(tmp_path / "shards").rows()}
    assert rows == {"19-198-0000": ["HH", "AH0", "L", "OW1", "W", "ER1", "L", "D"],
                    "19-198-0001": None,  # END is in neither file
                    "84-198-0000": None, "61-198-0000": ["W", "ER1", "L", "D"]}
    assert summary["lexicon"] == {
        "files": [str(first), str(second)], "entries": 4, "utterances_with_lexicon_phones": 2,
        "utterances_with_own_phones": 0, "missing_words": 2, "missing_word_occurrences": 2,
        "first_missing_words": ["END", "ZYZZYVA"], "utterances_without_phones": ["19-198-0001", "84-198-0000"]}
    assert json.loads((tmp_path / "shards" / "summary.json").read_text())["lexicon"] == summary["lexicon"]
    assert any("2 words (2 occurrences) are in no lexicon file, first END, ZYZZYVA; 2 utterances" in m
               for m in messages)


def test_lexicon_keeps_a_tables_own_phones_and_bad_lexicons_are_one_line(tmp_path):
    root = tmp_path / "c"
    _wav(root / "a.wav", 1)
    _wav(root / "b.wav", 2)
    (root / "meta.csv").write_text("path,text,phones,phone_start,phone_end\na.wav,HELLO,h i,0 0.1,0.1 0.2\n"
                                   "b.wav,HELLO,,,\n")
    lexicon = tmp_path / "lex.txt"
    lexicon.write_text("HELLO HH AH0 L OW1\n")
    summary = shard_stage.run(ShardParams(workers=1, lexicon=(str(lexicon),)), root, tmp_path / "s",
                              metadata=root / "meta.csv")
    assert {r["key"]: r["phones"] for r in Shards(tmp_path / "s").rows()} == {"a": ["h", "i"],
                                                                             "b": ["HH", "AH0", "L", "OW1"]}
    assert summary["lexicon"]["utterances_with_own_phones"] == 1
    _one_line_error("lexicon .*nope.txt does not exist", shard_stage.run,
                    ShardParams(workers=1, lexicon=(str(tmp_path / "nope.txt"),)), root, tmp_path / "s2")
    lexicon.write_text("HELLO HH AH0 L OW1\nWORLD\n")
    message = _one_line_error("line 2", shard_stage.run, ShardParams(workers=1, lexicon=(str(lexicon),)), root,
                              tmp_path / "s3")
    assert "'WORLD' is a word without phones" in message


def test_no_lexicon_leaves_the_summary_as_before(tmp_path):
    summary = shard_stage.run(ShardParams(workers=1), librispeech(tmp_path / "LibriSpeech"), tmp_path / "s")
    assert "lexicon" not in summary and all(r["phones"] is None for r in Shards(tmp_path / "s").rows())


# --------------------------------------------------------------------------- VoiceBank-DEMAND


def voicebank(root: Path, tail: str = "") -> Path:
    """Trainset speakers p226 (valid), p230, p287 (valid); testset p232; twins of equal length."""
    sets = {"trainset_28spk": ["p226_001", "p226_002", "p230_001", "p287_001"], "testset": ["p232_001", "p232_002"]}
    for i, (name, stems) in enumerate(sets.items()):
        for j, stem in enumerate(stems):
            clean = tone(0.3 + 0.05 * j, 180.0 + 20 * j)
            write_audio(root / f"clean_{name}_wav{tail}" / f"{stem}.wav", clean, subtype="PCM_16")
            write_audio(root / f"noisy_{name}_wav{tail}" / f"{stem}.wav", clean + noise(len(clean) / 16000, seed=j),
                        subtype="PCM_16")
    _wav(root / f"clean_trainset_28spk_wav{tail}" / "p230_002.wav", 5)  # no noisy twin
    _wav(root / f"noisy_testset_wav{tail}" / "p232_003.wav", 6)  # no clean twin
    return root


def test_voicebank_clean_and_noisy_sides_shard_to_the_same_keys_and_pair(tmp_path):
    root = voicebank(tmp_path / "vbd")
    assert detect_format(root) == "voicebank"
    clean, noisy = tmp_path / "vbd-clean", tmp_path / "vbd-noisy"
    shard_stage.run(ShardParams(workers=1), root, clean)
    shard_stage.run(load_params(ShardParams, None, overrides=["input_format=voicebank_noisy", "workers=1"]), root, noisy)
    expected = {"p226_001": ("valid", "p226"), "p226_002": ("valid", "p226"), "p230_001": ("train", "p230"),
                "p287_001": ("valid", "p287"), "p232_001": ("test", "p232"), "p232_002": ("test", "p232")}
    for folder in (clean, noisy):
        assert {r["key"]: (r["split"], r["speaker"]) for r in Shards(folder).rows()} == expected
    assert Shards(clean).fingerprint == Shards(noisy).fingerprint  # what evaluate.se_noisy checks
    assert all(m["noise"] == "demand" for m in Shards(noisy).metadata(["noise"]).values())
    assert all(m["noise"] is None for m in Shards(clean).metadata(["noise"]).values())
    noisy_of = paired_view(Shards(noisy)).mix
    row = next(r for r in Shards(clean).rows() if r["key"] == "p232_002")
    clean_wav = Shards(clean).read_audio(row["shard"], row["flac_offset"], row["flac_bytes"])
    assert not np.allclose(noisy_of("p232_002", clean_wav), clean_wav)
    assert sorted((k, reason.split(" (")[0]) for k, _, reason in _rejects(clean)) == [
        ("p230_002", "no noisy twin"), ("p232_003", "audio file missing")]
    assert sorted((k, reason.split(" (")[0]) for k, _, reason in _rejects(noisy)) == [
        ("p230_002", "audio file missing"), ("p232_003", "no clean twin")]


def test_voicebank_resampled_folders_and_missing_parts(tmp_path):
    root = voicebank(tmp_path / "vbd", tail="_16k")
    items, _ = read_corpus(root)
    assert len(items) == 6
    voicebank(root)
    _one_line_error("both clean_trainset_28spk_wav and clean_trainset_28spk_wav_16k", read_corpus, root)
    other = voicebank(tmp_path / "partial")
    for path in (other / "noisy_testset_wav").iterdir():
        path.unlink()
    (other / "noisy_testset_wav").rmdir()
    _one_line_error("no noisy_testset_wav folder", read_corpus, other, "voicebank_noisy")


# --------------------------------------------------------------------------- VCC2020 task 1

VCC_TEXTS = {"10001": "Then he went home.", "10061": "The sky is blue.", "20001": "We met at noon.",
             "30001": "A cat sat on the mat.", "30002": "Rain falls in spring."}


def vcc2020(root: Path, nested: bool = False) -> Path:
    """Each task-1 speaker with a training sentence, a valid one (E10061) and two evaluation sentences."""
    def part(zip_name: str, folder: str) -> Path:
        return root / zip_name / folder if nested else root / folder

    seed = 0
    for speakers, train, evaluation, train_ids in (
            (("SEF1", "SEF2", "SEM1", "SEM2"), part("vcc2020_database_training_source", "source"),
             part("vcc2020_database_evaluation", "vcc2020_database_evaluation"), ("E10001", "E10061")),
            (("TEF1", "TEF2", "TEM1", "TEM2"), part("vcc2020_database_training_target_task1", "target_task1"),
             part("vcc2020_database_groundtruth", "vcc2020_database_groundtruth"), ("E20001", "E10061"))):
        for speaker in speakers:
            for utt in train_ids:
                _wav(train / speaker / f"{utt}.wav", seed := seed + 1)
            for utt in ("E30001", "E30002"):
                _wav(evaluation / speaker / f"{utt}.wav", seed := seed + 1)
    transcripts = part("vcc2020_database_transcriptions", "vcc2020_database_transcriptions")
    training = transcripts / "transcriptions_training" / "vcc2020_database_training_Eng_transcriptions.txt"
    training.parent.mkdir(parents=True)
    training.write_text("".join(f"{n} {VCC_TEXTS[n]}\n" for n in ("10001", "10061", "20001")))
    evaluation = transcripts / "transcriptions_evaluation" / "vcc2020_database_evaluation_transcriptions.txt"
    evaluation.parent.mkdir(parents=True)
    evaluation.write_text("30001 A cat sat on the mat.\r\n30002 Rain falls in spring.\r\n")
    return root


def test_vcc2020_task1_shards_with_parallel_test_sentences(tmp_path):
    root = vcc2020(tmp_path / "vcc2020")
    assert detect_format(root) == "vcc2020"
    out = tmp_path / "shards"
    shard_stage.run(ShardParams(workers=1), root, out)
    rows = {r["key"]: r for r in Shards(out).rows()}
    assert len(rows) == 32 and not _rejects(out)
    assert (rows["SEF1_E10001"]["split"], rows["SEF1_E10001"]["text"]) == ("train", "Then he went home.")
    assert (rows["TEF1_E20001"]["split"], rows["TEF1_E20001"]["text"]) == ("train", "We met at noon.")
    assert rows["TEM2_E10061"]["split"] == "valid" and rows["SEM1_E10061"]["split"] == "valid"
    test = [r for r in rows.values() if r["split"] == "test"]
    assert len(test) == 16 and {r["speaker"] for r in test} == {"SEF1", "SEF2", "SEM1", "SEM2",
                                                                 "TEF1", "TEF2", "TEM1", "TEM2"}
    # VC matches a conversion to the target's reading by text: every source test sentence has one
    for source in (r for r in test if r["speaker"].startswith("S")):
        assert any(r["text"] == source["text"] for r in test if r["speaker"] == "TEF1")
    assert rows["SEF2_E30002"]["text"] == "Rain falls in spring."
    roles = Shards(out).metadata(["vc_role"])
    assert roles["SEM2_E30001"]["vc_role"] == "source" and roles["TEF2_E30001"]["vc_role"] == "target"


def test_vcc2020_archives_unzipped_into_their_own_folders_and_bad_parts(tmp_path):
    root = vcc2020(tmp_path / "vcc2020", nested=True)
    assert detect_format(root) == "vcc2020"
    items, rejects = read_corpus(root)
    assert len(items) == 32 and not rejects
    _wav(root / "vcc2020_database_training_source" / "source" / "SEF1" / "E10001 (copy).wav", 3)
    _, rejects = read_corpus(root)
    assert [(r.key, r.reason) for r in rejects] == [("SEF1_E10001__copy", "not a VCC2020 English sentence id "
                                                                         "(E and 5 digits)")]
    transcript = next(root.rglob("vcc2020_database_evaluation_transcriptions.txt"))
    transcript.write_text("30001 A cat sat on the mat.\nE30002\n")
    message = _one_line_error("line 2", read_corpus, root)
    assert str(transcript) in message
    transcript.write_text("30001 A cat sat on the mat.\n")
    (root / "vcc2020_database_groundtruth" / "vcc2020_database_groundtruth" / "TEM1").rename(
        root / "vcc2020_database_groundtruth" / "vcc2020_database_groundtruth" / "tem1")
    _one_line_error("TEM1 does not exist", read_corpus, root)


def test_a_superb_layout_is_a_folder_and_errors_reach_the_cli_as_one_line(tmp_path):
    (tmp_path / "file.wav").write_bytes(b"")
    _one_line_error("the iemocap layout is a folder", read_corpus, tmp_path / "file.wav", "iemocap")
    (tmp_path / "IEMOCAP" / "Session1" / "dialog" / "EmoEvaluation").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "progre.cli", "shard", str(tmp_path / "IEMOCAP"),
                             "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Session1/sentences/wav does not exist" in result.stderr


def test_an_output_that_holds_a_lexicon_file_is_refused_and_the_file_kept(tmp_path):
    corpus = librispeech(tmp_path / "LibriSpeech")
    out = tmp_path / "shards"
    out.mkdir()
    lexicon = out / "lexicon.txt"  # the user keeps the lexicon where the shards would go
    lexicon.write_text("HELLO HH AH0 L OW1\n")
    with pytest.raises(UserError, match=f"--out {out} holds the input {lexicon}"):
        shard_stage.run(ShardParams(workers=1, lexicon=(str(lexicon),)), corpus, out, overwrite=True)
    assert lexicon.read_text() == "HELLO HH AH0 L OW1\n"
