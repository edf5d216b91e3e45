"""Transcripts as ASR targets, in any script: normalisation and word spaces.

`normalize_transcript` (applied to every reference, train, valid and test alike):

1. Unicode NFKC: compatibility forms become their plain letters and digits (full-width ``Ａ１``
   -> ``A1``, ligatures ``ﬁ`` -> ``fi``, half-width kana -> kana) and accents are composed
   (``e`` + U+0301 -> ``é``), so one written character is one code point wherever Unicode has one.
2. `str.casefold()`: lower case in scripts with case (Latin, Cyrillic, Greek, Armenian, ...; ``ß``
   -> ``ss``); a no-op in scripts without case (Han, kana, Arabic, Devanagari, ...).
3. Per character, by Unicode general category:
   - letters (L*), combining marks (M*) and numbers (N*) are kept;
   - an apostrophe (``'`` or ``’``, written ``'``) is kept when a letter, mark or digit touches it
     (``don't``, ``l'homme``, ``dogs'``, ``'tis``, ``м'ясо``), else it becomes a space;
   - format characters (Cf: soft hyphen, zero-width (non-)joiners, byte-order mark) are removed;
   - everything else becomes a space: punctuation (P*: ``Bob-by`` -> ``bob by``, ``。`` and ``，``
     too), symbols (S*: ``$5`` -> ``5``), separators and controls.
4. Whitespace collapses to single spaces, and a space between two characters of scripts written
   without spaces between words (`UNSPACED_SCRIPTS`: Han, kana, Thai, ...) is removed: a
   word-segmented Chinese transcript (AISHELL-1's ``而 对 楼市 成交``) and the same text
   unsegmented give the same characters, ``而对楼市成交``.

The ASR tokens are the code points of the normalised text (space included where it remains), so
CER counts characters of the normalised text, spaces included between words of spaced scripts
(a missed word boundary is one error) and none between Chinese characters (AISHELL-1's CER).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from functools import lru_cache

APOSTROPHES = "'\u2019"
"""Characters read as an apostrophe (ASCII and the right single quotation mark); both become ``'``."""

UNSPACED_SCRIPTS = {"CJK UNIFIED IDEOGRAPH": "Han", "CJK COMPATIBILITY IDEOGRAPH": "Han", "IDEOGRAPHIC": "Han",
                    "HIRAGANA": "Hiragana", "KATAKANA": "Katakana", "BOPOMOFO": "Bopomofo", "THAI": "Thai",
                    "LAO": "Lao", "KHMER": "Khmer", "MYANMAR": "Myanmar", "TIBETAN": "Tibetan"}
"""Scripts written without spaces between words: prefix of their characters' Unicode names -> script."""
_PREFIXES = tuple(UNSPACED_SCRIPTS)


@lru_cache(maxsize=65536)
def unspaced_script(char: str) -> str | None:
    """The script of `char` if it is one written without spaces between words ("Han", "Thai", ...), else None."""
    name = unicodedata.name(char, "")
    return next((script for prefix, script in UNSPACED_SCRIPTS.items() if name.startswith(prefix)), None) \
        if name.startswith(_PREFIXES) else None


def unspaced(char: str) -> bool:
    """Whether `char` belongs to a script written without spaces between words (Han, kana, Thai, ...)."""
    return unspaced_script(char) is not None


def _word_char(char: str) -> bool:
    return unicodedata.category(char)[0] in "LMN"


def normalize_transcript(text: str) -> str:
    """The transcript as ASR target (see the module docstring): "Don't stop, Bob-by!" -> "don't stop bob by",
    "Où est l’hôtel ?" -> "où est l'hôtel", "我们 去 公园。" -> "我们去公园"."""
    text = unicodedata.normalize("NFKC", text).casefold()
    out = []
    for i, char in enumerate(text):
        if char in APOSTROPHES:
            touches = (i > 0 and _word_char(text[i - 1])) or (i + 1 < len(text) and _word_char(text[i + 1]))
            out.append("'" if touches else " ")
            continue
        category = unicodedata.category(char)
        if category[0] in "LMN":
            out.append(char)
        elif category != "Cf":
            out.append(" ")
    return join_words("".join(out))


def join_words(text: str) -> str:
    """Whitespace collapsed to single spaces, and no space between two characters of unspaced scripts
    (applied to references by `normalize_transcript` and to ASR hypotheses alike)."""
    words = text.split()
    if not words:
        return ""
    out = [words[0]]
    for word in words[1:]:
        if not (unspaced(out[-1][-1]) and unspaced(word[0])):
            out.append(" ")
        out.append(word)
    return "".join(out)


def written_with_word_spaces(texts: Iterable[str]) -> bool:
    """Whether normalised transcripts are words separated by spaces: none holds a character of an unspaced
    script (Chinese, Japanese, Thai, ...). WER is reported only then."""
    return not any(unspaced(char) for text in texts for char in text)


def unspaced_scripts_in(texts: Iterable[str]) -> list[str]:
    """The unspaced scripts that occur in `texts`, sorted, e.g. ["Han", "Katakana"]."""
    return sorted({script for text in texts for char in set(text) if (script := unspaced_script(char))})
