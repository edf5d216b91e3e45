"""CTC over a token vocabulary whose id 0 is the blank: loss, greedy decoding, feasibility."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BLANK = 0
"""CTC blank: token id 0 of every CTC vocabulary."""


def ctc_greedy_decode(logits: Tensor, lengths: Tensor) -> list[list[int]]:
    """Best path of (B, T, V) logits over each utterance's first `lengths[b]` frames: repeated tokens
    collapse, then blanks (id 0) go. E.g. frames [a, a, blank, a, b, b] -> [a, a, b]."""
    best = logits.argmax(-1).cpu()
    decoded = []
    for row, n in zip(best, lengths.cpu().tolist()):
        path = row[:n].tolist()
        decoded.append([t for i, t in enumerate(path) if t != BLANK and (i == 0 or t != path[i - 1])])
    return decoded


def ctc_min_frames(target: list[int]) -> int:
    """Frames a CTC alignment of `target` needs: one per token plus a blank between repeats."""
    return len(target) + sum(a == b for a, b in zip(target, target[1:]))


def ctc_loss(logits: Tensor, lengths: Tensor, targets: list[list[int]]) -> Tensor:
    """Mean CTC loss (per target token, then over the batch) of (B, T, V) logits."""
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
    flat = torch.tensor([t for target in targets for t in target], dtype=torch.long)
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return F.ctc_loss(log_probs, flat.to(logits.device), lengths, target_lengths.to(logits.device), blank=BLANK,
                      reduction="mean", zero_infinity=True)
