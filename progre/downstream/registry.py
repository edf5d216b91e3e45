"""The task registry: every task `progre evaluate` runs, built by its name in `evaluate.tasks`.

`build_task(name, options)` gives the task of a name of `progre.downstream.TASKS` (`BUILDERS`) or
`cls:COLUMN`, with what it needs from the evaluation's options: PR's eSpeak NG voices (and whether the
corpus's phones came from a lexicon: its shard folder's summary.json says so), SE's noisy audio (a
noisy shard folder with the same keys, or noise mixed in on the fly: the demo's coloured noise or a
folder of recordings) and loss, ASR's selection metric (those two from the recipe book) and VC's
target speaker and judges. Building a task reads no audio and trains nothing (the VC judges are
trained, or read from the cache, when VC first needs them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import torch

from ..data.noise import ColouredNoiseSource, NoiseFolder, NoisyMixer
from ..data.shards import Shards
from ..errors import UserError
from ..io import read_json
from . import TASKS
from .conversion import VoiceConversion
from .enhancement import SpeechEnhancement, mixer_view, paired_view
from .judges import Judges, cached_judges
from .recipes import DEMO, RecipeBook
from .tasks import NoisyAudio, PhoneRecognition, SpeechRecognition, Task, UtteranceClassification

CLASSIFICATION_TASKS = {"sid": ("SID", "speaker", "speaker"), "er": ("ER", "style", "style"),
                        "lid": ("LID", "language", "language")}
"""Utterance classification tasks by name: (title, metadata column, what one class is called)."""
CLASSIFY_PREFIX = "cls:"
"""`cls:COLUMN` names the classification of any categorical metadata column."""
COLUMN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class TaskOptions:
    """What building a task may need besides its name: the evaluation's options for PR, SE and VC
    (`EvaluationSettings.task_options` fills them), and the corpus, cache folder and device that SE's
    noisy corpus is checked against and the VC judges are trained with."""

    shards: Shards
    cache: Path
    device: torch.device
    seed: int
    """Seeds SE's noise mixtures and the VC judges."""
    phonemize_voice: str
    se_noise: str
    se_snr_db: tuple[float, float]
    se_noisy: Optional[str]
    vc_target: Optional[str]
    book: RecipeBook = DEMO
    """The recipe book: SE's loss and ASR's selection metric are its recipes' choices."""


def _classification(name: str) -> Callable[[TaskOptions], Task]:
    title, column, what = CLASSIFICATION_TASKS[name]
    recipe = name if name in ("sid", "er") else "cls"
    return lambda options: UtteranceClassification(name, title, column, what, recipe)


def _phone_recognition(options: TaskOptions) -> Task:
    from ..data.espeak import phonemize

    return PhoneRecognition(phonemize, partial(_voice_for, options.phonemize_voice), lexicon_of(options.shards))


def _voice_for(default: Optional[str], language: Optional[str]) -> Optional[str]:
    """The utterance's language picks the voice; utterances without one get `default` (`phonemize_voice`)."""
    from ..data.espeak import voice_for_language

    return default if language is None else voice_for_language(language)


def lexicon_of(shards: Optional[Shards]) -> Optional[str]:
    """The lexicon files the corpus's phones came from (its summary.json's ``lexicon``, written by
    `progre shard` with ``lexicon``), as one string; None when they did not come from a lexicon."""
    summary = None if shards is None else shards.folder / "summary.json"
    if summary is None or not summary.is_file():
        return None
    lexicon = read_json(summary).get("lexicon")
    return None if not lexicon else ", ".join(lexicon.get("files") or ["a lexicon"])


def noisy_audio(options: TaskOptions) -> NoisyAudio:
    """What SE's upstream hears: a noisy corpus with the same keys (`se_noisy`), or noise mixed in on the
    fly (`se_noise`: "demo", the demo's coloured noise, or a folder of recordings)."""
    if options.se_noisy is not None:
        noisy = Shards(options.se_noisy)
        if noisy.fingerprint != options.shards.fingerprint:
            raise UserError(f"evaluate.se_noisy: {options.se_noisy} does not hold the same keys and lengths as "
                            f"{options.shards.folder}; shard the noisy and the clean folders of one dataset")
        return paired_view(noisy)
    source = ColouredNoiseSource() if options.se_noise == "demo" else NoiseFolder(options.se_noise)
    return mixer_view(NoisyMixer(source, options.seed, *options.se_snr_db))


def _voice_conversion(options: TaskOptions) -> Task:
    return VoiceConversion(options.vc_target, JudgesOnFirstUse(options), options.seed)


class JudgesOnFirstUse:
    """VC's judges, trained (or read from the cache) only when VC first needs them (a class, not a closure,
    so that a task can be handed to spawned fit workers)."""

    def __init__(self, options: TaskOptions):
        self.options = options
        self.judges: Optional[Judges] = None

    def __call__(self) -> Judges:
        if self.judges is None:
            o = self.options
            self.judges = cached_judges(o.shards, o.cache, o.seed, o.device)
        return self.judges


BUILDERS: dict[str, Callable[[TaskOptions], Task]] = {
    "sid": _classification("sid"),
    "pr": _phone_recognition,
    "asr": lambda options: SpeechRecognition(options.book.recipe("asr").select_on_main_metric),
    "er": _classification("er"),
    "se": lambda options: SpeechEnhancement(noisy_audio(options), options.book.recipe("se").mask_loss),
    "vc": _voice_conversion,
    "lid": _classification("lid"),
}
"""The builder of each task name of `TASKS`, in their order."""


def build_task(name: str, options: TaskOptions) -> Task:
    """The task called `name`: one of `TASKS`, or "cls:COLUMN" (classification of the metadata column
    COLUMN, named "cls-COLUMN" in outputs). Any other name is a ValueError that lists the known ones."""
    if name in BUILDERS:
        return BUILDERS[name](options)
    if name.startswith(CLASSIFY_PREFIX) and COLUMN_NAME.fullmatch(column := name[len(CLASSIFY_PREFIX):]):
        return UtteranceClassification(f"cls-{column}", column, column, f"{column} value", "cls")
    raise ValueError(f"unknown task {name!r}: the tasks are {', '.join(TASKS)} and {CLASSIFY_PREFIX}COLUMN "
                     f"(COLUMN: letters, digits, _ and -)")
