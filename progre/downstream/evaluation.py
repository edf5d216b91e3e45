"""`progre evaluate`: SUPERB's protocol on a frozen upstream: per task, layer weights and a head fitted
on train, the epoch (and learning rate) chosen on valid, scores on test.

`evaluate_upstream` builds the tasks (`registry`), prepares each from the corpus's index rows
(`rows`), reads the upstream's hidden states from the shared cache (`upstreams`: every task, and any
later evaluation of the same upstream on the same corpus, reads them without recomputing) and
normalises them once into the tables every task reads (`Inputs`); `fits` runs the heads' fits and
`records` writes each task's outputs into ``<folder>/<task>/``. A task whose recipe cross-validates
over a column the corpus has (the `superb` protocol's ER over IEMOCAP's ``fold``) is prepared and
fitted once per fold (`rows.fold_rows`), and its record holds the mean over the folds
(`records.cross_validation_record`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..data.corpus import SPLITS
from ..data.shards import Shards
from ..errors import UserError
from ..features.store import FeatureStore
from ..log import logger
from ..settings import setting
from . import DEFAULT_TASKS, TASKS
from .featurizer import Featurizer
from .fits import TaskFits, fit_all, task_fits
from .head_data import StateTable, state_statistics, utterance_means
from .pool import fit_devices
from .recipes import RECIPE_BOOKS, RecipeBook, with_overrides
from .records import cross_validation_record, skipped_record, task_record, write_metrics
from .registry import CLASSIFY_PREFIX, COLUMN_NAME, TaskOptions, build_task
from .rows import FOLD_VALID_EVERY, CorpusAudio, fold_rows, split_rows
from .tasks import Prepared, Task, TaskSkipped
from .upstreams import AudioView, HiddenStates, Upstream, cached_hidden_states


@dataclass(frozen=True)
class EvaluationSettings:
    """The settings of an evaluation (the `evaluate` params section); see `progre params evaluate`.
    `protocol` names the recipe book (`recipes.RECIPE_BOOKS`); values left None take the book's."""

    tasks: tuple[str, ...] = setting(DEFAULT_TASKS, "downstream tasks: sid (speaker), pr (phones), asr (transcripts, "
                                     "any script), er (style), se (speech enhancement), vc (voice conversion to one "
                                     "target speaker), lid (language), or cls:COLUMN to classify utterances by any "
                                     "categorical metadata column (e.g. [sid,lid,cls:accent]; outputs in cls-COLUMN/)")
    protocol: str = setting("demo", "which recipe book sizes the heads, schedules and featurizer normalisation: demo "
                                    "(small heads for the built-in corpus on a CPU) or superb (s3prl's downstream "
                                    "settings, for Base-scale upstreams; see docs/DESIGN.md)",
                            choices=tuple(RECIPE_BOOKS))
    head_seeds: int = setting(3, "every head is fitted with this many seeds (seed, seed+1, ...); the report gives the "
                                 "mean and standard deviation of the test scores; the first seed also searches the "
                                 "learning rate", min=1)
    lr: Optional[tuple[float, ...]] = setting(None, "learning rates of heads and layer weights; each is tried and the "
                                                    "one with the best valid score kept (null: the recipe book's per "
                                                    "task; demo: SID and ER [1e-2, 1e-3], PR [1e-1, 3e-2], ASR [1e-2]; "
                                                    "superb: 1e-1 to 1e-5)", above=0.0)
    batch_size: Optional[int] = setting(None, "utterances per batch (null: the recipe book's; demo 16)", min=1)
    max_epochs: Optional[int] = setting(None, "train for this many epochs, validating after each (null: the recipe "
                                              "book's; demo: SID and ER 100, PR 80, ASR 20; superb counts updates)",
                                        min=1)
    patience: Optional[int] = setting(None, "stop after this many validations without a better score (null: the "
                                            "recipe book's; demo: SID and ER 10, PR 15, ASR 5; superb: none)", min=1)
    layer_norm: Optional[bool] = setting(None, "layer-normalise each hidden state before the weighted sum (null: the "
                                               "recipe book's; off in both)")
    standardize: Optional[bool] = setting(None, "standardise each hidden state per dimension with the mean and std "
                                                "of its training frames, a fixed affine map so that the layer weights "
                                                "compare states, not their scales (null: the recipe book's; demo on, "
                                                "superb off)")
    asr_hidden: Optional[int] = setting(None, "hidden units per direction of the ASR BiLSTM (null: the recipe book's; "
                                              "demo 96, superb 1024)", min=1)
    asr_layers: Optional[int] = setting(None, "BiLSTM layers of the ASR head (null: the recipe book's; 2)", min=1)
    phonemize_voice: str = setting("en-us", "eSpeak NG voice that phonemises transcripts for PR when the corpus has "
                                            "text but no phones, for utterances without a language; an utterance's "
                                            "language (ISO 639 code) picks its own voice")
    batch_seconds: float = setting(60.0, "audio seconds per batch when computing hidden states", min=1.0)
    hidden_dtype: str = setting("float16", "storage type of cached hidden states", choices=("float16", "float32"))
    max_ram_gb: float = setting(8.0, "hidden states of the evaluated utterances are held in memory as float32 up to "
                                     "this size (read once for every task, epoch and seed), else read from the cache "
                                     "per batch", above=0.0)
    se_noise: str = setting("demo", "SE mixes noise into clean utterances: demo (white, pink or brown noise) or a "
                                    "folder of noise recordings (wav/flac/ogg)")
    se_snr_db: tuple[float, float] = setting((2.5, 17.5), "SE: the SNR of each mixture is drawn from this range in "
                                                          "dB (VoiceBank-DEMAND's test SNRs: 2.5 to 17.5)")
    se_noisy: Optional[str] = setting(None, "SE: a shard folder of noisy recordings with the same keys as --shards "
                                            "(VoiceBank-DEMAND's noisy and clean folders sharded alike) instead of "
                                            "mixing")
    vc_target: Optional[str] = setting(None, "VC: the target speaker (null: the first speaker, sorted, with clean "
                                             "training and valid utterances); every other speaker's test utterances "
                                             "are converted")
    seed: int = setting(1234, "random seed of head initialisation, batch order, noise mixtures and random-init "
                              "upstreams")
    workers: int = setting(2, "head fits run side by side in this many processes, one thread each; on CUDA this many "
                              "per visible GPU, each fitting on its GPU (one process in all: the fits run one after "
                              "another in this one); results do not depend on it", min=1)

    def __post_init__(self) -> None:
        if self.se_snr_db[0] > self.se_snr_db[1]:
            raise UserError(f"se_snr_db: expected [low, high] in dB, got {list(self.se_snr_db)}")
        if not self.tasks:
            raise UserError(f"tasks: give at least one task ({', '.join(TASKS)}, {CLASSIFY_PREFIX}COLUMN)")
        if self.lr is not None and not self.lr:
            raise UserError("lr: give at least one learning rate, or null for the recipe book's")
        for task in self.tasks:
            if task not in TASKS and not (task.startswith(CLASSIFY_PREFIX)
                                          and COLUMN_NAME.fullmatch(task[len(CLASSIFY_PREFIX):])):
                raise UserError(f"tasks: {task!r} is not a task ({', '.join(TASKS)}, or {CLASSIFY_PREFIX}COLUMN with "
                                f"COLUMN a metadata column of letters, digits, _ and -)")

    def recipe_book(self) -> RecipeBook:
        """The book `protocol` names, with the values these settings give (not None) in its recipes."""
        return with_overrides(RECIPE_BOOKS[self.protocol], lrs=self.lr, batch_size=self.batch_size,
                              max_epochs=self.max_epochs, patience=self.patience, standardize=self.standardize,
                              layer_norm=self.layer_norm, asr_hidden=self.asr_hidden, asr_layers=self.asr_layers)

    def head_seed_list(self) -> list[int]:
        """The seeds every head is fitted with: the first also searches the learning rate."""
        return [self.seed + i for i in range(self.head_seeds)]

    def task_options(self, shards: Shards, cache: Path, device: torch.device) -> TaskOptions:
        """What the registry builds the tasks with (`registry.build_task`)."""
        return TaskOptions(shards, cache, device, self.seed, self.phonemize_voice, self.se_noise, self.se_snr_db,
                           self.se_noisy, self.vc_target, self.recipe_book())


