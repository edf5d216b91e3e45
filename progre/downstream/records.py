"""What an evaluation writes for each task, into ``<folder>/<task>/``:

- ``metrics.json``: the test metric (the mean over head seeds, and their standard deviation), the
  best valid metric, epochs, the upstream's name and hidden states (DVC metrics). A skipped task
  gets ``"status": "skipped"`` and the reason (`skipped_record`).
- ``layer_weights.json``: the learned, softmax-normalised weight of each hidden state, in the
  upstream's order (``layer_weights``: a list of {index, state, weight, by_seed}).
- ``layer_weights.png``: those weights as bars.
- ``history.json``: per head seed and valid evaluation, the mean train loss and the valid metrics.
- ``examples/``: for the tasks that make audio (`Task.writes_examples`), a few test examples of
  the first seed's head as FLAC; their metrics.json also holds the examples and the reference row.
- for a cross-validated task (`cross_validation_record`), ``fold-F/`` holds each fold's own files as
  above, and the task's metrics.json and layer weights are the means over the folds, with each fold's
  scores under ``cross_validation``.

JSON is written with sorted keys (`io.write_json`). Nothing here fits or schedules anything: the
records are of `fits.TaskFits` that are done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import write_json
from ..log import logger
from .fits import TaskFits
from .head_data import Examples, FrameSplit
from .head_fit import predictions_of
from .plots import WeightPanel, save_weight_plot
from .recipes import Recipe, RecipeBook
from .tasks import Task
from .upstreams import HiddenStates, Upstream


def task_record(fits: TaskFits, upstream: Upstream, hidden: HiddenStates, book: RecipeBook, device: torch.device,
                folder: Path) -> dict[str, Any]:
    """Write one task's layer weights, plot, history and audio examples to `folder`; returns its metrics
    (test: the mean over head seeds, test_std their standard deviation) for `write_metrics`."""
    task, recipe, runs, seeds = fits.task, fits.recipe, fits.runs, fits.seeds
    best_lr = fits.best_lr
    assert best_lr is not None
    splits = fits.splits
    extra: dict[str, Any] = {}
    if task.writes_examples:  # tasks that make audio: a few examples of the first seed's head
        def predict(keys: list[str]) -> list[Any]:
            wanted = set(keys)
            chosen = Examples(*map(list, zip(*[(k, t, r) for k, t, r in zip(
                splits["test"].keys, splits["test"].targets, splits["test"].references) if k in wanted])))
            return predictions_of(task, runs[0].model, FrameSplit(fits.table, chosen), fits.prep.vocabulary,
                                  recipe.batch_size, device)[1]

        extra["examples"] = task.write_examples(predict, splits["test"], folder / "examples")
        extra["reference"] = task.reference_scores(splits["test"])
    weights = np.mean([r.layer_weights for r in runs], axis=0).tolist()
    _write_weights(folder, task, upstream.name, hidden.state_names, weights, [r.layer_weights for r in runs])
    write_json(folder / "history.json", {"task": task.name, "upstream": upstream.name,
                                         "seeds": {str(seed): r.history for seed, r in zip(seeds, runs)}})
    test = mean_and_std([r.test for r in runs])
    valid = mean_and_std([r.valid for r in runs])
    record = _scored_record(task, upstream, hidden, book, recipe, seeds, test, valid, fits.prep.vocabulary)
    seconds = sum(r.seconds for r in fits.every_fit)
    logger.info("%s (%s): test %s %.4f +- %.4f over %d head seeds, valid %.4f, lr %g, %.0f s of fitting",
                task.title, upstream.name, task.metric, test[0][task.metric], test[1][task.metric],
                len(runs), record["valid"], best_lr, seconds)
    return {
        **record,
        "runs": [{"seed": seed, "lr": best_lr, "test_metrics": r.test, "valid_metrics": r.valid,
                  "best_epoch": r.best_epoch, "epochs": r.epochs, "best_update": r.best_update,
                  "updates": r.updates, "seconds": r.seconds} for seed, r in zip(seeds, runs)],
        "selected_on": f"valid {task.selection_metric}", "lr": best_lr,
        "valid_by_lr": {f"{lr:g}": r.valid[task.selection_metric] for lr, r in fits.searched.items()},
        "utterances": {s: len(ex) for s, ex in splits.items()}, "notes": fits.notes, "seconds": seconds,
        **extra, **({} if fits.fold is None else {"fold": fits.fold}),
    }


def cross_validation_record(folds: list[TaskFits], upstream: Upstream, hidden: HiddenStates, book: RecipeBook,
                            device: torch.device, folder: Path, notes: list[str]) -> dict[str, Any]:
    """Write each fold's files into folder/fold-F/ (`task_record`, and its metrics.json) and the task's
    layer weights, the mean over folds and seeds, into `folder`; returns the task's metrics: per head
    seed, its cross-validated scores are the means over the folds of its test (and valid) scores, and
    test and test_std are their mean and standard deviation over the seeds, as for a task without folds.
    `notes`: what the cross-validation left out, before each fold's own notes."""
    first = folds[0]
    task, recipe, seeds = first.task, first.recipe, first.seeds
    by_fold = {}
    for fits in folds:
        by_fold[fits.fold] = task_record(fits, upstream, hidden, book, device, folder / f"fold-{fits.fold}")
        write_metrics(folder / f"fold-{fits.fold}", by_fold[fits.fold])
    per_seed_test = [mean_and_std([fits.runs[i].test for fits in folds])[0] for i in range(len(seeds))]
    per_seed_valid = [mean_and_std([fits.runs[i].valid for fits in folds])[0] for i in range(len(seeds))]
    test, valid = mean_and_std(per_seed_test), mean_and_std(per_seed_valid)
    weights_by_seed = [np.mean([fits.runs[i].layer_weights for fits in folds], axis=0).tolist()
                       for i in range(len(seeds))]
    _write_weights(folder, task, upstream.name, hidden.state_names, np.mean(weights_by_seed, axis=0).tolist(),
                   weights_by_seed)
    seconds = sum(r["seconds"] for r in by_fold.values())
    logger.info("%s (%s): test %s %.4f +- %.4f, the mean over %d folds, %d head seeds", task.title, upstream.name,
                task.metric, test[0][task.metric], test[1][task.metric], len(folds), len(seeds))
    vocabulary = sorted({v for fits in folds for v in fits.prep.vocabulary})
    return {
        **_scored_record(task, upstream, hidden, book, recipe, seeds, test, valid, vocabulary),
        "runs": [{"seed": seed, "test_metrics": t, "valid_metrics": v}
                 for seed, t, v in zip(seeds, per_seed_test, per_seed_valid)],
        "cross_validation": {"column": recipe.folds, "folds": {
            fold: {k: r[k] for k in ("test", "test_std", "valid", "lr", "utterances")} for fold, r in by_fold.items()}},
        "selected_on": f"valid {task.selection_metric}, per fold",
        "utterances": {"test": sum(r["utterances"]["test"] for r in by_fold.values())},
        "notes": [*notes, *(f"fold {fold}: {n}" for fold, r in by_fold.items() for n in r["notes"])],
        "seconds": seconds,
    }


