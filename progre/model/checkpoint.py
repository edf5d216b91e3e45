"""Model checkpoints: a folder with `model.safetensors` (weights) and `config.json` (the model config).

config.json holds {"model": ModelConfig.to_dict(), "kind": "progre"|"hubert", "contents":
"encoder"|"pretrain", "heads": {...} (pretrain only), ...extra}. An encoder-only folder and a full
pretraining-model folder both load as an encoder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..errors import UserError
from ..io import atomic_dir, write_json
from .model_config import ModelConfig
from .encoder import ProgREEncoder, build_encoder
from .official import name_listing
from .masked_prediction import ProgREPretrainModel

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_ENCODER_PREFIX = "encoder."

# fields that define what the weights mean; training-only ones (dropouts, grad scales) may differ
_SHAPE_FIELDS = {
    "conv_feature_layers", "conv_bias", "extractor_mode", "encoder_embed_dim", "encoder_layers",
    "encoder_attention_heads", "encoder_ffn_embed_dim", "layer_norm_first", "conv_pos", "conv_pos_groups",
    "pitch_branch", "pitch_channels", "pitch_kernel", "pitch_gru_hidden", "speaker_branch", "speaker_layer",
    "speaker_bottleneck", "speaker_norm", "normalize",
}


def save_checkpoint(folder: Union[str, Path], model: Union[ProgREEncoder, ProgREPretrainModel],
                    extra: Optional[dict[str, Any]] = None) -> Path:
    """Write `model` (an encoder, or a pretraining model with its heads) to `folder`, atomically:
    the folder appears complete or not at all; an existing folder is replaced."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        write_checkpoint(tmp, model, extra)
    return folder


def write_checkpoint(folder: Union[str, Path], model: Union[ProgREEncoder, ProgREPretrainModel],
                     extra: Optional[dict[str, Any]] = None) -> None:
    """Write `model`'s weights and config into the existing folder `folder`."""
    folder = Path(folder)
    if isinstance(model, ProgREPretrainModel):
        encoder, contents = model.encoder, "pretrain"
    elif isinstance(model, ProgREEncoder):
        encoder, contents = model, "encoder"
    else:
        raise TypeError(f"expected a ProgREEncoder or ProgREPretrainModel, got {type(model).__name__}")
    meta: dict[str, Any] = dict(extra or {})
    meta.update(model=encoder.config.to_dict(), kind=encoder.config.kind, contents=contents)
    if contents == "pretrain":
        meta["heads"] = model.heads_config()
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    write_json(folder / CONFIG, meta)


def read_checkpoint_config(folder: Union[str, Path]) -> dict[str, Any]:
    """config.json of a checkpoint folder, checked to be one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"checkpoint {folder} not found (expected a folder with {WEIGHTS} and {CONFIG})")
    for name in (WEIGHTS, CONFIG):
        if not (folder / name).is_file():
            raise UserError(f"checkpoint {folder} has no {name}")
    try:
        meta = json.loads((folder / CONFIG).read_text())
        ModelConfig.from_dict(meta["model"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"checkpoint {folder}: unreadable {CONFIG} ({exc})") from None
    return meta


def load_encoder(folder: Union[str, Path], device: Union[str, torch.device] = "cpu",
                 config: Optional[ModelConfig] = None) -> ProgREEncoder:
    """The encoder of a checkpoint folder (encoder-only or pretraining model), in eval mode.

    With `config`, the checkpoint must have the same architecture (else a UserError naming the
    differences); the encoder is then built from `config` (its dropout values may differ).
    """
    meta = read_checkpoint_config(folder)
    saved = ModelConfig.from_dict(meta["model"])
    if config is not None:
        check_same_model(f"checkpoint {folder}", saved, config)
    state = _load_weights(folder)
    if meta.get("contents") == "pretrain":
        state = {k[len(_ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(_ENCODER_PREFIX)}
    encoder = build_encoder(config or saved)
    load_state_dict_checked(encoder, state, f"checkpoint {folder}")
    return encoder.to(device).eval()


def load_pretrain_model(folder: Union[str, Path], device: Union[str, torch.device] = "cpu",
                        config: Optional[ModelConfig] = None) -> ProgREPretrainModel:
    """The full pretraining model (encoder and heads) of a checkpoint saved from one."""
    meta = read_checkpoint_config(folder)
    if meta.get("contents") != "pretrain":
        raise UserError(f"checkpoint {folder} holds an encoder only, not a pretraining model with its heads")
    saved = ModelConfig.from_dict(meta["model"])
    if config is not None:
        check_same_model(f"checkpoint {folder}", saved, config)
    model = ProgREPretrainModel(build_encoder(config or saved), **meta["heads"])
    load_state_dict_checked(model, _load_weights(folder), f"checkpoint {folder}")
    return model.to(device)


def load_state_dict_checked(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """`module.load_state_dict(state)`, strict, with a one-line UserError for missing or unexpected
    names and for shape mismatches."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {name_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {name_listing(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes {name_listing(wrong, 3)}")
    if problems:
        raise UserError(f"{source} does not fit the model: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def _load_weights(folder: Union[str, Path]) -> dict[str, Tensor]:
    try:
        return load_file(str(Path(folder) / WEIGHTS))
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise UserError(f"checkpoint {folder}: cannot read {WEIGHTS} ({exc})") from None


def check_same_model(source: str, saved: ModelConfig, wanted: ModelConfig) -> None:
    """A one-line UserError naming the fields that fix the weights' shapes and meaning (size, kind,
    branches) where `saved` (the model of `source`) differs from `wanted`; training-only fields (dropouts,
    gradient scales) may differ."""
    diff = saved.differences(wanted)
    shape_diff = {k: v for k, v in diff.items() if k in _SHAPE_FIELDS}
    if shape_diff:
        parts = ", ".join(f"{k}={a} (expected {b})" for k, (a, b) in shape_diff.items())
        raise UserError(f"{source} is a different model: {parts}")