@dataclass
class Inputs:
    """What every task of one evaluation shares."""

    hidden: HiddenStates
    tables: dict[str, StateTable]
    """Normalised hidden states of every utterance a task reads: of the corpus ("clean"), and of what the
    SE task's upstream hears ("noisy")."""
    means: dict[str, np.ndarray]
    """key -> (S, D) utterance mean of the normalised states (for the utterance tasks)."""


def evaluate_upstream(upstream: Upstream, shards: Shards, pitch: Optional[FeatureStore],
                      settings: EvaluationSettings, device: torch.device, cache: Path, out: Path) -> dict[str, Any]:
    """Evaluate `upstream` on the corpus `shards` (with the pitch contours of `pitch`, for a ProgRE model;
    None: computed on the fly) on every task of `settings.tasks`, on `device`, keeping hidden states and
    the work that is the same for every upstream in `cache`; writes each task's outputs into
    out/<task>/ (`records`) and returns the summary."""
    start = time.perf_counter()
    options = settings.task_options(shards, cache, device)
    book = options.book
    tasks = [build_task(name, options) for name in dict.fromkeys(settings.tasks)]
    prepared, skipped, cross_notes = _prepare(tasks, shards, cache, book)
    if not prepared:
        reasons = "; ".join(f"{t.title}: {skipped[t.name]}" for t in tasks)
        raise UserError(f"nothing to evaluate on {shards.folder}: {reasons}")
    inputs = _inputs(settings, book, upstream, shards, cache, None if pitch is None else pitch.folder, device, tasks,
                     prepared)
    hidden = inputs.hidden
    summary: dict[str, Any] = {"upstream": upstream.name, "upstream_spec": upstream.spec,
                               "num_states": hidden.num_states, "state_names": hidden.state_names, "tasks": {}}
    records: dict[str, dict[str, Any]] = {}
    plans: dict[str, TaskFits] = {}
    folds_of: dict[str, list[str]] = {}
    for task in tasks:
        if task.name in skipped:
            continue
        try:
            task_plans = [task_fits(task, prep, book.recipe(task.recipe_name), inputs.tables[task.states],
                                    inputs.means, hidden.frame_rate, settings.head_seed_list(), fold)
                          for fold, prep in prepared[task.name].items()]
        except TaskSkipped as exc:
            skipped[task.name] = str(exc)
            logger.warning("%s skipped: %s", task.title, exc)
            continue
        plans |= {plan.name: plan for plan in task_plans}
        if task_plans[0].fold is not None:
            folds_of[task.name] = [plan.name for plan in task_plans]
    folded: dict[str, dict[str, TaskFits]] = {}
    for name, fits in fit_all(plans, hidden, device, upstream.name, fit_devices(settings.workers, device)):
        task = plans[name].task
        try:
            if isinstance(fits, TaskSkipped):
                raise fits
            if task.name not in folds_of:
                records[task.name] = task_record(fits, upstream, hidden, book, device, out / task.name)
                continue
            folded.setdefault(task.name, {})[name] = fits
            if len(folded[task.name]) == len(folds_of[task.name]):  # every fold done
                done = [folded[task.name][n] for n in folds_of[task.name]]
                records[task.name] = cross_validation_record(done, upstream, hidden, book, device,
                                                             out / task.name, cross_notes[task.name])
        except TaskSkipped as exc:
            if task.name not in skipped:
                skipped[task.name] = str(exc)
                logger.warning("%s skipped: %s", task.title, exc)
    for task in tasks:
        record = records.get(task.name) or skipped_record(task, upstream, hidden, skipped[task.name])
        write_metrics(out / task.name, record)
        summary["tasks"][task.name] = {k: record[k] for k in ("status", "metric", "test", "reason") if k in record}
    summary["seconds"] = time.perf_counter() - start
    return summary


