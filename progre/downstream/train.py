"""Fitting a task's layer weights and head on a frozen upstream: train on train, pick the epoch with
the best valid score (early stopping after `patience` epochs without improvement), score test with
the weights of that epoch.

Seeded (head initialisation and batch order), and deterministic on the CPU: the same seed and
inputs give the same weights and scores.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from ..log import progress_bar
from .data import HeadBatch, FrameSplit, PooledSplit
from .featurizer import Featurizer
from .tasks import Task

Split = Union[FrameSplit, PooledSplit]


class DownstreamModel(nn.Module):
    """Featurizer (weighted sum of the S states) followed by the task's head."""

    def __init__(self, featurizer: Featurizer, head: nn.Module):
        super().__init__()
        self.featurizer, self.head = featurizer, head

    def forward(self, states: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """states: (B, S, D) or (B, T, S, D); lengths: (B,) frames or None -> head logits and lengths."""
        return self.head(self.featurizer(states), lengths)


@dataclass
class FitSettings:
    lr: float
    batch_size: int
    max_epochs: int
    patience: int
    seed: int
    weight_decay: float = 0.0


@dataclass
class FitResult:
    best_epoch: int
    """1-based epoch whose weights were kept."""
    epochs: int
    """Epochs trained (fewer than the maximum when early stopping fired)."""
    valid: dict[str, float]
    """Valid metrics of the kept epoch."""
    test: dict[str, float]
    layer_weights: list[float]
    """Softmax-normalised featurizer weights of the kept epoch, in the upstream's state order."""
    history: list[dict[str, float]] = field(default_factory=list)
    """Per epoch: mean train loss and the valid metrics."""
    seconds: float = 0.0


def evaluate_split(task: Task, model: DownstreamModel, split: Split, vocabulary: list[str], batch_size: int,
                   device: torch.device) -> dict[str, float]:
    """Task metrics of `model` on a whole split (eval mode, no grad)."""
    model.eval()
    references: list[Any] = []
    predictions: list[Any] = []
    with torch.no_grad():
        for batch in split.batches(batch_size, device=device):
            logits, lengths = model(batch.states, batch.lengths)
            predictions += task.predict(logits, lengths, vocabulary)
            references += batch.references
    return task.score(references, predictions)


def fit(task: Task, model: DownstreamModel, train: Split, valid: Split, test: Split, vocabulary: list[str],
        settings: FitSettings, device: torch.device, label: str = "") -> FitResult:
    """Train `model` for `task`; returns the kept epoch's scores and layer weights."""
    start = time.perf_counter()
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    best: Optional[tuple[float, int, dict[str, float], dict[str, Tensor]]] = None
    history = []
    metric = task.selection_metric
    with progress_bar() as progress:
        bar = progress.add_task(label or task.title, total=settings.max_epochs)
        for epoch in range(1, settings.max_epochs + 1):
            loss = _train_epoch(task, model, train, optimizer, settings.batch_size, generator, device)
            scores = evaluate_split(task, model, valid, vocabulary, settings.batch_size, device)
            history.append({"epoch": epoch, "train_loss": loss, **{f"valid_{k}": v for k, v in scores.items()}})
            if best is None or task.better(scores[metric], best[0]):
                best = (scores[metric], epoch, scores, copy.deepcopy(model.state_dict()))
            progress.update(bar, advance=1, description=f"{label or task.title}: valid {metric} {scores[metric]:.3f} "
                                                        f"(best {best[0]:.3f} @ {best[1]})")
            if epoch - best[1] >= settings.patience:
                break
    assert best is not None
    _, best_epoch, valid_scores, state = best
    model.load_state_dict(state)
    test_scores = evaluate_split(task, model, test, vocabulary, settings.batch_size, device)
    weights = model.featurizer.normalized_weights().detach().cpu().tolist()
    return FitResult(best_epoch, len(history), valid_scores, test_scores, weights, history,
                     time.perf_counter() - start)


def _train_epoch(task: Task, model: DownstreamModel, split: Split, optimizer: torch.optim.Optimizer,
                 batch_size: int, generator: torch.Generator, device: torch.device) -> float:
    """One pass over `split` in a seeded random order; returns the mean batch loss."""
    model.train()
    total, batches = 0.0, 0
    for batch in split.batches(batch_size, generator, device):
        loss = _batch_loss(task, model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        batches += 1
    return total / max(batches, 1)


def _batch_loss(task: Task, model: DownstreamModel, batch: HeadBatch) -> Tensor:
    logits, lengths = model(batch.states, batch.lengths)
    return task.loss(logits, lengths, batch.targets)
