"""Learning-rate schedule of HuBERT's recipe: linear warm-up, then polynomial decay."""

from __future__ import annotations


def learning_rate(step: int, *, peak: float, warmup_steps: int, max_steps: int, end: float = 0.0,
                  power: float = 1.0) -> float:
    """Learning rate for optimizer update `step` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if step >= max_steps:
        return end
    remaining = 1.0 - (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return end + (peak - end) * remaining ** power
