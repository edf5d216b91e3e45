"""Beyond English: transcripts in any script, phones per utterance language, language ID and any
categorical column as tasks, AISHELL-1's layout."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from progre.config import EvaluateParams, ReportParams, ShardParams, load_params
from progre.data import espeak
from progre.data.corpus import detect_format, read_corpus
from progre.data.shards import Shards
from progre.downstream.evaluation import EvaluationSettings
from progre.downstream.registry import build_task
from progre.downstream.tasks import SpeechRecognition, TaskSkipped
from progre.downstream.transcripts import join_words, normalize_transcript, written_with_word_spaces
from progre.errors import UserError
from stages import evaluate, report
from stages import shard as shard_stage

from .conftest import tone, write_audio


def _rows(split: str, *items) -> list[dict]:
    return [{"key": f"{split}{i}", "split": split, **item} for i, item in enumerate(items)]


def _task(name: str):
    """The task as `progre evaluate` builds it with the default settings (no corpus: none of these reads one)."""
    return build_task(name, EvaluationSettings().task_options(None, None, torch.device("cpu")))


# --------------------------------------------------------------------------- transcripts


@pytest.mark.parametrize("text, expected", [
    ("Don't stop, Bob-by!", "don't stop bob by"),                  # English as before
    ("¿Dónde está el niño?", "dónde está el niño"),                # accents kept, ¿ ? are punctuation
    ("Où est l’hôtel ?", "où est l'hôtel"),                         # ’ is an apostrophe inside a word
    ("Cafe\u0301 DELL’ANNO", "café dell'anno"),                    # NFKC composes é; casefold
    ("Сегодня мы идём в ПАРК.", "сегодня мы идём в парк"),         # Cyrillic, case folded
    ("我们 今天 去 公园。", "我们今天去公园"),                       # AISHELL-1's word segmentation goes
    ("我们今天去公园", "我们今天去公园"),                             # ... so segmented = unsegmented
    ("我们 ok 吗？", "我们 ok 吗"),                                  # a space next to Latin stays
    ("Ｈｅｌｌｏ　ＷＯＲＬＤ！", "hello world"),                       # full-width forms
    ("Straße ﬁne", "strasse fine"),                                 # casefold, ligature
    ("$5 + 3 = 8 ☺", "5 3 8"),                                      # symbols are spaces, digits stay
    ("soft\u00adhyphen zero\u200bwidth", "softhyphen zerowidth"),   # format characters removed
    ("rock ' n ' roll", "rock n roll"),                             # lone quotes are not apostrophes
    ("  \t.,;!  ", ""),
])
def test_transcripts_of_any_script_are_normalised(text, expected):
    assert normalize_transcript(text) == expected


def test_hypotheses_are_spaced_as_references_are():
    assert join_words(" 我 们  去 ok  吗 ") == "我们去 ok 吗"
    assert join_words("two  words ") == "two words"
    assert written_with_word_spaces(["где мы", "où est"]) and not written_with_word_spaces(["hello", "我们"])


MIXED = {
    "train": _rows("train", {"text": "Où est l'hôtel ?", "language": "fr"},
                   {"text": "¿Dónde está el niño?", "language": "es"},
                   {"text": "Dov'è la città?", "language": "it"},
                   {"text": "Где мы сегодня?", "language": "ru"},
                   {"text": "我们 今天 去 公园。", "language": "zh"},
                   {"text": "We are going to the park.", "language": "en"}),
    "valid": _rows("valid", {"text": "Это наш дом.", "language": "ru"}, {"text": "你好", "language": "zh"}),
    "test": _rows("test", {"text": "La casa è bella.", "language": "it"}, {"text": "公园 很 大", "language": "zh"}),
}


def test_a_corpus_mixing_scripts_keeps_every_transcript():
    task = SpeechRecognition()
    prep = task.prepare(MIXED)
    for split, rows in MIXED.items():
        assert len(prep.splits[split]) == len(rows)  # nothing dropped
        assert prep.splits[split].references == [normalize_transcript(r["text"]) for r in rows]
    assert not any("without a transcript" in n for n in prep.notes)
    assert {"ô", "ù", "á", "ñ", "è", "à", "г", "д", "我", "园", "'", " "} <= set(prep.vocabulary)
    assert prep.vocabulary == sorted(prep.vocabulary) and len(set(prep.vocabulary)) == len(prep.vocabulary)
    decoded = ["".join(prep.vocabulary[t - 1] for t in target) for target in prep.splits["train"].targets]
    assert decoded == prep.splits["train"].references  # every training character is a target
    # Chinese in the training transcripts: no WER (its words are not space-separated), CER is the metric
    assert task.metric == "cer" and any("CER only, no WER" in n and "Han" in n for n in prep.notes)
    assert set(task.score(["我们"], ["我们"])) == {"cer"}


def test_cer_on_chinese_equals_the_hand_count():
    task = SpeechRecognition()
    task.prepare({s: _rows(s, {"text": "我们 今天 去 公园"}) for s in ("train", "valid", "test")})
    references = [normalize_transcript("我们 今天 去 公园。"), normalize_transcript("你 好")]
    hypotheses = ["我们天去公圆", "你好吗"]
    # 我们今天去公园 -> 我们天去公圆: 今 deleted, 园 -> 圆 substituted (2 of 7); 你好 -> 你好吗: 1 insertion (of 2)
    assert task.score(references, hypotheses) == {"cer": pytest.approx(3 / 9)}
    # a space the head emits between Chinese characters is not an error: hypotheses are spaced like references
    vocabulary = [" ", "们", "我"]
    logits = torch.full((1, 5, 4), -5.0)
    for t, token in enumerate([3, 0, 1, 2, 2]):  # 我 _ 们 <space>: the decoded text "我们 " joins to "我们"
        logits[0, t, token] = 5.0
    logits[0, 4, 0] = 9.0
    assert task.predict(logits, torch.tensor([5]), vocabulary) == ["我们"]


def test_wer_is_reported_where_words_are_space_separated():
    task = SpeechRecognition()
    task.prepare({s: [r for r in MIXED[s] if r["language"] != "zh"] for s in MIXED})
    assert task.metric == "wer"
    scores = task.score(["où est l'hôtel"], ["ou est l'hôtel"])
    assert scores == {"wer": pytest.approx(1 / 3), "cer": pytest.approx(1 / 14)}


# --------------------------------------------------------------------------- phones per language


def test_language_codes_pick_espeak_voices():
    expected = {"en": "en-us", "eng": "en-us", "en-US": "en-us", "en_GB": "en", "es": "es", "spa": "es",
                "es-MX": "es-419", "fr": "fr", "fra": "fr", "fr-FR": "fr", "it": "it", "ita": "it", "ru": "ru",
                "RUS": "ru", "de": "de", "pt-BR": "pt-BR", "zh": "cmn", "zho": "cmn", "zh-CN": "cmn",
                "zh-Hans": "cmn", "cmn": "cmn", "yue": "yue", "zh-yue": "yue", "ja": "ja", "ko": "ko"}
    assert {code: espeak.voice_for_language(code) for code in expected} == expected
    # no voice: codes eSpeak NG does not know, and voices shipped without their dictionary (Faroese)
    for code in ("xx", "tlh", "klingon", "fo", " "):
        assert espeak.voice_for_language(code) is None
    for voice in set(expected.values()):  # every voice named is one eSpeak NG loads
        assert espeak.phonemize("a", voice)


def test_phonemes_hold_no_language_switch_markers():
    """eSpeak reads Latin words in Chinese text with its English dictionary and marks the switch
    with "(en)" ... "(cmn)"; the markers are not phones."""
    phones = espeak.phonemize("Hello 我们", "cmn")
    assert phones[:4] == ["h", "@", "l", "oU"] and "o214" in phones
    assert not any(p.startswith("(") for p in phones)
    assert not any(p.startswith("(") for p in espeak.phonemize("Привет hello", "ru"))


def test_each_utterance_is_phonemised_in_its_own_language():
    task = _task("pr")  # as `progre evaluate` builds it
    rows = {
        "train": _rows("train", {"text": "We are going to the park.", "language": "en"},
                       {"text": "Сегодня мы идём в парк.", "language": "ru"},
                       {"text": "我们今天去公园", "language": "zh"},
                       {"text": "Hoy vamos al parque.", "language": "spa"},
                       {"text": "Hello there.", "language": None},       # no language: phonemize_voice
                       {"text": "Hola.", "language": "es", "phones": ["o", "l", "a"]}),  # phones win
        "valid": _rows("valid", {"text": "nuqneH", "language": "tlh"},   # no eSpeak voice: skipped
                       {"text": "Góðan dag", "language": "fo"}, {"text": "Oggi andiamo al parco.", "language": "it"}),
        "test": _rows("test", {"text": "Nous allons au parc.", "language": "fr"}),
    }
    prep = task.prepare(rows)
    phones = dict(zip(prep.splits["train"].keys, prep.splits["train"].references))
    assert phones["train0"] == espeak.phonemize("We are going to the park.", "en-us")
    assert phones["train1"] == espeak.phonemize("Сегодня мы идём в парк.", "ru")
    assert phones["train1"] != espeak.phonemize("Сегодня мы идём в парк.", "en-us")
    assert phones["train2"] == espeak.phonemize("我们今天去公园", "cmn") and "o214" in phones["train2"]  # tones
    assert phones["train3"] == espeak.phonemize("Hoy vamos al parque.", "es")
    assert phones["train4"] == espeak.phonemize("Hello there.", "en-us")
    assert phones["train5"] == ["o", "l", "a"]
    assert prep.splits["valid"].keys == ["valid2"]
    assert prep.splits["valid"].references == [espeak.phonemize("Oggi andiamo al parco.", "it")]
    warning = next(n for n in prep.notes if "cannot phonemise" in n)
    assert warning == "PR: 2 valid utterances in languages eSpeak NG cannot phonemise skipped (fo 1, tlh 1): " \
                      "valid0, valid1"
    assert any("(voices: cmn 1, en-us 2, es 1, fr 1, it 1, ru 1)" in n for n in prep.notes)


def test_a_train_split_in_unknown_languages_skips_pr():
    task = _task("pr")
    rows = {s: _rows(s, {"text": "nuqneH", "language": "tlh"}) for s in ("train", "valid", "test")}
    with pytest.raises(TaskSkipped, match="transcripts eSpeak NG can read"):
        task.prepare(rows)


# --------------------------------------------------------------------------- classification tasks


def test_lid_and_any_categorical_column_are_classification_tasks():
    lid = _task("lid")
    assert (lid.name, lid.title, lid.columns, lid.pooled) == ("lid", "LID", ("language",), True)
    prep = lid.prepare(MIXED)
    assert prep.vocabulary == ["en", "es", "fr", "it", "ru", "zh"]
    assert prep.splits["valid"].references == ["ru", "zh"]
    accent = _task("cls:accent")
    assert (accent.name, accent.title, accent.columns) == ("cls-accent", "accent", ("accent",))
    rows = {s: _rows(s, {"accent": "north"}, {"accent": 3}, {"accent": None}) for s in ("train", "valid", "test")}
    prep = accent.prepare(rows)  # numbers are categories too; missing values are skipped and counted
    assert prep.vocabulary == ["3", "north"] and len(prep.splits["test"]) == 2
    with pytest.raises(TaskSkipped, match="holds lists, not categories"):
        accent.prepare({s: _rows(s, {"accent": ["a", "b"]}) for s in ("train", "valid", "test")})
    with pytest.raises(ValueError):
        _task("cls:")


def test_task_names_in_params():
    from progre.downstream import TASKS

    assert load_params(EvaluateParams, None, overrides=[f"tasks=[{','.join(TASKS)}]"]).tasks == TASKS
    assert load_params(EvaluateParams, None, overrides=["tasks=[sid,lid,cls:accent]"]).tasks == \
        ("sid", "lid", "cls:accent")
    for bad in ("[sid,xid]", "['cls:']", "[cls:a/b]"):
        with pytest.raises(UserError, match="is not a task") as info:
            load_params(EvaluateParams, None, overrides=[f"tasks={bad}"])
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- AISHELL-1


def test_aishell_layout_shards_directly(tmp_path):
    root = tmp_path / "data_aishell"
    utterances = {"train": {"S0002": ["W0121", "W0122"], "S0003": ["W0001"]}, "dev": {"S0724": ["W0121"]},
                  "test": {"S0764": ["W0121"]}}
    for i, (split, speakers) in enumerate(utterances.items()):
        for speaker, ids in speakers.items():
            for j, utt in enumerate(ids):
                write_audio(root / "wav" / split / speaker / f"BAC009{speaker}{utt}.wav",
                            tone(0.4, 200.0 + 50 * i + 10 * j), subtype="PCM_16")
    transcript = root / "transcript" / "aishell_transcript_v0.8.txt"
    transcript.parent.mkdir(parents=True)
    transcript.write_text("BAC009S0002W0121 而 对 楼市 成交 抑制 作用 最 大 的 限 购\n"
                          "BAC009S0002W0122 也 成为 地方 政府 的 眼中 钉\n"
                          "BAC009S0724W0121 甚至 出现 交易 几乎 停滞 的 情况\n"
                          "BAC009S0764W0121 一二 线 城市 虽然 也 处于 调整 中\n"
                          "BAC009S0999W0001 没有 音频 的 一 行\n", encoding="utf-8")  # S0003W0001 has no line
    assert detect_format(root) == "aishell"
    out = tmp_path / "shards"
    summary = shard_stage.run(ShardParams(workers=1), root, out)
    assert summary["splits"]["train"]["utterances"] == 3 and summary["splits"]["valid"]["utterances"] == 1
    rows = {r["key"]: r for r in Shards(out).rows()}
    assert rows["BAC009S0002W0121"]["text"] == "而 对 楼市 成交 抑制 作用 最 大 的 限 购"
    assert (rows["BAC009S0002W0121"]["speaker"], rows["BAC009S0002W0121"]["split"],
            rows["BAC009S0002W0121"]["language"]) == ("S0002", "train", "zh")
    assert (rows["BAC009S0724W0121"]["split"], rows["BAC009S0764W0121"]["split"]) == ("valid", "test")
    assert rows["BAC009S0003W0001"]["text"] is None  # audio without a transcript line is kept, without text
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert [(r["key"], r["reason"]) for r in rejects] == [("BAC009S0999W0001", "audio file missing")]
    assert rejects[0]["path"] == f"{transcript}:5"
    # the ASR targets are the characters, the word segmentation gone
    task = SpeechRecognition()
    split_rows = {s: [r for r in rows.values() if r["split"] == s] for s in ("train", "valid", "test")}
    prep = task.prepare(split_rows)
    assert prep.splits["train"].references == ["而对楼市成交抑制作用最大的限购", "也成为地方政府的眼中钉"]
    assert task.metric == "cer" and " " not in prep.vocabulary
    assert any("1 train utterance without a transcript skipped" in n for n in prep.notes)


def test_an_aishell_transcript_that_is_not_utf8_is_one_line(tmp_path):
    root = tmp_path / "aishell"
    write_audio(root / "wav" / "train" / "S0001" / "BAC009S0001W0001.wav", tone(0.3), subtype="PCM_16")
    (root / "transcript").mkdir()
    (root / "transcript" / "aishell_transcript_v0.8.txt").write_bytes("BAC009S0001W0001 我们\n".encode("gb18030"))
    with pytest.raises(UserError, match="is not UTF-8 text") as info:
        read_corpus(root)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- end to end


SENTENCES = {
    "en": ["We are going to the park today.", "The cat sleeps on the warm chair.", "My brother reads a long book.",
           "They walk home after school.", "She likes green apples.", "The train leaves at noon."],
    "ru": ["Сегодня мы идём в парк.", "Кошка спит на тёплом стуле.", "Мой брат читает длинную книгу.",
           "Они идут домой после школы.", "Она любит зелёные яблоки.", "Поезд уходит в полдень."],
    "zh": ["我们 今天 去 公园。", "猫 在 温暖 的 椅子 上 睡觉。", "我 的 哥哥 读 一 本 长 书。",
           "他们 放学 后 走路 回家。", "她 喜欢 绿色 的 苹果。", "火车 中午 出发。"],
}
VOICES = {"en": "en-us", "ru": "ru", "zh": "cmn"}


def multilingual_corpus(root: Path) -> Path:
    """Six utterances in each of English, Russian and Mandarin (eSpeak NG), two speakers (voice variants)
    per language, an `accent` column beyond the index's: 4 train, 1 valid and 1 test per language."""
    rows = []
    for language, sentences in SENTENCES.items():
        for i, text in enumerate(sentences):
            variant = "+m3" if i % 2 else "+f2"
            samples, _ = espeak.speak(text.replace(" ", "") if language == "zh" else text,
                                      VOICES[language] + variant, seed=i)
            path = f"{language}/{language}{i}.wav"
            write_audio(root / path, samples, espeak.SAMPLE_RATE, subtype="PCM_16")
            rows.append({"path": path, "speaker": f"{language}-{variant[1:]}", "language": language, "text": text,
                         "accent": ["north", "south"][i % 2], "split": (("train",) * 4 + ("valid", "test"))[i]})
    pq.write_table(pa.Table.from_pylist(rows), root / "metadata.parquet")
    return root