def _prepare(tasks: list[Task], shards: Shards, cache: Path, book: RecipeBook
             ) -> tuple[dict[str, dict[Optional[str], Prepared]], dict[str, str], dict[str, list[str]]]:
    """Each task's labelled splits, prepared from the index rows of the columns the tasks read (and, for
    the tasks that read audio, the corpus's audio), or why it cannot run (logged): task name -> {None:
    the corpus's split}, or for a task cross-validated over a column the corpus has, {fold: its splits};
    the reasons of the skipped tasks; and the notes on each cross-validation."""
    fold_columns = {t.name: book.recipe(t.recipe_name).folds for t in tasks}
    rows = split_rows(shards, [*(c for t in tasks for c in t.columns), *filter(None, fold_columns.values())])
    audio = CorpusAudio.of(shards, cache)
    prepared, skipped, cross_notes = {}, {}, {}
    for task in tasks:
        column = fold_columns[task.name]
        folds, fold_notes = fold_rows(rows, column) if column else ({}, [])
        try:
            preps = {fold: _prepare_one(task, split_of, audio, fold)
                     for fold, split_of in (folds.items() if folds else [(None, rows)])}
        except TaskSkipped as exc:
            skipped[task.name] = str(exc)
            logger.warning("%s skipped: %s", task.title, exc)
            continue
        if folds:
            cross_notes[task.name] = [f"{task.title}: {len(folds)}-fold cross-validation over {column} "
                                      f"({', '.join(folds)}): each fold is the test split once, every "
                                      f"{FOLD_VALID_EVERY}th utterance (by key) of each other fold valid",
                                      *(f"{task.title}: {n}" for n in fold_notes)]
            logger.info("%s", cross_notes[task.name][0])
            for note in cross_notes[task.name][1:]:
                logger.warning("%s", note)
        for fold, prep in preps.items():
            for note in prep.notes:
                logger.warning("%s", note if fold is None else f"fold {fold}: {note}")
        prepared[task.name] = preps
    return prepared, skipped, cross_notes


