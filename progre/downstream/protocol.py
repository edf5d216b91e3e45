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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..data.shards import Shards
from ..errors import UserError
from ..io import write_json
from ..log import logger
from .data import FrameSplit, PooledSplit, StateTable, state_statistics, utterance_means
from .featurizer import Featurizer
from .plots import WeightPanel, save_weight_plot
from . import DEFAULT_TASKS
from .recipes import PROTOCOLS, Protocol, with_overrides
from .tasks import SPLITS, Prepared, Task, TaskSkipped, make_task
from .train import DownstreamModel, FitResult, FitSettings, fit
from .upstreams import HiddenStates, Upstream, cached_hidden_states


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
    seed: int = 1234

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
    table: StateTable
    """Normalised hidden states of every utterance a task reads."""
    means: dict[str, Any]
    """key -> (S, D) utterance mean of the normalised states (for the utterance tasks)."""
    device: torch.device


def evaluate_upstream(upstream: Upstream, shards: Shards, folder: Path, settings: EvaluationSettings,
                      device: torch.device, cache: Path, pitch: Optional[Path] = None) -> dict[str, Any]:
    """Evaluate `upstream` on every task of `settings.tasks`, writing each task's outputs into
    folder/<task>/; returns the summary."""
    start = time.perf_counter()
    tasks = [_task(t, settings) for t in dict.fromkeys(settings.tasks)]
    prepared, skipped = _prepare(tasks, shards)
    if not prepared:
        reasons = "; ".join(f"{t.title}: {skipped[t.name]}" for t in tasks)
        raise UserError(f"nothing to evaluate on {shards.folder}: {reasons}")
    inputs = _inputs(settings, upstream, shards, cache, pitch, device, list(prepared.values()),
                     [prepared[t.name] for t in tasks if t.name in prepared and t.pooled])
    summary: dict[str, Any] = {"upstream": upstream.name, "upstream_spec": upstream.spec,
                               "num_states": inputs.hidden.num_states, "state_names": inputs.hidden.state_names,
                               "tasks": {}}
    for task in tasks:
        reason = skipped.get(task.name)
        if reason is None:
            try:
                record = _evaluate_task(task, prepared[task.name], settings, inputs, folder / task.name)
            except TaskSkipped as exc:
                reason = str(exc)
                logger.warning("%s skipped: %s", task.title, exc)
        if reason is not None:
            record = _skipped_record(task, inputs, reason)
        write_json(folder / task.name / "metrics.json", record)
        summary["tasks"][task.name] = {k: record[k] for k in ("status", "metric", "test", "reason") if k in record}
    summary["seconds"] = time.perf_counter() - start
    return summary


def _task(name: str, p: EvaluationSettings) -> Task:
    from ..data.espeak import phonemize, voice_for_language

    def voice_for(language: Optional[str]) -> Optional[str]:
        """The utterance's language picks the voice; utterances without one get `phonemize_voice`."""
        return p.phonemize_voice if language is None else voice_for_language(language)

    return make_task(name, phonemize, voice_for)


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
            device: torch.device, prepared: list[Prepared], pooled: list[Prepared]) -> Inputs:
    """Hidden states (cached), normalised once into a table, and the utterance means the pooled tasks read."""
    protocol = p.resolved_protocol()
    hidden = cached_hidden_states(up, shards, cache, seed=p.seed, device=device, pitch=pitch,
                                  batch_seconds=p.batch_seconds, dtype=p.hidden_dtype)
    stats = state_statistics(hidden, shards.keys("train"), protocol.layer_norm) if protocol.standardize \
        else (None, None)
    normalizer = Featurizer(hidden.num_states, hidden.dim, protocol.layer_norm, *stats)
    keys = sorted({k for prep in prepared for ex in prep.splits.values() for k in ex.keys})
    table = StateTable(hidden, keys, normalizer.normalize, max_bytes=p.max_ram_gb * 1e9)
    pooled_keys = sorted({k for prep in pooled for ex in prep.splits.values() for k in ex.keys})
    return Inputs(up, hidden, protocol, table, utterance_means(table, pooled_keys), device)


