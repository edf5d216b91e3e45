"""Shape and regularisation parameters of ProgRE and the HuBERT baseline, with size presets.

Field names are fairseq's `HubertConfig` / `Wav2Vec2Config` options where one exists (`normalize` is
its task option), so a reader can look them up there; the ProgRE-only ones say what they set, and
docs/DESIGN.md maps each to the official release's name. Names of earlier versions are still read
(`OLD_FIELD_NAMES`). Never builds a model: `encoder.build_encoder` does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

BASE_CONV_LAYERS: list[tuple[int, int, int]] = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
"""(channels, kernel, stride) of the seven conv layers of HuBERT/wav2vec 2.0: 400-sample window, 320 hop."""

SIZES = ("tiny", "base", "large")
KINDS = ("progre", "hubert")
EXTRACTOR_MODES = ("default", "layer_norm")

OLD_FIELD_NAMES = {
    "conv_layers": "conv_feature_layers", "conv_norm": "extractor_mode", "conv_grad_scale": "feature_grad_mult",
    "normalize_waveform": "normalize", "attention_heads": "encoder_attention_heads",
    "ffn_dim": "encoder_ffn_embed_dim", "layerdrop": "encoder_layerdrop", "pos_conv_kernel": "conv_pos",
    "pos_conv_groups": "conv_pos_groups",
}
"""Field names before they took fairseq's (checkpoints and training states of earlier versions) -> now."""
OLD_EXTRACTOR_MODES = {"group": "default", "layer": "layer_norm"}
"""The old `conv_norm` values -> `extractor_mode`'s."""


@dataclass
class ModelConfig:
    """Everything that fixes the shapes and the regularisation of a `ProgREEncoder`.

    The HuBERT baseline is this model with ``pitch_branch=False`` and ``speaker_branch=False``.
    Build one with `model_config`; `to_dict` / `from_dict` round-trip through JSON.
    """

    # CNN feature encoder
    conv_feature_layers: list[tuple[int, int, int]] = field(default_factory=lambda: list(BASE_CONV_LAYERS))
    """(channels, kernel, stride) per conv layer (fairseq's option is the same list, written as a string)."""
    conv_bias: bool = False
    extractor_mode: str = "default"
    """"default": GroupNorm after the first conv only (HuBERT Base, the release); "layer_norm": LayerNorm
    over channels after every conv (HuBERT Large's extractor)."""
    feature_grad_mult: float = 0.1
    """Gradient multiplier of the CNN (forward unchanged); 0 freezes it."""
    normalize: bool = False
    """Zero-mean unit-variance per utterance (over its valid samples) before the CNN; HuBERT Large's input."""
    # Transformer
    encoder_embed_dim: int = 768
    encoder_layers: int = 12
    encoder_attention_heads: int = 12
    encoder_ffn_embed_dim: int = 3072
    layer_norm_first: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.1
    encoder_layerdrop: float = 0.05
    conv_pos: int = 128
    """Kernel of the convolutional position embedding."""
    conv_pos_groups: int = 16
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
    MindSpore `spk_norm` (module `encoder.spk_norm_layer`, Large only; its README loader calls it
    `sub_spk_norm`). Its Base has none: the Base config sets `spk_norm: True`, but the code never
    passes it to the encoder."""

    def __post_init__(self) -> None:
        self.conv_feature_layers = [tuple(int(v) for v in layer) for layer in self.conv_feature_layers]
        problems = []
        if not self.conv_feature_layers or any(len(layer) != 3 or min(layer) < 1
                                               for layer in self.conv_feature_layers):
            problems.append(f"conv_feature_layers must be a non-empty list of positive (channels, kernel, stride), "
                            f"got {self.conv_feature_layers}")
        if self.extractor_mode not in EXTRACTOR_MODES:
            problems.append(f"extractor_mode must be one of {EXTRACTOR_MODES}, got {self.extractor_mode!r}")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            problems.append(f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                            f"encoder_attention_heads {self.encoder_attention_heads}")
        if self.encoder_embed_dim % self.conv_pos_groups:
            problems.append(f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                            f"conv_pos_groups {self.conv_pos_groups}")
        if self.pitch_kernel % 2 == 0:
            problems.append(f"pitch_kernel must be odd ('same' padding), got {self.pitch_kernel}")
        if self.speaker_branch and not 1 <= self.speaker_layer <= self.encoder_layers:
            problems.append(f"speaker_layer must be in 1..{self.encoder_layers}, got {self.speaker_layer}")
        if self.speaker_norm and not self.speaker_branch:
            problems.append("speaker_norm needs speaker_branch (it normalises the speaker subtraction)")
        for name in ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "encoder_layerdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.feature_grad_mult < 0:
            problems.append(f"feature_grad_mult must be >= 0, got {self.feature_grad_mult}")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @property
    def kind(self) -> str:
        """"hubert" when both branches are off, else "progre"."""
        return "progre" if self.pitch_branch or self.speaker_branch else "hubert"

    @property
    def conv_dim(self) -> int:
        """Channels of the CNN output (the feature LayerNorm's width)."""
        return self.conv_feature_layers[-1][0]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["conv_feature_layers"] = [list(layer) for layer in self.conv_feature_layers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """The config of `to_dict`'s output, or of a dict written with the old field names."""
        data = upgrade_config_dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)

    def differences(self, other: "ModelConfig") -> dict[str, tuple[Any, Any]]:
        """Fields that differ: name -> (self's value, other's value)."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def upgrade_config_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A model-config dict with the field names (and `extractor_mode` values) of earlier versions
    renamed to today's; every other key and value as it is. A name given both ways is a ValueError."""
    both = sorted(old for old, new in OLD_FIELD_NAMES.items() if old in data and new in data)
    if both:
        raise ValueError(f"model config gives both the old and the new name of: "
                         f"{', '.join(f'{old}/{OLD_FIELD_NAMES[old]}' for old in both)}")
    out = {OLD_FIELD_NAMES.get(k, k): v for k, v in data.items()}
    if "conv_norm" in data:
        out["extractor_mode"] = OLD_EXTRACTOR_MODES.get(data["conv_norm"], data["conv_norm"])
    return out


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
        preset: dict[str, Any] = {"encoder_layerdrop": 0.0} if kind == "progre" else {}
    elif size == "large":
        preset = dict(extractor_mode="layer_norm", feature_grad_mult=1.0, normalize=True,
                      encoder_embed_dim=1024, encoder_layers=24, encoder_attention_heads=16,
                      encoder_ffn_embed_dim=4096, layer_norm_first=True, dropout=0.0, attention_dropout=0.0,
                      dropout_input=0.0, encoder_layerdrop=0.0)
    else:
        preset = dict(conv_feature_layers=[(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2,
                      encoder_embed_dim=256, encoder_layers=4, encoder_attention_heads=4, encoder_ffn_embed_dim=1024,
                      encoder_layerdrop=0.0, pitch_channels=64, speaker_layer=2, speaker_bottleneck=64)
    if kind == "hubert":
        preset.update(pitch_branch=False, speaker_branch=False)
    preset.update(overrides)
    return ModelConfig(**preset)
