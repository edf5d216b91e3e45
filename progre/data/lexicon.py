"""Phones from a pronunciation lexicon, for phone recognition on corpora that have transcripts only
(`shard.lexicon`: SUPERB's PR reads LibriSpeech's words through s3prl's G2P lexicons,
``librispeech-lexicon-200k-g2p.txt`` and ``librispeech-lexicon-allothers-g2p.txt``).

A lexicon file has one word a line followed by its phones, separated by tabs or spaces
(``ABANDON AH0 B AE1 N D AH0 N``). A word listed more than once keeps its first pronunciation,
across the files in the order given, as s3prl's ``downstream/ctc`` does. An utterance's phones are
the phones of its transcript's words (split at whitespace, looked up exactly as written: LibriSpeech's
transcripts and these lexicons are both upper case) in order. An utterance with a word that no file
lists gets no phones; the report counts and names the missing words and lists those utterances.
Utterances that already have phones (a metadata table's, with their times) keep them.

Nothing here decodes audio or writes files, and no lexicon ships with progre.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import read_utf8
from .corpus import CorpusItem

MISSING_WORDS_SHOWN = 10
"""How many of the missing words the report and the log name (the first met, in corpus order)."""


def read_lexicon(paths: Sequence[str | Path]) -> dict[str, list[str]]:
    """word -> phones from lexicon files (the first pronunciation of a word wins); a file that is
    missing, not UTF-8 or has a word without phones is a one-line UserError naming it."""
    words: dict[str, list[str]] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"lexicon {path} does not exist")
        for number, line in enumerate(read_utf8(path, name=f"lexicon {path}").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise UserError(f"lexicon {path}, line {number}: {line.strip()!r} is a word without phones "
                                f"(expected WORD PH1 PH2 ...)")
            words.setdefault(fields[0], fields[1:])
    if not words:
        raise UserError(f"lexicon {', '.join(map(str, paths))}: no entries")
    return words


def add_lexicon_phones(items: list[CorpusItem], lexicon: dict[str, list[str]]) -> dict[str, Any]:
    """Give every item with a transcript and no phones the phones of its words, in place; returns what
    happened (summary.json's ``lexicon``): counts, the missing words and the utterances left without
    phones."""
    missing: Counter[str] = Counter()
    from_lexicon = own = 0
    without: list[str] = []
    for item in items:
        text = str(item.meta.get("text") or "").strip()
        if not text:
            continue
        if item.meta.get("phones"):
            own += 1
            continue
        words = text.split()
        unknown = [word for word in words if word not in lexicon]
        if unknown:
            missing.update(unknown)  # a Counter keeps first-met order
            without.append(item.key)
            continue
        item.meta["phones"] = [phone for word in words for phone in lexicon[word]]
        from_lexicon += 1
    return {"entries": len(lexicon), "utterances_with_lexicon_phones": from_lexicon,
            "utterances_with_own_phones": own, "missing_words": len(missing),
            "missing_word_occurrences": sum(missing.values()),
            "first_missing_words": list(missing)[:MISSING_WORDS_SHOWN],
            "utterances_without_phones": without}
