"""`progre evaluate`: SUPERB's protocol on a frozen upstream: per task, layer weights and a head fitted
on train, the epoch (and learning rate) chosen on valid, scores on test.

`evaluate_upstream` builds the tasks (`registry`), prepares each from the corpus's index rows
(`rows`), reads the upstream's hidden states from the shared cache (`upstreams`: every task, and any
later evaluation of the same upstream on the same corpus, reads them without recomputing) and
normalises them once into the tables every task reads (`Inputs`); `fits` runs the heads' fits and
`records` writes each task's outputs into ``<folder>/<task>/``.
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
from . import DEFAULT_TASKS
from .featurizer import Featurizer
from .fits import TaskFits, fit_all, task_fits
from .head_data import StateTable, state_statistics, utterance_means
from .pool import parallel_workers
from .recipes import RECIPE_BOOKS, RecipeBook, with_overrides
from .records import skipped_record, task_record, write_metrics
from .registry import TaskOptions, build_task
from .rows import CorpusAudio, split_rows
from .tasks import Prepared, Task, TaskSkipped
from .upstreams import AudioView, HiddenStates, Upstream, cached_hidden_states


@dataclass(frozen=True)
class EvaluationSettings:
    """The settings of an evaluation (the `evaluate` params section); see `progre params evaluate`.
    `protocol` names the recipe book (`recipes.RECIPE_BOOKS`); values left None take the book's."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    protocol: str = "demo"
    head_seeds: int = 3
    lr: Optional[tuple[float, ...]] = None
    batch_size: Optional[int] = None
    max_epochs: Optional[int] = None
    patience: Optional[int] = None
    layer_norm: Optional[bool] = None
    standardize: Optional[bool] = None
    asr_hidden: Optional[int] = None
    asr_layers: Optional[int] = None
    phonemize_voice: str = "en-us"
    batch_seconds: float = 60.0
    hidden_dtype: str = "float16"
    max_ram_gb: float = 8.0
    se_noise: str = "demo"
    se_snr_db: tuple[float, float] = (2.5, 17.5)
    se_noisy: Optional[str] = None
    vc_target: Optional[str] = None
    seed: int = 1234
    workers: int = 2
    """Head fits run side by side in this many processes (one thread each; 1: in this process)."""

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
                           self.se_noisy, self.vc_target)


@dataclass
class Inputs:
    """What every task of one evaluation shares."""

    hidden: HiddenStates
    book: RecipeBook
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
    tasks = [build_task(name, options) for name in dict.fromkeys(settings.tasks)]
    prepared, skipped = _prepare(tasks, shards, cache)
    if not prepared:
        reasons = "; ".join(f"{t.title}: {skipped[t.name]}" for t in tasks)
        raise UserError(f"nothing to evaluate on {shards.folder}: {reasons}")
    inputs = _inputs(settings, upstream, shards, cache, None if pitch is None else pitch.folder, device, tasks,
                     prepared)
    hidden = inputs.hidden
    summary: dict[str, Any] = {"upstream": upstream.name, "upstream_spec": upstream.spec,
                               "num_states": hidden.num_states, "state_names": hidden.state_names, "tasks": {}}
    records: dict[str, dict[str, Any]] = {}
    plans: dict[str, TaskFits] = {}
    for task in tasks:
        if task.name in skipped:
            continue
        try:
            plans[task.name] = task_fits(task, prepared[task.name], inputs.book.recipe(task.recipe_name),
                                         inputs.tables[task.states], inputs.means, hidden.frame_rate,
                                         settings.head_seed_list())
        except TaskSkipped as exc:
            skipped[task.name] = str(exc)
            logger.warning("%s skipped: %s", task.title, exc)
    workers = parallel_workers(settings.workers, device)
    for name, fits in fit_all(plans, hidden, device, upstream.name, workers):
        try:
            if isinstance(fits, TaskSkipped):
                raise fits
            records[name] = task_record(fits, upstream, hidden, inputs.book, device, out / name)
        except TaskSkipped as exc:
            skipped[name] = str(exc)
            logger.warning("%s skipped: %s", plans[name].task.title, exc)
    for task in tasks:
        record = records.get(task.name) or skipped_record(task, upstream, hidden, skipped[task.name])
        write_metrics(out / task.name, record)
        summary["tasks"][task.name] = {k: record[k] for k in ("status", "metric", "test", "reason") if k in record}
    summary["seconds"] = time.perf_counter() - start
    return summary


def _prepare(tasks: list[Task], shards: Shards, cache: Path) -> tuple[dict[str, Prepared], dict[str, str]]:
    """Each task's labelled splits, prepared from the index rows of the columns the tasks read (and, for
    the tasks that read audio, the corpus's audio), or why it cannot run (logged)."""
    rows = split_rows(shards, (c for t in tasks for c in t.columns))
    audio = CorpusAudio.of(shards, cache)
    prepared, skipped = {}, {}
    for task in tasks:
        try:
            prep = task.prepare(rows, audio)
            empty = [s for s in SPLITS if not len(prep.splits[s])]
            if empty:
                raise TaskSkipped(f"no usable utterances in the {' and '.join(empty)} split"
                                  f"{'s' if len(empty) > 1 else ''}")
        except TaskSkipped as exc:
            skipped[task.name] = str(exc)
            logger.warning("%s skipped: %s", task.title, exc)
            continue
        for note in prep.notes:
            logger.warning("%s", note)
        prepared[task.name] = prep
    return prepared, skipped


def _inputs(p: EvaluationSettings, up: Upstream, shards: Shards, cache: Path, pitch: Optional[Path],
            device: torch.device, tasks: list[Task], prepared: dict[str, Prepared]) -> Inputs:
    """Hidden states (cached), normalised once into tables, and the utterance means the pooled tasks read.
    The normalisation's statistics are the clean training frames', for the noisy states too."""
    book = p.recipe_book()
    hidden = cached_hidden_states(up, shards, cache, seed=p.seed, device=device, pitch=pitch,
                                  batch_seconds=p.batch_seconds, dtype=p.hidden_dtype)
    stats = state_statistics(hidden, shards.keys("train"), book.layer_norm) if book.standardize else (None, None)
    normalizer = Featurizer(hidden.num_states, hidden.dim, book.layer_norm, *stats)
    ran = [t for t in tasks if t.name in prepared]
    keys = {states: sorted({k for t in ran if t.states == states for ex in prepared[t.name].splits.values()
                            for k in ex.keys}) for states in ("clean", "noisy")}
    tables = {"clean": StateTable(hidden, keys["clean"], normalizer.normalize, max_bytes=p.max_ram_gb * 1e9)}
    for task in ran:
        if task.noisy is not None:
            view = AudioView("noisy", frozenset(keys["noisy"]), task.noisy.mix, task.noisy.identity)
            noisy = cached_hidden_states(up, shards, cache, seed=p.seed, device=device, pitch=pitch,
                                         batch_seconds=p.batch_seconds, dtype=p.hidden_dtype, view=view)
            tables["noisy"] = StateTable(noisy, keys["noisy"], normalizer.normalize, max_bytes=p.max_ram_gb * 1e9)
    pooled = sorted({k for t in ran if t.pooled for ex in prepared[t.name].splits.values() for k in ex.keys})
    return Inputs(hidden, book, tables, utterance_means(tables["clean"], pooled))
