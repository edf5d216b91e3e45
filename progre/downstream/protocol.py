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

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..data.shards import Shards
from ..errors import UserError
from ..io import write_json
from ..log import logger
from .data import FrameSplit, PooledSplit, state_statistics, utterance_means
from .featurizer import Featurizer
from .plots import WeightPanel, save_weight_plot
from . import DEFAULT_TASKS
from .tasks import SPLITS, Prepared, Task, TaskSkipped, make_task
from .train import DownstreamModel, FitResult, FitSettings, fit
from .upstreams import HiddenStates, Upstream, cached_hidden_states


@dataclass(frozen=True)
class EvaluationSettings:
    """The protocol's settings (the `evaluate` params section); see `progre params evaluate`."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    lr: Optional[tuple[float, ...]] = None
    batch_size: int = 16
    max_epochs: Optional[int] = None
    patience: Optional[int] = None
    layer_norm: bool = False
    standardize: bool = True
    asr_hidden: int = 128
    asr_layers: int = 2
    phonemize_voice: str = "en-us"
    batch_seconds: float = 60.0
    hidden_dtype: str = "float16"
    seed: int = 1234


@dataclass
class Inputs:
    """What every task of one evaluation shares."""

    upstream: Upstream
    hidden: HiddenStates
    stats: tuple[Optional[torch.Tensor], Optional[torch.Tensor]]
    """(S, D) mean and std of the training frames, or (None, None) without standardisation."""
    means: dict[str, Any]
    """key -> (S, D) utterance mean of the normalised states (for SID and ER)."""
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
    inputs = _inputs(settings, upstream, shards, cache, pitch, device, [prepared[t.name] for t in tasks
                                                                       if t.name in prepared and t.pooled])
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

    return make_task(name, p.asr_hidden, p.asr_layers, phonemize, voice_for)


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
            device: torch.device, pooled: list[Prepared]) -> Inputs:
    """Hidden states (cached), their training statistics and the utterance means the pooled tasks read."""
    hidden = cached_hidden_states(up, shards, cache, seed=p.seed, device=device, pitch=pitch,
                                  batch_seconds=p.batch_seconds, dtype=p.hidden_dtype)
    train_keys = shards.keys("train")
    stats = state_statistics(hidden, train_keys, p.layer_norm) if p.standardize else (None, None)
    normalizer = Featurizer(hidden.num_states, hidden.dim, p.layer_norm, *stats)
    keys = sorted({k for prep in pooled for ex in prep.splits.values() for k in ex.keys})
    return Inputs(up, hidden, stats, utterance_means(hidden, keys, normalizer.normalize), device)


def _evaluate_task(task: Task, prep: Prepared, p: EvaluationSettings, inputs: Inputs, folder: Path) -> dict[str, Any]:
    """Fit and score one task, write its layer weights, plot and history to `folder`; returns its metrics."""
    hidden = inputs.hidden
    notes = list(prep.notes)
    splits = dict(prep.splits)
    splits["train"], dropped = task.trainable(splits["train"], hidden.num_frames, hidden.frame_rate)
    if dropped:
        notes.append(f"{task.title}: {dropped} train utterances shorter than their CTC target skipped")
        logger.warning("%s", notes[-1])
    if not len(splits["train"]):
        raise TaskSkipped("no train utterance is long enough for its CTC target")
    if task.pooled:
        data = {s: PooledSplit(inputs.means, ex) for s, ex in splits.items()}
        featurizer = Featurizer(hidden.num_states, hidden.dim)  # the means are normalised already
    else:
        data = {s: FrameSplit(hidden, ex) for s, ex in splits.items()}  # type: ignore[misc]
        featurizer = Featurizer(hidden.num_states, hidden.dim, p.layer_norm, *inputs.stats)
    result, settings, searched = None, None, {}
    for candidate in _settings(task, p):  # a fresh head per learning rate; the best on valid is kept
        torch.manual_seed(p.seed)
        model = DownstreamModel(copy.deepcopy(featurizer),
                                task.head(hidden.dim, task.num_outputs(prep.vocabulary), hidden.frame_rate))
        fitted = fit(task, model, data["train"], data["valid"], data["test"], prep.vocabulary, candidate,
                     inputs.device, label=f"{task.title} ({inputs.upstream.name}, lr {candidate.lr:g})")
        searched[f"{candidate.lr:g}"] = fitted.valid[task.selection_metric]
        if result is None or task.better(fitted.valid[task.selection_metric], result.valid[task.selection_metric]):
            result, settings = fitted, candidate
    assert result is not None and settings is not None
    _write_weights(folder, task, inputs, result)
    write_json(folder / "history.json", {"task": task.name, "upstream": inputs.upstream.name, "epochs": result.history})
    logger.info("%s (%s): test %s %.4f, valid %.4f, best epoch %d of %d, %.0f s", task.title, inputs.upstream.name,
                task.metric, result.test[task.metric], result.valid[task.metric], result.best_epoch, result.epochs,
                result.seconds)
    return {
        "status": "ok", "task": task.name, "title": task.title, "upstream": inputs.upstream.name,
        "metric": task.metric, "higher_is_better": task.higher_is_better,
        "test": result.test[task.metric], "valid": result.valid[task.metric],
        "test_metrics": result.test, "valid_metrics": result.valid,
        "selected_on": f"valid {task.selection_metric}", "best_epoch": result.best_epoch, "epochs": result.epochs,
        "lr": settings.lr, "valid_by_lr": searched, "max_epochs": settings.max_epochs, "patience": settings.patience,
        "layer_norm": p.layer_norm, "standardize": p.standardize,
        "num_states": hidden.num_states, "state_names": hidden.state_names, "frame_rate": hidden.frame_rate,
        "utterances": {s: len(ex) for s, ex in splits.items()},
        "classes" if task.pooled else "tokens": len(prep.vocabulary), "vocabulary": prep.vocabulary,
        "notes": notes, "seconds": result.seconds,
    }


def _settings(task: Task, p: EvaluationSettings) -> list[FitSettings]:
    """One setting per learning rate to try: the params, with the task's own defaults where they are null."""
    default = task.schedule
    return [FitSettings(lr=lr, batch_size=p.batch_size,
                        max_epochs=default.max_epochs if p.max_epochs is None else p.max_epochs,
                        patience=default.patience if p.patience is None else p.patience, seed=p.seed)
            for lr in (default.lrs if p.lr is None else p.lr)]


def _skipped_record(task: Task, inputs: Inputs, reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, "task": task.name, "title": task.title,
            "upstream": inputs.upstream.name, "metric": task.metric, "higher_is_better": task.higher_is_better,
            "num_states": inputs.hidden.num_states, "state_names": inputs.hidden.state_names}


def _write_weights(folder: Path, task: Task, inputs: Inputs, result: FitResult) -> None:
    names, name = inputs.hidden.state_names, inputs.upstream.name
    records = [{"index": i, "state": n, "weight": w} for i, (n, w) in enumerate(zip(names, result.layer_weights))]
    write_json(folder / "layer_weights.json", {"task": task.name, "upstream": name, "layer_weights": records})
    save_weight_plot(folder / "layer_weights.png",
                     WeightPanel(f"{task.title}: layer weights of {name}", names, result.layer_weights))
