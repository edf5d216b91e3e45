"""Beyond English: transcripts in any script, phones per utterance language, language ID and any
categorical column as tasks, AISHELL-1's layout."""

from __future__ import annotations

from progre.data import espeak


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
