"""Error rates and accuracy of the text and class tasks (PR, ASR, SID, ER, LID): edit distance, phone /
word / character error rate, accuracy.

Error rates are corpus-level: the total edit distance over all utterances divided by the total
reference length (not a mean of per-utterance rates), as in sclite and SUPERB.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Hashable


def edit_distance(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> int:
    """Levenshtein distance between two token sequences (substitutions, insertions and deletions all
    cost 1), by the `editdistance` package (C++; about 2.7 ms -> 8 us for a 110-phone pair)."""
    import editdistance

    return int(editdistance.eval(list(reference), list(hypothesis)))


def error_rate(references: Sequence[Sequence[Hashable]], hypotheses: Sequence[Sequence[Hashable]]) -> float:
    """Sum of edit distances / sum of reference lengths, over paired token sequences.

    Can exceed 1 (many insertions). Raises ValueError on unpaired input or empty references.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = sum(len(r) for r in references)
    if total == 0:
        raise ValueError("the references hold no tokens; an error rate is undefined")
    return sum(edit_distance(r, h) for r, h in zip(references, hypotheses)) / total


def phone_error_rate(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    """PER over phone sequences (lists of phone names)."""
    return error_rate(references, hypotheses)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """WER over transcripts, split into words at whitespace."""
    return error_rate([r.split() for r in references], [h.split() for h in hypotheses])


def char_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """CER over transcripts: characters (spaces included) of whitespace-normalised text."""
    return error_rate([" ".join(r.split()) for r in references], [" ".join(h.split()) for h in hypotheses])


def accuracy(labels: Sequence[Hashable], predictions: Sequence[Hashable]) -> float:
    """Fraction of predictions equal to their label."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not labels:
        raise ValueError("accuracy of nothing is undefined")
    return sum(a == b for a, b in zip(labels, predictions)) / len(labels)
