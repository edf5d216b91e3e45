"""`progre evaluate`: SUPERB's protocol on a frozen upstream: per task, layer weights and a head fitted
on train, the epoch (and learning rate) chosen on valid, scores on test.

Writes, per task, into ``<folder>/<task>/``:

- ``metrics.json``: the test metric, the best valid metric, epochs, the upstream's name and
  hidden states (DVC metrics). A skipped task gets ``"status": "skipped"`` and the reason.
- ``layer_weights.json``: the learned, softmax-normalised weight of each hidden state, in the
  upstream's order (``layer_weights``: a list of {index, state, weight}).
- ``layer_weights.png``: those weights as bars.
- ``history.json``: per epoch, the mean train loss and the valid metrics.

Hidden states come from the shared cache (`progre.downstream.upstreams`), so every task, and any
later evaluation of the same upstream on the same corpus, reads them without recomputing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..data.shards import Shards
from ..errors import UserError
from ..io import write_json
from ..log import logger, progress_bar
from ..data.noise import ColouredNoiseSource, NoiseFolder, NoisyMixer
from .conversion import VoiceConversion
from .data import Examples, FrameSplit, PooledSplit, StateTable, state_statistics, utterance_means
from .enhancement import SpeechEnhancement, mixer_view, paired_view
from .judges import Judges, cached_judges
from .featurizer import Featurizer
from .plots import WeightPanel, save_weight_plot
from .pool import FitPool, parallel_workers
from . import DEFAULT_TASKS
from .recipes import PROTOCOLS, Protocol, Recipe, with_overrides
from .tasks import SPLITS, Prepared, Task, TaskSkipped, make_task
from .train import DownstreamModel, FitResult, FitSettings, fit, predictions_of
from .upstreams import AudioView, HiddenStates, Upstream, cached_hidden_states


@dataclass(frozen=True)
class EvaluationSettings:
    """The protocol's settings (the `evaluate` params section); see `progre params evaluate`. Values
    left None take the protocol's (`recipes`)."""

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

    def resolved_protocol(self) -> Protocol:
        return with_overrides(PROTOCOLS[self.protocol], lrs=self.lr, batch_size=self.batch_size,
                              max_epochs=self.max_epochs, patience=self.patience, standardize=self.standardize,
                              layer_norm=self.layer_norm, asr_hidden=self.asr_hidden, asr_layers=self.asr_layers)

    def head_seed_list(self) -> list[int]:
        """The seeds every head is fitted with: the first also searches the learning rate."""
        return [self.seed + i for i in range(self.head_seeds)]


@dataclass
class Inputs:
    """What every task of one evaluation shares."""

    upstream: Upstream
    hidden: HiddenStates
    protocol: Protocol
    tables: dict[str, StateTable]
    """Normalised hidden states of every utterance a task reads: of the corpus ("clean"), and of what the
    SE task's upstream hears ("noisy")."""
    means: dict[str, Any]
    """key -> (S, D) utterance mean of the normalised states (for the utterance tasks)."""
    device: torch.device


def evaluate_upstream(upstream: Upstream, shards: Shards, folder: Path, settings: EvaluationSettings,
                      device: torch.device, cache: Path, pitch: Optional[Path] = None) -> dict[str, Any]:
    """Evaluate `upstream` on every task of `settings.tasks`, writing each task's outputs into
    folder/<task>/; returns the summary."""
    start = time.perf_counter()
    tasks = [_task(t, settings, shards, cache, device) for t in dict.fromkeys(settings.tasks)]
    prepared, skipped = _prepare(tasks, shards)
    if not prepared:
        reasons = "; ".join(f"{t.title}: {skipped[t.name]}" for t in tasks)
        raise UserError(f"nothing to evaluate on {shards.folder}: {reasons}")
    inputs = _inputs(settings, upstream, shards, cache, pitch, device, tasks, prepared)
    summary: dict[str, Any] = {"upstream": upstream.name, "upstream_spec": upstream.spec,
                               "num_states": inputs.hidden.num_states, "state_names": inputs.hidden.state_names,
                               "tasks": {}}
    records: dict[str, dict[str, Any]] = {}
    plans: dict[str, TaskFits] = {}
    for task in tasks:
        if task.name in skipped:
            continue
        try:
            plans[task.name] = _task_fits(task, prepared[task.name], settings, inputs)
        except TaskSkipped as exc:
            skipped[task.name] = str(exc)
            logger.warning("%s skipped: %s", task.title, exc)
    for name, fits in _fit_all(plans, inputs, parallel_workers(settings.workers, device)):
        try:
            if isinstance(fits, TaskSkipped):
                raise fits
            records[name] = _task_record(fits, settings, inputs, folder / name)
        except TaskSkipped as exc:
            skipped[name] = str(exc)
            logger.warning("%s skipped: %s", plans[name].task.title, exc)
    for task in tasks:
        record = records.get(task.name) or _skipped_record(task, inputs, skipped[task.name])
        write_json(folder / task.name / "metrics.json", record)
        summary["tasks"][task.name] = {k: record[k] for k in ("status", "metric", "test", "reason") if k in record}
    summary["seconds"] = time.perf_counter() - start
    return summary


