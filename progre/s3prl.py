"""progre models in s3prl, the SUPERB harness: its upstream interface over `progre.load`.

s3prl builds an upstream as `UpstreamExpert(ckpt, model_config=..., refresh=...)` (its runner, from the hub
entry that `-u` names, with `-k` as ckpt), moves it with `.to(device)`, calls it on a list of 1-D 16 kHz
waveform tensors and reads `{"hidden_states": [...]}`: one (B, T, D) tensor per state, zero-padded after
each utterance's T_i = floor((N_i - 400) / 320) + 1 frames; its featurizer learns the weighted sum and
cuts each utterance to round(N_i / 320) frames (`get_downsample_rates`: 320). ProgRE's pitch contours are
computed here from each waveform (WORLD DIO, as `progre features --kind pitch`). The model is frozen, as
in SUPERB: s3prl's `-f` (fine-tune the upstream) is refused.

`progre_local` is the hub entry (README: s3prl's own `run_downstream.py -u progre_local -k CKPT`). This
module never imports s3prl: the interface is a plain `torch.nn.Module`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .api import load
from .frames import MODEL_HOP


class UpstreamExpert(nn.Module):
    """s3prl's upstream interface for a progre model: `ckpt` is anything `progre.load` reads (a
    checkpoint folder, a run folder, an export, an imported release checkpoint)."""

    def __init__(self, ckpt: str, model_config: Any = None, **kwargs: Any):
        super().__init__()
        self.name = "[progre UpstreamExpert]"
        self.model = load(ckpt)
        self.encoder = self.model.encoder  # a submodule: s3prl's .to(device) moves it
        self.eval()

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        """Samples per frame of every state: 320 (50 Hz at 16 kHz)."""
        return MODEL_HOP

    def forward(self, wavs: list[Tensor]) -> dict[str, list[Tensor]]:
        """`wavs`: B 1-D 16 kHz waveforms -> {"hidden_states": S tensors of (B, T, D)}, T the longest's frames."""
        if self.training and torch.is_grad_enabled():
            raise RuntimeError("progre's s3prl upstream is frozen (SUPERB's protocol): run s3prl without -f "
                               "(--upstream_trainable)")
        device = next(self.encoder.parameters()).device
        if self.model.device != device:
            self.model.to(device)
        batch = self.model.hidden_states(list(wavs))
        return {"hidden_states": batch.states}


def progre_local(ckpt: str, *args: Any, **kwargs: Any) -> UpstreamExpert:
    """s3prl hub entry for a local progre model (`run_downstream.py -u progre_local -k CKPT`)."""
    return UpstreamExpert(ckpt, *args, **kwargs)
