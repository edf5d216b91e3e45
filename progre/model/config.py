"""Shape and regularisation parameters of ProgRE and the HuBERT baseline, with size presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

BASE_CONV_LAYERS: list[tuple[int, int, int]] = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
"""(channels, kernel, stride) of the seven conv layers of HuBERT/wav2vec 2.0: 400-sample window, 320 hop."""

SIZES = ("tiny", "base", "large")
KINDS = ("progre", "hubert")
CONV_NORMS = ("group", "layer")


@dataclass
class ModelConfig:
    """Everything that fixes the shapes and the regularisation of a `ProgREEncoder`.

    The HuBERT baseline is this model with ``pitch_branch=False`` and ``speaker_branch=False``.
    Build one with `model_config`; `to_dict` / `from_dict` round-trip through JSON.
    """

    # CNN feature encoder
    conv_layers: list[tuple[int, int, int]] = field(default_factory=lambda: list(BASE_CONV_LAYERS))
    conv_bias: bool = False
    conv_norm: str = "group"
    """"group": GroupNorm after the first conv only (HuBERT Base, the release); "layer": LayerNorm over
    channels after every conv (HuBERT Large's extractor)."""
    conv_grad_scale: float = 0.1
    """Gradient multiplier of the CNN (forward unchanged); 0 freezes it."""
    normalize_waveform: bool = False
    """Zero-mean unit-variance per utterance (over its valid samples) before the CNN; HuBERT Large's input."""
    # Transformer
    encoder_embed_dim: int = 768
    encoder_layers: int = 12
    attention_heads: int = 12
    ffn_dim: int = 3072
    layer_norm_first: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.1
    layerdrop: float = 0.05
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    # pitch-variation branch (before the Transformer)
    pitch_branch: bool = True
    pitch_channels: int = 256
    pitch_kernel: int = 5
    pitch_gru_hidden: int = 32
    # speaker branch (after Transformer layer `speaker_layer`, 1-based)
    speaker_branch: bool = True
    speaker_layer: int = 4
    speaker_bottleneck: int = 256
    speaker_grad_through: bool = False
    """False as in the release: the speaker output is detached before it is subtracted."""
    speaker_norm: bool = False
    """A LayerNorm after the speaker subtraction, before layer `speaker_layer` + 1: the release's
    MindSpore `spk_norm` (`sub_spk_norm` in its converted Large checkpoint). Its Base has none: the
    Base config sets `spk_norm: True`, but the code never passes it to the encoder."""

    def __post_init__(self) -> None:
        self.conv_layers = [tuple(int(v) for v in layer) for layer in self.conv_layers]
        problems = []
        if not self.conv_layers or any(len(layer) != 3 or min(layer) < 1 for layer in self.conv_layers):
            problems.append(f"conv_layers must be a non-empty list of positive (channels, kernel, stride), "
                            f"got {self.conv_layers}")
        if self.conv_norm not in CONV_NORMS:
            problems.append(f"conv_norm must be one of {CONV_NORMS}, got {self.conv_norm!r}")
        if self.encoder_embed_dim % self.attention_heads:
            problems.append(f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                            f"attention_heads {self.attention_heads}")
        if self.encoder_embed_dim % self.pos_conv_groups:
            problems.append(f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                            f"pos_conv_groups {self.pos_conv_groups}")
        if self.pitch_kernel % 2 == 0:
            problems.append(f"pitch_kernel must be odd ('same' padding), got {self.pitch_kernel}")
        if self.speaker_branch and not 1 <= self.speaker_layer <= self.encoder_layers:
            problems.append(f"speaker_layer must be in 1..{self.encoder_layers}, got {self.speaker_layer}")
        if self.speaker_norm and not self.speaker_branch:
            problems.append("speaker_norm needs speaker_branch (it normalises the speaker subtraction)")
        for name in ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "layerdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.conv_grad_scale < 0:
            problems.append(f"conv_grad_scale must be >= 0, got {self.conv_grad_scale}")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @property
    def kind(self) -> str:
        """"hubert" when both branches are off, else "progre"."""
        return "progre" if self.pitch_branch or self.speaker_branch else "hubert"

    @property
    def conv_dim(self) -> int:
        """Channels of the CNN output (the feature LayerNorm's width)."""
        return self.conv_layers[-1][0]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["conv_layers"] = [list(layer) for layer in self.conv_layers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)

    def differences(self, other: "ModelConfig") -> dict[str, tuple[Any, Any]]:
        """Fields that differ: name -> (self's value, other's value)."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def model_config(size: str, kind: str, **overrides: Any) -> ModelConfig:
    """The preset of `size` ("tiny", "base", "large") for `kind` ("progre", "hubert"), with overrides.

    * base: the paper's model (HuBERT Base + both branches, no layer drop as in the release):
      96,712,960 parameters; HuBERT Base 94,371,712 (mask embedding included, layer drop 0.05).
    * large: HuBERT Large (24 pre-LN layers of 1024, 16 heads, FFN 4096, LayerNorm in every conv
      block, normalised waveform, no dropout) + both branches.
    * tiny: the CPU demo: a 128-channel conv front end, 4 post-LN layers of 256, 4 heads, FFN 1024,
      a 64-channel pitch branch and a 64-wide speaker bottleneck after layer 2 (4,223,872
      parameters as ProgRE, 3,981,440 as HuBERT).

    ``kind="hubert"`` switches both branches off. Overrides replace any field, e.g.
    ``model_config("base", "progre", speaker_layer=6)``.
    """
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    if size == "base":
        # the release's ProgRE config sets encoder_layerdrop 0.0 (and its encoder never applied layer drop);
        # HuBERT Base keeps fairseq's 0.05
        preset: dict[str, Any] = {"layerdrop": 0.0} if kind == "progre" else {}
    elif size == "large":
        preset = dict(conv_norm="layer", conv_grad_scale=1.0, normalize_waveform=True,
                      encoder_embed_dim=1024, encoder_layers=24, attention_heads=16, ffn_dim=4096,
                      layer_norm_first=True, dropout=0.0, attention_dropout=0.0, dropout_input=0.0,
                      layerdrop=0.0)
    else:
        preset = dict(conv_layers=[(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2,
                      encoder_embed_dim=256, encoder_layers=4, attention_heads=4, ffn_dim=1024,
                      layerdrop=0.0, pitch_channels=64, speaker_layer=2, speaker_bottleneck=64)
    if kind == "hubert":
        preset.update(pitch_branch=False, speaker_branch=False)
    preset.update(overrides)
    return ModelConfig(**preset)