def _task(name: str, p: EvaluationSettings, shards: Shards, cache: Path, device: torch.device) -> Task:
    if name == "se":
        return SpeechEnhancement(shards, *_noisy_audio(p, shards))
    if name == "vc":
        judges: list[Judges] = []

        def judges_of() -> Judges:  # trained (or read from the cache) only when VC scores its test set
            if not judges:
                judges.append(cached_judges(shards, cache, p.seed, device))
            return judges[0]

        return VoiceConversion(shards, p.vc_target, judges_of, cache, p.seed)
    from ..data.espeak import phonemize, voice_for_language

    def voice_for(language: Optional[str]) -> Optional[str]:
        """The utterance's language picks the voice; utterances without one get `phonemize_voice`."""
        return p.phonemize_voice if language is None else voice_for_language(language)

    return make_task(name, phonemize, voice_for)


def _noisy_audio(p: EvaluationSettings, shards: Shards):
    """(noisy(key, clean), identity) of what SE's upstream hears: a noisy corpus with the same keys, or
    noise mixed in on the fly (the demo's coloured noise, or a folder of recordings)."""
    if p.se_noisy is not None:
        noisy = Shards(p.se_noisy)
        if noisy.fingerprint != shards.fingerprint:
            raise UserError(f"evaluate.se_noisy: {p.se_noisy} does not hold the same keys and lengths as "
                            f"{shards.folder}; shard the noisy and the clean folders of one dataset")
        return paired_view(noisy)
    source = ColouredNoiseSource() if p.se_noise == "demo" else NoiseFolder(p.se_noise)
    return mixer_view(NoisyMixer(source, p.seed, *p.se_snr_db))


def _prepare(tasks: list[Task], shards: Shards) -> tuple[dict[str, Prepared], dict[str, str]]:
    """Each task's labelled splits, or why it cannot run (logged). Columns the index lacks (any metadata
    column beyond its schema, for `cls:COLUMN`) come from the utterances' json members."""
    wanted = list(dict.fromkeys(c for t in tasks for c in t.columns))
    indexed = set(shards.index.column_names)
    extra = [c for c in wanted if c not in indexed]
    meta = shards.metadata(extra) if extra else {}
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for row in shards.rows(columns=list(dict.fromkeys(["key", "split", *wanted]))):
        row.update(meta.get(row["key"], {}))
        rows[row["split"]].append(row)
    prepared, skipped = {}, {}
    for task in tasks:
        try:
            prep = task.prepare(rows)
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
    protocol = p.resolved_protocol()
    hidden = cached_hidden_states(up, shards, cache, seed=p.seed, device=device, pitch=pitch,
                                  batch_seconds=p.batch_seconds, dtype=p.hidden_dtype)
    stats = state_statistics(hidden, shards.keys("train"), protocol.layer_norm) if protocol.standardize \
        else (None, None)
    normalizer = Featurizer(hidden.num_states, hidden.dim, protocol.layer_norm, *stats)
    ran = [t for t in tasks if t.name in prepared]
    keys = {states: sorted({k for t in ran if t.states == states for ex in prepared[t.name].splits.values()
                            for k in ex.keys}) for states in ("clean", "noisy")}
    tables = {"clean": StateTable(hidden, keys["clean"], normalizer.normalize, max_bytes=p.max_ram_gb * 1e9)}
    for task in ran:
        if task.states == "noisy":
            view = AudioView("noisy", frozenset(keys["noisy"]), task.noisy, task.identity)
            noisy = cached_hidden_states(up, shards, cache, seed=p.seed, device=device, pitch=pitch,
                                         batch_seconds=p.batch_seconds, dtype=p.hidden_dtype, view=view)
            tables["noisy"] = StateTable(noisy, keys["noisy"], normalizer.normalize, max_bytes=p.max_ram_gb * 1e9)
    pooled = sorted({k for t in ran if t.pooled for ex in prepared[t.name].splits.values() for k in ex.keys})
    return Inputs(up, hidden, protocol, tables, utterance_means(tables["clean"], pooled), device)


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

    def first_jobs(self) -> list[tuple[str, float, int]]:
        """Jobs (task, lr, seed) that can start now: with one learning rate, every seed."""
        if len(self.recipe.lrs) == 1:
            self.best_lr = self.recipe.lrs[0]
            return [(self.task.name, self.best_lr, seed) for seed in self.seeds]
        return [(self.task.name, lr, self.seeds[0]) for lr in self.recipe.lrs]

    def add(self, lr: float, seed: int, result: FitResult) -> list[tuple[str, float, int]]:
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
        return [(self.task.name, best, seed) for seed in self.seeds[1:]]

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