def _prepare_one(task: Task, rows: dict[str, list[dict[str, Any]]], audio: CorpusAudio,
                 fold: Optional[str]) -> Prepared:
    prep = task.prepare(rows, audio)
    empty = [s for s in SPLITS if not len(prep.splits[s])]
    if empty:
        where = "" if fold is None else f" of fold {fold}"
        raise TaskSkipped(f"no usable utterances in the {' and '.join(empty)} split"
                          f"{'s' if len(empty) > 1 else ''}{where}")
    return prep


def _inputs(p: EvaluationSettings, book: RecipeBook, up: Upstream, shards: Shards, cache: Path, pitch: Optional[Path],
            device: torch.device, tasks: list[Task], prepared: dict[str, dict[Optional[str], Prepared]]) -> Inputs:
    """Hidden states (cached), normalised once into tables, and the utterance means the pooled tasks read.
    The normalisation's statistics are the clean training frames' (of the corpus's split), for the noisy
    states too."""
    hidden = cached_hidden_states(up, shards, cache, seed=p.seed, device=device, pitch=pitch,
                                  batch_seconds=p.batch_seconds, dtype=p.hidden_dtype)
    stats = state_statistics(hidden, shards.keys("train"), book.layer_norm) if book.standardize else (None, None)
    normalizer = Featurizer(hidden.num_states, hidden.dim, book.layer_norm, *stats)
    ran = [t for t in tasks if t.name in prepared]
    keys = {states: sorted({k for t in ran if t.states == states for prep in prepared[t.name].values()
                            for ex in prep.splits.values() for k in ex.keys}) for states in ("clean", "noisy")}
    tables = {"clean": StateTable(hidden, keys["clean"], normalizer.normalize, max_bytes=p.max_ram_gb * 1e9)}
    for task in ran:
        if task.noisy is not None:
            view = AudioView("noisy", frozenset(keys["noisy"]), task.noisy.mix, task.noisy.identity)
            noisy = cached_hidden_states(up, shards, cache, seed=p.seed, device=device, pitch=pitch,
                                         batch_seconds=p.batch_seconds, dtype=p.hidden_dtype, view=view)
            tables["noisy"] = StateTable(noisy, keys["noisy"], normalizer.normalize, max_bytes=p.max_ram_gb * 1e9)
    pooled = sorted({k for t in ran if t.pooled for prep in prepared[t.name].values() for ex in prep.splits.values()
                     for k in ex.keys})
    return Inputs(hidden, tables, utterance_means(tables["clean"], pooled))
