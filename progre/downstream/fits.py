"""Which head fits an evaluation runs, and when: per task, the learning-rate search with the first head
seed, then the other seeds at the best learning rate (`TaskFits`); every task's fits queued on one
`pool.FitPool` (BiLSTM heads first, a fit as soon as it can run; spread over the GPUs on CUDA), with one
progress bar over them. A cross-validated task has a `TaskFits` per fold, each with its own search (named
``task/fold-F``).

Each fit is seeded and independent of the others (`head_fit.fit`), so the results do not depend on
the order in which fits finish or on the number of workers. Nothing here writes a file: `records`
writes what the fits found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional

import numpy as np
import torch

from ..log import logger, progress_bar
from .featurizer import Featurizer
from .head_data import Examples, FrameSplit, PooledSplit, StateTable
from .head_fit import DownstreamModel, FitResult, FitSettings, fit
from .pool import FitPool
from .recipes import Recipe
from .specaugment import SpecAugment
from .tasks import Prepared, Task, TaskSkipped
from .upstreams import HiddenStates

Job = tuple[str, float, int]
"""One fit: (the `TaskFits.name`, learning rate, head seed)."""


@dataclass
class TaskFits:
    """One task's data and head recipe, and its fits as they complete: the learning-rate search
    with the first head seed, then the other seeds with the best learning rate."""

    task: Task
    prep: Prepared
    splits: dict[str, Examples]
    data: dict[str, Any]
    """split -> FrameSplit or PooledSplit."""
    table: StateTable
    recipe: Recipe
    seeds: list[int]
    notes: list[str]
    max_updates: int
    eval_every: int
    searched: dict[float, FitResult] = field(default_factory=dict)
    by_seed: dict[int, FitResult] = field(default_factory=dict)
    best_lr: Optional[float] = None
    fold: Optional[str] = None
    """The cross-validation fold whose test split these fits score (None: the corpus's split)."""

    @property
    def name(self) -> str:
        """The task's name, or ``task/fold-F`` for one fold of a cross-validated task."""
        return self.task.name if self.fold is None else f"{self.task.name}/fold-{self.fold}"

    def first_jobs(self) -> list[Job]:
        """Jobs (name, lr, seed) that can start now: with one learning rate, every seed."""
        if len(self.recipe.lrs) == 1:
            self.best_lr = self.recipe.lrs[0]
            return [(self.name, self.best_lr, seed) for seed in self.seeds]
        return [(self.name, lr, self.seeds[0]) for lr in self.recipe.lrs]

    def add(self, lr: float, seed: int, result: FitResult) -> list[Job]:
        """Record a finished fit; returns the jobs it makes possible (the other seeds, once the search ends)."""
        if seed == self.seeds[0]:
            self.searched[lr] = result
        if lr == self.best_lr:
            self.by_seed[seed] = result
        if self.best_lr is not None or len(self.searched) < len(self.recipe.lrs):
            return []
        metric = self.task.selection_metric
        best = self.recipe.lrs[0]
        for lr in self.recipe.lrs:
            if self.task.better(self.searched[lr].valid[metric], self.searched[best].valid[metric]):
                best = lr
        self.best_lr = best
        self.by_seed[self.seeds[0]] = self.searched[best]
        return [(self.name, best, seed) for seed in self.seeds[1:]]

    @property
    def done(self) -> bool:
        return len(self.by_seed) == len(self.seeds)

    @property
    def runs(self) -> list[FitResult]:
        return [self.by_seed[seed] for seed in self.seeds]

    @property
    def every_fit(self) -> list[FitResult]:
        """The search's fits and the other seeds'."""
        return [*self.searched.values(), *(self.by_seed[s] for s in self.seeds[1:])]


def task_fits(task: Task, prep: Prepared, recipe: Recipe, table: StateTable, means: dict[str, np.ndarray],
              frame_rate: int, seeds: list[int], fold: Optional[str] = None) -> TaskFits:
    """The task's data for its head (of cross-validation `fold`, when given): frames of `table`, or for a
    pooled task the utterance `means` (key -> (S, D)); TaskSkipped when no training utterance can be
    fitted."""
    notes = list(prep.notes)
    splits = dict(prep.splits)
    splits["train"], dropped = task.trainable(splits["train"], table.num_frames, frame_rate)
    if dropped:
        notes.append(f"{task.title}: {dropped} train utterances shorter than their CTC target skipped")
        logger.warning("%s", notes[-1])
    if not len(splits["train"]):
        raise TaskSkipped("no train utterance is long enough for its CTC target")
    if task.pooled:
        data: dict[str, Any] = {s: PooledSplit(means, ex) for s, ex in splits.items()}
    else:
        data = {s: FrameSplit(table, ex) for s, ex in splits.items()}
    per_epoch = -(-len(splits["train"]) // recipe.batch_size)
    max_updates, eval_every = recipe.updates(per_epoch)
    return TaskFits(task, prep, splits, data, table, recipe, seeds, notes, max_updates, eval_every, fold=fold)


def fit_head(fits: TaskFits, hidden: HiddenStates, device: torch.device, upstream: str, lr: float,
             seed: int) -> FitResult:
    """A fresh featurizer and head for `fits.task`, seeded with `seed`, fitted with learning rate `lr`."""
    recipe, task = fits.recipe, fits.task
    settings = FitSettings(lr=lr, batch_size=recipe.batch_size, max_updates=fits.max_updates,
                           eval_every=fits.eval_every, patience=recipe.patience, seed=seed,
                           clip_norm=recipe.clip_norm, warmup_steps=recipe.warmup_steps)
    torch.manual_seed(seed)
    model = DownstreamModel(Featurizer(hidden.num_states, hidden.dim),  # the table holds normalised states
                            task.head(hidden.dim, task.num_outputs(fits.prep.vocabulary), hidden.frame_rate, recipe),
                            None if recipe.specaugment is None or task.pooled else SpecAugment(recipe.specaugment))
    fold = "" if fits.fold is None else f" fold {fits.fold}"
    return fit(task, model, fits.data["train"], fits.data["valid"], fits.data["test"], fits.prep.vocabulary,
               settings, device, label=f"{task.title}{fold} ({upstream}, lr {lr:g}, seed {seed})")


def fit_job(plans: dict[str, TaskFits], hidden: HiddenStates, upstream: str, job: Job, device: torch.device, *,
            in_worker: bool = False) -> FitResult | TaskSkipped:
    """One fit of `fit_all`, on `device` (a worker's; module-level, so that spawned workers can be handed it).
    A head fitted on a GPU in a worker comes back on the CPU: a worker's CUDA tensors would stay tied to it."""
    name, lr, seed = job
    try:
        result = fit_head(plans[name], hidden, device, upstream, lr, seed)
    except TaskSkipped as exc:
        return exc
    if in_worker and device.type != "cpu":
        result.model.cpu()
    return result


def fit_all(plans: dict[str, TaskFits], hidden: HiddenStates, device: torch.device, upstream: str,
            devices: list[torch.device]) -> Iterator[tuple[str, TaskFits | TaskSkipped]]:
    """Fit the heads of every `TaskFits` of `plans` (keyed by `TaskFits.name`; in one worker per entry of
    `devices` side by side, `pool.fit_devices`; in this process with one); yields (name, its fits, their heads
    on `device`) once all are done, or (name, why it was skipped). The BiLSTM heads' fits, the longest, are
    queued first."""
    run = partial(fit_job, plans, hidden, upstream, in_worker=len(devices) > 1)
    for plan in {id(plan.task): plan for plan in plans.values()}.values():  # a task's folds share the task
        plan.task.before_fitting()  # what every fit would compute for itself, computed once before forking
    order = sorted(plans.values(), key=lambda plan: -plan.recipe.layers)
    total = sum(len(plan.recipe.lrs) + len(plan.seeds) - 1 for plan in plans.values())
    with FitPool(run, devices) as pool, _fits_bar(len(devices) > 1, total, upstream) as advance:
        for plan in order:
            for job in plan.first_jobs():
                pool.submit(job)
        skipped: set[str] = set()
        for (name, lr, seed), result in pool.completed():
            advance()
            if name in skipped:
                continue
            if isinstance(result, TaskSkipped):
                skipped.add(name)
                yield name, result
                continue
            result.model.to(device)
            plan = plans[name]
            for job in plan.add(lr, seed, result):
                pool.submit(job)
            if plan.done:
                yield name, plan


@contextmanager
def _fits_bar(show: bool, total: int, upstream: str) -> Iterator[Callable[[], None]]:
    """One progress bar over all fits when they run in workers (each fit shows its own otherwise)."""
    if not show:
        yield lambda: None
        return
    with progress_bar() as progress:
        bar = progress.add_task(f"head fits of {upstream}", total=total)
        yield lambda: progress.advance(bar)