def _scored_record(task: Task, upstream: Upstream, hidden: HiddenStates, book: RecipeBook, recipe: Recipe,
                   seeds: list[int], test: tuple[dict[str, float], dict[str, float]],
                   valid: tuple[dict[str, float], dict[str, float]], vocabulary: list[Any]) -> dict[str, Any]:
    """What the record of a scored task holds with or without folds: its scores (`test`, `valid`: the
    means and standard deviations of `mean_and_std`), how they were obtained and what the heads saw."""
    return {
        "status": "ok", "task": task.name, "title": task.title, "upstream": upstream.name,
        "metric": task.metric, "higher_is_better": task.higher_is_better,
        "test": test[0][task.metric], "test_std": test[1][task.metric],
        "valid": valid[0].get(task.metric, valid[0][task.selection_metric]),  # SE and VC select on another metric
        "test_metrics": test[0], "test_metrics_std": test[1], "valid_metrics": valid[0], "head_seeds": seeds,
        "protocol": book.name, "recipe": recipe.record(), "speaker_labels": upstream.speaker_labels,
        "layer_norm": book.layer_norm, "standardize": book.standardize,
        "num_states": hidden.num_states, "state_names": hidden.state_names, "frame_rate": hidden.frame_rate,
        "classes" if task.pooled else "tokens": len(vocabulary), "vocabulary": vocabulary,
    }


def skipped_record(task: Task, upstream: Upstream, hidden: HiddenStates, reason: str) -> dict[str, Any]:
    """The metrics.json record of a task that could not run, and why."""
    return {"status": "skipped", "reason": reason, "task": task.name, "title": task.title,
            "upstream": upstream.name, "metric": task.metric, "higher_is_better": task.higher_is_better,
            "num_states": hidden.num_states, "state_names": hidden.state_names}


def write_metrics(folder: Path, record: dict[str, Any]) -> None:
    """A task's record (`task_record` or `skipped_record`) as ``folder/metrics.json``."""
    write_json(folder / "metrics.json", record)


def mean_and_std(scores: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric, the mean and the (population) standard deviation over the head seeds that report it."""
    names = list(dict.fromkeys(n for s in scores for n in s))
    values = {n: [s[n] for s in scores if n in s] for n in names}
    return {n: float(np.mean(v)) for n, v in values.items()}, {n: float(np.std(v)) for n, v in values.items()}


def _write_weights(folder: Path, task: Task, upstream: str, names: list[str], weights: list[float],
                   by_seed: list[list[float]]) -> None:
    records = [{"index": i, "state": n, "weight": w, "by_seed": [s[i] for s in by_seed]}
               for i, (n, w) in enumerate(zip(names, weights))]
    write_json(folder / "layer_weights.json", {"task": task.name, "upstream": upstream, "layer_weights": records})
    save_weight_plot(folder / "layer_weights.png",
                     WeightPanel(f"{task.title}: layer weights of {upstream}" +
                                 (f" (mean of {len(by_seed)} head seeds)" if len(by_seed) > 1 else ""),
                                 names, weights))