def _evaluate_task(task: Task, prep: Prepared, p: EvaluationSettings, inputs: Inputs, folder: Path) -> dict[str, Any]:
    """Fit and score one task with every head seed, write its layer weights, plot and history to
    `folder`; returns its metrics (test: the mean over seeds, test_std their standard deviation)."""
    hidden, recipe = inputs.hidden, inputs.protocol.recipe(task.recipe_name)
    notes = list(prep.notes)
    splits = dict(prep.splits)
    splits["train"], dropped = task.trainable(splits["train"], inputs.table.num_frames, hidden.frame_rate)
    if dropped:
        notes.append(f"{task.title}: {dropped} train utterances shorter than their CTC target skipped")
        logger.warning("%s", notes[-1])
    if not len(splits["train"]):
        raise TaskSkipped("no train utterance is long enough for its CTC target")
    if task.pooled:
        data = {s: PooledSplit(inputs.means, ex) for s, ex in splits.items()}
    else:
        data = {s: FrameSplit(inputs.table, ex) for s, ex in splits.items()}  # type: ignore[misc]
    seeds = p.head_seed_list()
    per_epoch = -(-len(splits["train"]) // recipe.batch_size)
    max_updates, eval_every = recipe.updates(per_epoch)

    def run(lr: float, seed: int) -> FitResult:
        settings = FitSettings(lr=lr, batch_size=recipe.batch_size, max_updates=max_updates, eval_every=eval_every,
                               patience=recipe.patience, seed=seed)
        torch.manual_seed(seed)
        model = DownstreamModel(Featurizer(hidden.num_states, hidden.dim),  # the table holds normalised states
                                task.head(hidden.dim, task.num_outputs(prep.vocabulary), hidden.frame_rate, recipe))
        return fit(task, model, data["train"], data["valid"], data["test"], prep.vocabulary, settings,
                   inputs.device, label=f"{task.title} ({inputs.upstream.name}, lr {lr:g}, seed {seed})")

    searched = {lr: run(lr, seeds[0]) for lr in recipe.lrs}  # a fresh head per learning rate, first seed
    best_lr = recipe.lrs[0]
    for lr, fitted in searched.items():
        if task.better(fitted.valid[task.selection_metric], searched[best_lr].valid[task.selection_metric]):
            best_lr = lr
    runs = [searched[best_lr]] + [run(best_lr, seed) for seed in seeds[1:]]
    weights = np.mean([r.layer_weights for r in runs], axis=0).tolist()
    _write_weights(folder, task, inputs, weights, [r.layer_weights for r in runs])
    write_json(folder / "history.json", {"task": task.name, "upstream": inputs.upstream.name,
                                         "seeds": {str(seed): r.history for seed, r in zip(seeds, runs)}})
    test = _mean_and_std([r.test for r in runs])
    valid = _mean_and_std([r.valid for r in runs])
    logger.info("%s (%s): test %s %.4f +- %.4f over %d head seeds, valid %.4f, lr %g, %.0f s", task.title,
                inputs.upstream.name, task.metric, test[0][task.metric], test[1][task.metric], len(runs),
                valid[0][task.metric], best_lr, sum(r.seconds for r in [*searched.values(), *runs[1:]]))
    return {
        "status": "ok", "task": task.name, "title": task.title, "upstream": inputs.upstream.name,
        "metric": task.metric, "higher_is_better": task.higher_is_better,
        "test": test[0][task.metric], "test_std": test[1][task.metric], "valid": valid[0][task.metric],
        "test_metrics": test[0], "test_metrics_std": test[1], "valid_metrics": valid[0],
        "head_seeds": seeds, "runs": [{"seed": seed, "lr": best_lr, "test_metrics": r.test, "valid_metrics": r.valid,
                                       "best_epoch": r.best_epoch, "epochs": r.epochs, "best_update": r.best_update,
                                       "updates": r.updates, "seconds": r.seconds} for seed, r in zip(seeds, runs)],
        "selected_on": f"valid {task.selection_metric}", "lr": best_lr,
        "valid_by_lr": {f"{lr:g}": r.valid[task.selection_metric] for lr, r in searched.items()},
        "protocol": inputs.protocol.name, "recipe": asdict(recipe),
        "layer_norm": inputs.protocol.layer_norm, "standardize": inputs.protocol.standardize,
        "num_states": hidden.num_states, "state_names": hidden.state_names, "frame_rate": hidden.frame_rate,
        "utterances": {s: len(ex) for s, ex in splits.items()},
        "classes" if task.pooled else "tokens": len(prep.vocabulary), "vocabulary": prep.vocabulary,
        "notes": notes, "seconds": sum(r.seconds for r in [*searched.values(), *runs[1:]]),
    }


def _mean_and_std(scores: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric, the mean and the (population) standard deviation over head seeds."""
    names = scores[0].keys()
    return ({n: float(np.mean([s[n] for s in scores])) for n in names},
            {n: float(np.std([s[n] for s in scores])) for n in names})


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