def test_a_multilingual_corpus_through_evaluate_and_report(tmp_path):
    corpus = multilingual_corpus(tmp_path / "corpus")
    shards = tmp_path / "shards"
    shard_stage.run(ShardParams(workers=1), corpus, shards)
    assert sorted(set(Shards(shards).column("language").values())) == ["en", "ru", "zh"]
    out = tmp_path / "eval"
    params = EvaluateParams(tasks=["asr", "pr", "lid", "cls:accent"], max_epochs=1, batch_size=4, asr_hidden=8,
                            asr_layers=1, lr=[1e-2], head_seeds=1)
    summary = evaluate.run(params, upstream="mfcc", out=out, shards=shards, cache=tmp_path / "cache")
    assert set(summary["tasks"]) == {"asr", "pr", "lid", "cls-accent"}
    assert all(t["status"] == "ok" for t in summary["tasks"].values())
    asr = json.loads((out / "asr" / "metrics.json").read_text())
    assert asr["utterances"] == {"train": 12, "valid": 3, "test": 3}  # every transcript kept
    assert asr["metric"] == "cer" and set(asr["test_metrics"]) == {"cer"}
    assert {"д", "我", "w"} <= set(asr["vocabulary"])
    pr = json.loads((out / "pr" / "metrics.json").read_text())
    assert any("(voices: cmn 6, en-us 6, ru 6)" in n for n in pr["notes"])
    assert {"o214", "s;"} & set(pr["vocabulary"])
    lid = json.loads((out / "lid" / "metrics.json").read_text())
    assert lid["vocabulary"] == ["en", "ru", "zh"] and lid["utterances"]["test"] == 3
    accent = json.loads((out / "cls-accent" / "metrics.json").read_text())
    assert accent["title"] == "accent" and accent["vocabulary"] == ["north", "south"]
    report.run(ReportParams(title="Languages"), results=[out], out=tmp_path / "report")
    header = next(line for line in (tmp_path / "report" / "report.md").read_text().splitlines()
                  if line.startswith("| upstream"))
    assert header.split("|")[3:-1] == [" PR PER ↓ ", " ASR CER ↓ ", " LID acc ↑ ", " accent acc ↑ "]
