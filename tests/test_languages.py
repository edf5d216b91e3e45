"""Beyond English: transcripts in any script, phones per utterance language, language ID and any
categorical column as tasks, AISHELL-1's layout."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from progre.config import ShardParams
from progre.data import espeak
from progre.data.corpus import detect_format, read_corpus
from progre.data.shards import Shards
from progre.errors import UserError
from stages import shard as shard_stage

from .conftest import tone, write_audio


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


def test_an_aishell_transcript_that_is_not_utf8_is_one_line(tmp_path):
    root = tmp_path / "aishell"
    write_audio(root / "wav" / "train" / "S0001" / "BAC009S0001W0001.wav", tone(0.3), subtype="PCM_16")
    (root / "transcript").mkdir()
    (root / "transcript" / "aishell_transcript_v0.8.txt").write_bytes("BAC009S0001W0001 我们\n".encode("gb18030"))
    with pytest.raises(UserError, match="is not UTF-8 text") as info:
        read_corpus(root)
    assert "\n" not in str(info.value)