def _task_fits(task: Task, prep: Prepared, p: EvaluationSettings, inputs: Inputs) -> TaskFits:
    """The task's data for its head (TaskSkipped when no training utterance can be fitted)."""
    hidden, recipe = inputs.hidden, inputs.protocol.recipe(task.recipe_name)
    notes = list(prep.notes)
    splits = dict(prep.splits)
    table = inputs.tables[task.states]
    splits["train"], dropped = task.trainable(splits["train"], table.num_frames, hidden.frame_rate)
    if dropped:
        notes.append(f"{task.title}: {dropped} train utterances shorter than their CTC target skipped")
        logger.warning("%s", notes[-1])
    if not len(splits["train"]):
        raise TaskSkipped("no train utterance is long enough for its CTC target")
    if task.pooled:
        data: dict[str, Any] = {s: PooledSplit(inputs.means, ex) for s, ex in splits.items()}
    else:
        data = {s: FrameSplit(table, ex) for s, ex in splits.items()}
    per_epoch = -(-len(splits["train"]) // recipe.batch_size)
    max_updates, eval_every = recipe.updates(per_epoch)
    return TaskFits(task, prep, splits, data, table, recipe, p.head_seed_list(), notes, max_updates, eval_every)


def _fit_head(fits: TaskFits, inputs: Inputs, lr: float, seed: int) -> FitResult:
    """A fresh featurizer and head for `fits.task`, seeded with `seed`, fitted with learning rate `lr`."""
    hidden, recipe, task = inputs.hidden, fits.recipe, fits.task
    settings = FitSettings(lr=lr, batch_size=recipe.batch_size, max_updates=fits.max_updates,
                           eval_every=fits.eval_every, patience=recipe.patience, seed=seed)
    torch.manual_seed(seed)
    model = DownstreamModel(Featurizer(hidden.num_states, hidden.dim),  # the table holds normalised states
                            task.head(hidden.dim, task.num_outputs(fits.prep.vocabulary), hidden.frame_rate, recipe))
    return fit(task, model, fits.data["train"], fits.data["valid"], fits.data["test"], fits.prep.vocabulary,
               settings, inputs.device, label=f"{task.title} ({inputs.upstream.name}, lr {lr:g}, seed {seed})")


def _fit_all(plans: dict[str, TaskFits], inputs: Inputs,
             workers: int) -> Iterator[tuple[str, TaskFits | TaskSkipped]]:
    """Fit every task's heads (with `workers` processes side by side); yields (task name, its fits)
    once all are done, or (task name, why it was skipped). The BiLSTM heads' fits, the longest, are
    queued first."""
    def run(job: tuple[str, float, int]) -> FitResult | TaskSkipped:
        name, lr, seed = job
        try:
            return _fit_head(plans[name], inputs, lr, seed)
        except TaskSkipped as exc:
            return exc

    for plan in plans.values():
        plan.task.before_fitting()  # what every fit would compute for itself, computed once before forking
    order = sorted(plans.values(), key=lambda plan: -plan.recipe.layers)
    total = sum(len(plan.recipe.lrs) + len(plan.seeds) - 1 for plan in plans.values())
    with FitPool(run, workers) as pool, _fits_bar(workers > 1, total, inputs.upstream.name) as advance:
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


def _task_record(fits: TaskFits, p: EvaluationSettings, inputs: Inputs, folder: Path) -> dict[str, Any]:
    """Write one task's layer weights, plot, history and audio examples to `folder`; returns its metrics
    (test: the mean over head seeds, test_std their standard deviation)."""
    task, hidden, recipe, runs, seeds = fits.task, inputs.hidden, fits.recipe, fits.runs, fits.seeds
    best_lr = fits.best_lr
    assert best_lr is not None
    splits = fits.splits
    extra: dict[str, Any] = {}
    if hasattr(task, "write_examples"):  # tasks that make audio: a few examples of the first seed's head
        def predict(keys: list[str]) -> list[Any]:
            wanted = set(keys)
            chosen = Examples(*map(list, zip(*[(k, t, r) for k, t, r in zip(
                splits["test"].keys, splits["test"].targets, splits["test"].references) if k in wanted])))
            return predictions_of(task, runs[0].model, FrameSplit(fits.table, chosen), fits.prep.vocabulary,
                                  recipe.batch_size, inputs.device)[1]

        extra["examples"] = task.write_examples(predict, splits["test"], folder / "examples")
        extra["reference"] = task.reference_scores(splits["test"])
    weights = np.mean([r.layer_weights for r in runs], axis=0).tolist()
    _write_weights(folder, task, inputs, weights, [r.layer_weights for r in runs])
    write_json(folder / "history.json", {"task": task.name, "upstream": inputs.upstream.name,
                                         "seeds": {str(seed): r.history for seed, r in zip(seeds, runs)}})
    test = _mean_and_std([r.test for r in runs])
    valid = _mean_and_std([r.valid for r in runs])
    selected = valid[0].get(task.metric, valid[0][task.selection_metric])  # SE and VC select on another metric
    seconds = sum(r.seconds for r in fits.every_fit)
    logger.info("%s (%s): test %s %.4f +- %.4f over %d head seeds, valid %.4f, lr %g, %.0f s of fitting",
                task.title, inputs.upstream.name, task.metric, test[0][task.metric], test[1][task.metric],
                len(runs), selected, best_lr, seconds)
    return {
        "status": "ok", "task": task.name, "title": task.title, "upstream": inputs.upstream.name,
        "metric": task.metric, "higher_is_better": task.higher_is_better,
        "test": test[0][task.metric], "test_std": test[1][task.metric], "valid": selected,
        "test_metrics": test[0], "test_metrics_std": test[1], "valid_metrics": valid[0],
        "head_seeds": seeds, "runs": [{"seed": seed, "lr": best_lr, "test_metrics": r.test, "valid_metrics": r.valid,
                                       "best_epoch": r.best_epoch, "epochs": r.epochs, "best_update": r.best_update,
                                       "updates": r.updates, "seconds": r.seconds} for seed, r in zip(seeds, runs)],
        "selected_on": f"valid {task.selection_metric}", "lr": best_lr,
        "valid_by_lr": {f"{lr:g}": r.valid[task.selection_metric] for lr, r in fits.searched.items()},
        "protocol": inputs.protocol.name, "recipe": asdict(recipe), "speaker_labels": inputs.upstream.speaker_labels,
        "layer_norm": inputs.protocol.layer_norm, "standardize": inputs.protocol.standardize,
        "num_states": hidden.num_states, "state_names": hidden.state_names, "frame_rate": hidden.frame_rate,
        "utterances": {s: len(ex) for s, ex in splits.items()},
        "classes" if task.pooled else "tokens": len(fits.prep.vocabulary), "vocabulary": fits.prep.vocabulary,
        "notes": fits.notes, "seconds": seconds, **extra,
    }


def _mean_and_std(scores: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric, the mean and the (population) standard deviation over the head seeds that report it."""
    names = list(dict.fromkeys(n for s in scores for n in s))
    values = {n: [s[n] for s in scores if n in s] for n in names}
    return {n: float(np.mean(v)) for n, v in values.items()}, {n: float(np.std(v)) for n, v in values.items()}


def _skipped_record(task: Task, inputs: Inputs, reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, "task": task.name, "title": task.title,
            "upstream": inputs.upstream.name, "metric": task.metric, "higher_is_better": task.higher_is_better,
            "num_states": inputs.hidden.num_states, "state_names": inputs.hidden.state_names}


def _write_weights(folder: Path, task: Task, inputs: Inputs, weights: list[float],
                   by_seed: list[list[float]]) -> None:
    names, name = inputs.hidden.state_names, inputs.upstream.name
    records = [{"index": i, "state": n, "weight": w, "by_seed": [s[i] for s in by_seed]}
               for i, (n, w) in enumerate(zip(names, weights))]
    write_json(folder / "layer_weights.json", {"task": task.name, "upstream": name, "layer_weights": records})
    save_weight_plot(folder / "layer_weights.png",
                     WeightPanel(f"{task.title}: layer weights of {name}" +
                                 (f" (mean of {len(by_seed)} head seeds)" if len(by_seed) > 1 else ""),
                                 names, weights))
