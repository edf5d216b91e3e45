"""Fitting a task's layer weights and head on a frozen upstream: train on train, pick the epoch with
the best valid score (early stopping after `patience` epochs without improvement), score test with
the weights of that epoch. What the recipe asks for besides: the gradient norm clipped before each
update, a learning rate with a linear warmup and decay, SpecAugment on the featurizer's output
while training (`specaugment`).

Seeded (head initialisation, batch order and SpecAugment's draws), and deterministic on the CPU: the
same seed and inputs give the same weights and scores. One fit at a time: which fits an evaluation
runs, and when, is `fits`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from ..log import progress_bar
from .featurizer import Featurizer
from .head_data import FrameSplit, HeadBatch, PooledSplit
from .specaugment import SpecAugment
from .tasks import Task

Split = Union[FrameSplit, PooledSplit]


class DownstreamModel(nn.Module):
    """Featurizer (weighted sum of the S states) followed by the task's head; with `augment`, SpecAugment
    of the weighted frames between them while training (it has no parameters)."""

    def __init__(self, featurizer: Featurizer, head: nn.Module, augment: Optional[SpecAugment] = None):
        super().__init__()
        self.featurizer, self.head = featurizer, head
        self.augment = augment

    def forward(self, states: Tensor, lengths: Optional[Tensor],
                generator: Optional[torch.Generator] = None) -> tuple[Tensor, Optional[Tensor]]:
        """states: (B, S, D) or (B, T, S, D); lengths: (B,) frames or None -> head logits and lengths.
        `generator` draws SpecAugment's random numbers (training only)."""
        features = self.featurizer(states)
        if self.augment is not None and self.training:
            features = self.augment(features, lengths, generator)
        return self.head(features, lengths)


@dataclass
class FitSettings:
    lr: float
    batch_size: int
    max_updates: int
    eval_every: int
    """Updates between valid evaluations (one epoch's worth in the demo protocol)."""
    patience: Optional[int]
    """Valid evaluations without a better score before stopping; None: train to `max_updates`."""
    seed: int
    weight_decay: float = 0.0
    clip_norm: Optional[float] = None
    """Clip the gradient norm of all parameters at this value before each update (None: no clipping)."""
    warmup_steps: Optional[int] = None
    """Linear warmup over this many updates, then linear decay to 0 at `max_updates` (None: constant)."""

    @property
    def scoring_batch_size(self) -> int:
        """Utterances per batch when scoring valid and test: scoring batches are sorted by length (little
        padding) and need no gradients, so larger batches only save time."""
        return 4 * self.batch_size


@dataclass
class FitResult:
    best_update: int
    """The update whose weights were kept (evaluated on valid after it)."""
    updates: int
    """Updates trained (fewer than the maximum when early stopping fired)."""
    updates_per_epoch: int
    valid: dict[str, float]
    """Valid metrics of the kept weights."""
    test: dict[str, float]
    layer_weights: list[float]
    """Softmax-normalised featurizer weights kept, in the upstream's state order."""
    history: list[dict[str, float]] = field(default_factory=list)
    """Per valid evaluation: the update, the epoch, the mean train loss since the last one, valid metrics."""
    seconds: float = 0.0
    model: Optional[DownstreamModel] = None
    """The model with the kept weights."""

    @property
    def best_epoch(self) -> float:
        return self.best_update / self.updates_per_epoch

    @property
    def epochs(self) -> float:
        return self.updates / self.updates_per_epoch


def predictions_of(task: Task, model: DownstreamModel, split: Split, vocabulary: list[str], batch_size: int,
                   device: torch.device) -> tuple[list[Any], list[Any]]:
    """(references, predictions) of `model` on a whole split, in the split's order (eval mode, no grad)."""
    model.eval()
    references: list[Any] = [None] * len(split)
    predictions: list[Any] = [None] * len(split)
    with torch.no_grad():
        for batch in split.batches(batch_size, device=device):
            logits, lengths = model(batch.states, batch.lengths)
            for i, reference, prediction in zip(batch.indices, batch.references,
                                                task.predict(logits, lengths, vocabulary)):
                references[i], predictions[i] = reference, prediction
    return references, predictions


def evaluate_split(task: Task, model: DownstreamModel, split: Split, vocabulary: list[str], batch_size: int,
                   device: torch.device, final: bool = False) -> dict[str, float]:
    """Task metrics of `model` on a whole split (eval mode, no grad); `final`: the test split's metrics."""
    references, predictions = predictions_of(task, model, split, vocabulary, batch_size, device)
    return task.final_score(references, predictions) if final else task.score(references, predictions)


def fit(task: Task, model: DownstreamModel, train: Split, valid: Split, test: Split, vocabulary: list[str],
        settings: FitSettings, device: torch.device, label: str = "") -> FitResult:
    """Train `model` for `task` on shuffled passes over `train`, evaluate on `valid` every `eval_every`
    updates (and after the last), keep the best; returns the kept weights' scores and layer weights."""
    start = time.perf_counter()
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = None if settings.warmup_steps is None else torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_then_decay(step, settings.warmup_steps, settings.max_updates))
    generator = torch.Generator().manual_seed(settings.seed)
    per_epoch = -(-len(train) // settings.batch_size)
    best: Optional[tuple[float, int, dict[str, float], dict[str, Tensor]]] = None
    history: list[dict[str, float]] = []
    metric = task.selection_metric
    updates, losses, stop = 0, [], False
    with progress_bar() as progress:
        bar = progress.add_task(label or task.title, total=settings.max_updates)
        while updates < settings.max_updates and not stop:
            for batch in train.batches(settings.batch_size, generator, device):  # one shuffled pass
                model.train()
                loss = _batch_loss(task, model, batch, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if settings.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                losses.append(float(loss.detach()))
                updates += 1
                if updates % settings.eval_every and updates < settings.max_updates:
                    continue
                scores = evaluate_split(task, model, valid, vocabulary, settings.scoring_batch_size, device)
                history.append({"update": updates, "epoch": updates / per_epoch, "train_loss": sum(losses) / len(losses),
                                **{f"valid_{k}": v for k, v in scores.items()}})
                losses = []
                if best is None or task.better(scores[metric], best[0]):
                    best = (scores[metric], updates, scores, copy.deepcopy(model.state_dict()))
                progress.update(bar, completed=updates, description=f"{label or task.title}: valid {metric} "
                                                                    f"{scores[metric]:.3f} (best {best[0]:.3f})")
                evaluations_since_best = sum(1 for h in history if h["update"] > best[1])
                stop = settings.patience is not None and evaluations_since_best >= settings.patience
                if stop or updates >= settings.max_updates:
                    break
    assert best is not None
    _, best_update, valid_scores, state = best
    model.load_state_dict(state)
    test_scores = evaluate_split(task, model, test, vocabulary, settings.scoring_batch_size, device, final=True)
    weights = model.featurizer.normalized_weights().detach().cpu().tolist()
    return FitResult(best_update, updates, per_epoch, valid_scores, test_scores, weights, history,
                     time.perf_counter() - start, model)


def warmup_then_decay(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor of update `step` (counted from 0): step / warmup during the warmup,
    then (total - step) / (total - warmup), never below 0 (s3prl's ``linear_schedule_with_warmup``)."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _batch_loss(task: Task, model: DownstreamModel, batch: HeadBatch,
                generator: Optional[torch.Generator] = None) -> Tensor:
    logits, lengths = model(batch.states, batch.lengths, generator)
    return task.loss(logits, lengths, batch.targets)
