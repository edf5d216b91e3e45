"""The downstream tasks: which labels each reads, its head, loss, decoding and metric.

| task | labels (metadata column) | input | head | metric |
|---|---|---|---|---|
| SID | speaker | utterance mean | linear | accuracy |
| PR | phones (without `sil`), else eSpeak phonemisation of text in the utterance's language (not in a corpus whose phones came from a lexicon) | frames | linear + CTC | PER |
| ASR | text (normalised, any script: `transcripts`) | frames | BiLSTM + CTC | WER and CER, or CER alone |
| ER | style | utterance mean | linear | accuracy |
| LID | language | utterance mean | linear | accuracy |
| `cls:COLUMN` | any categorical column | utterance mean | linear | accuracy |

SID, ER, LID and `cls:COLUMN` are one task, `UtteranceClassification`, on different columns
(`registry` builds each by name; SE and VC live in `enhancement` and `conversion`). Each task lists
the metadata `columns` it reads.

`Task` declares every member the evaluation reads, with defaults where a task may leave one out.
`Task.prepare` turns the index rows of the three splits (`rows.split_rows`; a task that reads audio
gets a `rows.CorpusAudio` too) into `Examples`, or raises `TaskSkipped` with the reason when the
corpus lacks what the task needs. Utterances that cannot be used (no label; a class absent from
train, which a closed-set classifier cannot predict; a language eSpeak cannot phonemise; text
without lexicon phones in a corpus whose phones came from a lexicon) are dropped, counted and
reported in `Prepared.notes`. Choices of the recipe book reach a task when the registry builds it
(ASR's selection metric; SE's loss).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.corpus import SPLITS
from .ctc import ctc_greedy_decode, ctc_loss, ctc_min_frames
from .error_rates import accuracy, char_error_rate, phone_error_rate, word_error_rate
from .head_data import Examples
from .heads import BiLSTMHead, LinearHead
from .recipes import Recipe
from .rows import CorpusAudio
from .transcripts import join_words, normalize_transcript, unspaced_scripts_in, written_with_word_spaces

SILENCE = "sil"
TARGET_FRAME_RATE = 50
"""The ASR head stacks faster frames (MFCC's 100 Hz) to about this rate."""


class TaskSkipped(Exception):
    """The corpus lacks what the task needs; the message says what."""


@dataclass
class Prepared:
    """A task's labelled splits and its output vocabulary (class names or CTC tokens after the blank)."""

    splits: dict[str, Examples]
    vocabulary: list[str]
    notes: list[str] = field(default_factory=list)
    """One line per group of dropped utterances."""


@dataclass(frozen=True)
class NoisyAudio:
    """What the upstream hears in place of a clean utterance: `mix(key, clean)`, and what identifies
    that audio (the mixer's settings, or the noisy corpus's fingerprint) in the hidden-state cache key."""

    mix: Callable[[str, np.ndarray], np.ndarray]
    identity: dict[str, Any]


# --------------------------------------------------------------------------- tasks


class Task(ABC):
    """What every task defines; see the subclasses. The members without a default are the ones each
    task sets; the evaluation reads only what is declared here."""

    name: str
    title: str
    metric: str
    """Key of the main metric in `final_score`'s result (reported on test)."""
    selection_metric: str
    """Key of the metric that picks the epoch (and the learning rate) on valid."""
    higher_is_better: bool
    columns: tuple[str, ...]
    """Metadata columns `prepare` reads (besides key and split)."""
    pooled: bool
    """True: the head reads utterance means (B, S, D); False: frames (B, T, S, D)."""
    recipe_name: str
    """Which recipe of the recipe book (`recipes.py`) sizes and schedules the head."""
    noisy: Optional[NoisyAudio] = None
    """What the upstream hears instead of the corpus's own audio (SE's noisy speech); None: the corpus's."""
    writes_examples: bool = False
    """Whether the task makes audio: its record then holds a few examples (`write_examples`) and the
    scores of its reference row (`reference_scores`); other tasks' records hold neither key."""

    @property
    def states(self) -> str:
        """Whose hidden states the head reads: "clean" (of the corpus's audio) or "noisy" (of `noisy`'s)."""
        return "clean" if self.noisy is None else "noisy"

    @abstractmethod
    def prepare(self, rows: dict[str, list[dict[str, Any]]], audio: Optional[CorpusAudio] = None) -> Prepared:
        """Index rows of each split -> labelled examples; TaskSkipped when the labels are missing. `audio`
        reads a row's audio, for the tasks that read it (SE, VC: they list `rows.AUDIO_COLUMNS`)."""

    @abstractmethod
    def head(self, dim: int, outputs: int, frame_rate: int, recipe: Recipe) -> nn.Module:
        """The head over D-dimensional features at `frame_rate`, with `outputs` logits, sized by `recipe`."""

    @abstractmethod
    def loss(self, logits: Tensor, lengths: Optional[Tensor], targets: list[Any]) -> Tensor:
        """Scalar training loss of a batch's head output."""

    @abstractmethod
    def predict(self, logits: Tensor, lengths: Optional[Tensor], vocabulary: list[str]) -> list[Any]:
        """Predictions of a batch, in the form of `Examples.references`."""

    @abstractmethod
    def score(self, references: list[Any], predictions: list[Any]) -> dict[str, float]:
        """Metrics of a whole split: {metric name: value}, holding `metric` and `selection_metric`."""

    def final_score(self, references: list[Any], predictions: list[Any]) -> dict[str, float]:
        """Metrics of the test split (`score` unless a task scores test with more, or costlier, metrics)."""
        return self.score(references, predictions)

    def before_fitting(self) -> None:
        """Compute what every fit of this task would otherwise compute for itself (fits may run in
        forked worker processes, which share only what exists before they start)."""

    def num_outputs(self, vocabulary: list[str]) -> int:
        """Logits per prediction: one per class (CTC tasks add the blank)."""
        return len(vocabulary)

    def better(self, a: float, b: float) -> bool:
        """Whether score `a` beats score `b`."""
        return a > b if self.higher_is_better else a < b

    def trainable(self, examples: Examples, frames_of: Callable[[str], int], frame_rate: int) -> tuple[Examples, int]:
        """The training examples the head can fit (all, unless a CTC target needs more frames than the
        utterance has), and how many were dropped."""
        return examples, 0

    def write_examples(self, predict: Callable[[list[str]], list[Any]], examples: Examples,
                       folder: Path) -> list[dict[str, Any]]:
        """Write a few test examples of what the head makes into `folder` (`predict(keys)` gives the
        head's predictions of those test utterances); returns a record of each. Only tasks that
        `writes_examples` write any."""
        return []

    def reference_scores(self, examples: Examples) -> dict[str, float]:
        """Test scores of the reference row (the task's input without a head: SE's noisy speech); only
        tasks that `writes_examples` have one."""
        return {}


class UtteranceClassification(Task):
    """Mean pooling + linear over the values of one index column (closed set: the train classes)."""

    metric = selection_metric = "acc"
    higher_is_better = True
    pooled = True

    def __init__(self, name: str, title: str, column: str, what: str, recipe_name: str = "cls"):
        self.name, self.title, self.column, self.what = name, title, column, what
        self.recipe_name = recipe_name
        self.columns = (column,)

    def prepare(self, rows: dict[str, list[dict[str, Any]]], audio: Optional[CorpusAudio] = None) -> Prepared:
        notes = []
        rows = {s: [{"key": r["key"], self.column: self._label(r.get(self.column))} for r in rows[s]] for s in SPLITS}
        unlabelled = {s: [r for r in rows[s] if not r.get(self.column)] for s in SPLITS}
        if sum(len(v) for v in unlabelled.values()):
            notes.append(f"{self.title}: {_count_by_split(unlabelled)} without a {self.column} label skipped")
        classes = sorted({r[self.column] for r in rows["train"] if r.get(self.column)})
        if not classes:
            raise TaskSkipped(f"the corpus has no {self.column} labels in its train split")
        if len(classes) < 2:
            raise TaskSkipped(f"the train split has a single {self.what} ({classes[0]}), nothing to classify")
        ids = {c: i for i, c in enumerate(classes)}
        unseen = {s: [r for r in rows[s] if r.get(self.column) and r[self.column] not in ids] for s in SPLITS}
        if sum(len(v) for v in unseen.values()):
            names = sorted({r[self.column] for v in unseen.values() for r in v})
            notes.append(f"{self.title}: {_count_by_split(unseen)} of {self.what}s absent from train skipped "
                         f"(closed set): {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
        splits = {}
        for split in SPLITS:
            usable = [r for r in rows[split] if r.get(self.column) in ids]
            splits[split] = Examples([r["key"] for r in usable], [ids[r[self.column]] for r in usable],
                                     [r[self.column] for r in usable])
        return Prepared(splits, classes, notes)

    def _label(self, value: Any) -> Optional[str]:
        """A metadata value as a class name (None when absent); lists and mappings are not categories."""
        if value is None or (isinstance(value, float) and value != value):  # NaN: a missing value in a table
            return None
        if isinstance(value, (list, tuple, dict)):
            raise TaskSkipped(f"the {self.column} column holds {type(value).__name__}s, not categories")
        return str(value).strip() or None

    def head(self, dim: int, outputs: int, frame_rate: int, recipe: Recipe) -> nn.Module:
        return LinearHead(dim, outputs, recipe.projection)

    def loss(self, logits: Tensor, lengths: Optional[Tensor], targets: list[Any]) -> Tensor:
        return F.cross_entropy(logits.float(), torch.tensor(targets, dtype=torch.long, device=logits.device))

    def predict(self, logits: Tensor, lengths: Optional[Tensor], vocabulary: list[str]) -> list[Any]:
        return [vocabulary[i] for i in logits.argmax(-1).tolist()]

    def score(self, references: list[Any], predictions: list[Any]) -> dict[str, float]:
        return {"acc": accuracy(references, predictions)}


class CtcTask(Task):
    """Frames -> head -> CTC over a token vocabulary (blank = 0), greedy decoding."""

    pooled = False
    higher_is_better = False

    def num_outputs(self, vocabulary: list[str]) -> int:
        return len(vocabulary) + 1  # the blank is id 0

    def loss(self, logits: Tensor, lengths: Optional[Tensor], targets: list[Any]) -> Tensor:
        assert lengths is not None
        return ctc_loss(logits, lengths, targets)

    def decode_tokens(self, logits: Tensor, lengths: Optional[Tensor], vocabulary: list[str]) -> list[list[str]]:
        """Greedy CTC decoding to token names (vocabulary[i - 1] for id i)."""
        assert lengths is not None
        return [[vocabulary[t - 1] for t in ids] for ids in ctc_greedy_decode(logits, lengths)]

    def stride(self, frame_rate: int) -> int:
        """Frames the head stacks into one (1 unless overridden)."""
        return 1

    def trainable(self, examples: Examples, frames_of: Callable[[str], int], frame_rate: int) -> tuple[Examples, int]:
        stride = self.stride(frame_rate)
        keep = [i for i, (key, target) in enumerate(zip(examples.keys, examples.targets))
                if frames_of(key) // stride >= ctc_min_frames(target)]
        kept = Examples([examples.keys[i] for i in keep], [examples.targets[i] for i in keep],
                        [examples.references[i] for i in keep])
        return kept, len(examples) - len(kept)


class PhoneRecognition(CtcTask):
    """PR: linear + CTC over phones; phone error rate."""

    name, title = "pr", "PR"
    metric = selection_metric = "per"
    recipe_name = "pr"
    columns = ("phones", "text", "language")

    def __init__(self, phonemize: Callable[[str, str], list[str]], voice_for: Callable[[Optional[str]], Optional[str]],
                 lexicon: Optional[str] = None):
        """For utterances with a transcript but no phones: voice_for(language) picks the eSpeak NG voice of
        the utterance's `language` value (None when it has none), or returns None when eSpeak cannot read
        that language; phonemize(text, voice) gives the phones. `lexicon` names the lexicon files the
        corpus's phones came from (`shard.lexicon`): then an utterance without phones (a word of it is in
        no lexicon file) is skipped and listed, not phonemised, since eSpeak's phones are not the
        lexicon's (ARPAbet, say) and the two inventories would mix."""
        self.phonemize, self.voice_for, self.lexicon = phonemize, voice_for, lexicon

    def prepare(self, rows: dict[str, list[dict[str, Any]]], audio: Optional[CorpusAudio] = None) -> Prepared:
        notes = []
        phones: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
        missing: dict[str, list] = {s: [] for s in SPLITS}
        unreadable: dict[str, list] = {s: [] for s in SPLITS}
        unlisted: dict[str, list] = {s: [] for s in SPLITS}
        voices: Counter[str] = Counter()
        for split in SPLITS:
            for r in rows[split]:
                seq = [p for p in (r.get("phones") or []) if p != SILENCE]
                if not seq and (r.get("text") or "").strip():
                    if self.lexicon is not None:  # the corpus's phones came from a lexicon: no eSpeak for the rest
                        unlisted[split].append(r)
                        continue
                    voice = self.voice_for(_language(r.get("language")))
                    if voice is None:
                        unreadable[split].append(r)
                        continue
                    seq = [p for p in self.phonemize(r["text"], voice) if p != SILENCE]
                    voices[voice] += 1
                if seq:
                    phones[split][r["key"]] = seq
                else:
                    missing[split].append(r)
        if sum(len(v) for v in unreadable.values()):
            notes.append(_unreadable_note(unreadable))
        if sum(len(v) for v in unlisted.values()):
            keys = [r["key"] for s in SPLITS for r in unlisted[s]]
            notes.append(f"PR: {_count_by_split(unlisted)} without lexicon phones (a word in no file of "
                         f"{self.lexicon}) skipped, not phonemised with eSpeak NG, whose phones are not the "
                         f"lexicon's: {_listed(keys)}")
        if not phones["train"]:
            raise TaskSkipped("the corpus has neither phones nor transcripts eSpeak NG can read in its train split")
        if voices:
            used = ", ".join(f"{v} {n}" for v, n in sorted(voices.items()))
            notes.append(f"PR: phones of {sum(voices.values())} utterances from eSpeak NG phonemisation of their "
                         f"text (voices: {used})")
        if sum(len(v) for v in missing.values()):
            notes.append(f"PR: {_count_by_split(missing)} without phones or text skipped")
        inventory, ids, unseen = token_vocabulary(phones["train"].values(),
                                                  [seq for s in ("valid", "test") for seq in phones[s].values()])
        if unseen:
            notes.append(f"PR: {sum(unseen.values())} valid/test phone tokens of {len(unseen)} phones absent from "
                         f"train ({', '.join(sorted(unseen)[:10])}) count as errors")
        splits = {s: Examples(list(phones[s]), [[ids[p] for p in seq if p in ids] for seq in phones[s].values()],
                              list(phones[s].values())) for s in SPLITS}
        return Prepared(splits, inventory, notes)

    def head(self, dim: int, outputs: int, frame_rate: int, recipe: Recipe) -> nn.Module:
        return LinearHead(dim, outputs, recipe.projection)

    def predict(self, logits: Tensor, lengths: Optional[Tensor], vocabulary: list[str]) -> list[Any]:
        return self.decode_tokens(logits, lengths, vocabulary)

    def score(self, references: list[Any], predictions: list[Any]) -> dict[str, float]:
        return {"per": phone_error_rate(references, predictions)}


class SpeechRecognition(CtcTask):
    """ASR: BiLSTM + character CTC over the characters of the normalised training transcripts (any script,
    `transcripts.normalize_transcript`). Character error rate is always reported; word error rate is
    reported too, as the main metric, when the transcripts are written with spaces between words: when
    no training transcript holds a character of a script written without them (Chinese, Japanese,
    Thai, ...). Else CER is the main metric, as for AISHELL-1. `prepare` decides it.

    CER picks the epoch by default (the demo's choice: with minutes of training data WER stays near 1
    for many epochs while CER already moves); with `select_on_main_metric` the main metric does, as
    s3prl keeps the checkpoint of the best dev WER (the `superb` protocol)."""

    name, title = "asr", "ASR"
    metric = "wer"
    recipe_name = "asr"
    columns = ("text",)

    def __init__(self, select_on_main_metric: bool = False) -> None:
        self.words = True
        """Whether WER is reported (set by `prepare` from the training transcripts)."""
        self.select_on_main_metric = select_on_main_metric

    @property  # type: ignore[override]
    def selection_metric(self) -> str:
        """The valid metric that picks the update and the learning rate: the main one (WER, or CER
        without word spaces) with `select_on_main_metric`, else CER."""
        return self.metric if self.select_on_main_metric else "cer"

    def prepare(self, rows: dict[str, list[dict[str, Any]]], audio: Optional[CorpusAudio] = None) -> Prepared:
        notes = []
        texts = {s: {r["key"]: normalize_transcript(r.get("text") or "") for r in rows[s]} for s in SPLITS}
        missing = {s: [k for k, t in texts[s].items() if not t] for s in SPLITS}
        if not any(texts["train"].values()):
            raise TaskSkipped("the corpus has no transcripts in its train split")
        if sum(len(v) for v in missing.values()):
            notes.append(f"ASR: {_count_by_split(missing)} without a transcript skipped")
        self.words = written_with_word_spaces(texts["train"].values())
        self.metric = "wer" if self.words else "cer"
        if not self.words:
            notes.append(f"ASR: CER only, no WER: the training transcripts hold text in "
                         f"{', '.join(unspaced_scripts_in(texts['train'].values()))}, written without spaces "
                         f"between words")
        vocabulary, ids, unseen = token_vocabulary(texts["train"].values(),
                                                   [t for s in ("valid", "test") for t in texts[s].values()])
        if unseen:
            notes.append(f"ASR: {sum(unseen.values())} valid/test characters of {len(unseen)} kinds absent from "
                         f"train ({' '.join(sorted(unseen)[:20])}) count as errors")
        splits = {}
        for split in SPLITS:
            keys = [k for k, t in texts[split].items() if t]
            splits[split] = Examples(keys, [[ids[c] for c in texts[split][k] if c in ids] for k in keys],
                                     [texts[split][k] for k in keys])
        return Prepared(splits, vocabulary, notes)

    def stride(self, frame_rate: int) -> int:
        return max(1, round(frame_rate / TARGET_FRAME_RATE))

    def head(self, dim: int, outputs: int, frame_rate: int, recipe: Recipe) -> nn.Module:
        return BiLSTMHead(dim, recipe.hidden, recipe.layers, outputs, self.stride(frame_rate), recipe.projection,
                          recipe.dropout)

    def predict(self, logits: Tensor, lengths: Optional[Tensor], vocabulary: list[str]) -> list[Any]:
        """Decoded characters, spaced as references are (`transcripts.join_words`)."""
        return [join_words("".join(chars)) for chars in self.decode_tokens(logits, lengths, vocabulary)]

    def score(self, references: list[Any], predictions: list[Any]) -> dict[str, float]:
        cer = {"cer": char_error_rate(references, predictions)}
        return {"wer": word_error_rate(references, predictions), **cer} if self.words else cer


def token_vocabulary(train: Iterable[Sequence[str]], others: Iterable[Sequence[str]]
                     ) -> tuple[list[str], dict[str, int], Counter]:
    """A CTC vocabulary: the tokens of the training sequences (sorted), their ids (from 1; 0 is the
    blank), and how often each token of `others` (valid and test) outside it occurs."""
    vocabulary = sorted({t for seq in train for t in seq})
    ids = {t: i + 1 for i, t in enumerate(vocabulary)}
    return vocabulary, ids, Counter(t for seq in others for t in seq if t not in ids)


def _language(value: Any) -> Optional[str]:
    """An utterance's `language` value, None when it has none."""
    return None if value is None else (str(value).strip() or None)


def _unreadable_note(groups: dict[str, list[dict[str, Any]]]) -> str:
    """One line: the utterances whose language eSpeak NG cannot phonemise, with their languages and keys."""
    rows = [r for s in SPLITS for r in groups[s]]
    languages = Counter(str(r.get("language")) for r in rows)
    counts = ", ".join(f"{lang} {n}" for lang, n in sorted(languages.items()))
    return (f"PR: {_count_by_split(groups)} in languages eSpeak NG cannot phonemise skipped ({counts}): "
            f"{_listed([r['key'] for r in rows])}")


def _listed(keys: list[str]) -> str:
    """The first 20 keys, and how many more."""
    return ", ".join(keys[:20]) + (f" and {len(keys) - 20} more" if len(keys) > 20 else "")

def _count_by_split(groups: dict[str, list]) -> str:
    """{"train": [..2..], "valid": [], "test": [..1..]} -> "2 train and 1 test utterances"."""
    parts = [f"{len(v)} {s}" for s, v in groups.items() if v]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{text} utterance{'s' if sum(len(v) for v in groups.values()) != 1 else ''}"
