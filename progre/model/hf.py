"""Our HuBERT encoder as a transformers `HubertModel` folder (`progre export --format transformers`), and
such a folder read back as our encoder (`progre.load`).

The folder is what `HubertModel.save_pretrained` writes (config.json, model.safetensors), plus the feature
extractor's preprocessor_config.json: `do_normalize` is the model's `normalize`, and
`return_attention_mask` is on only where the CNN normalises per frame (`extractor_mode: layer_norm`):
transformers' GroupNorm in the first conv ("group") takes its statistics over the padded samples too, so
a padded batch would change an utterance's states (ours skips the padding). transformers loads the
folder without custom code; config.json also carries our `ModelConfig` as `progre_model`, an attribute
transformers keeps and ignores, so the folder reads back exactly. ProgRE's pitch and speaker branches
have no place in `HubertModel`: a ProgRE model is refused. Writing needs transformers (the `hf` extra);
reading back does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import UserError
from ..frames import SAMPLE_RATE
from .checkpoint import CONFIG, WEIGHTS, load_state_dict_checked
from .encoder import ProgREEncoder, build_encoder
from .model_config import ModelConfig
from .official import TRANSFORMERS_LEGACY_WEIGHT_G, ours_to_transformers_hubert, transformers_hubert_to_ours

PREPROCESSOR_CONFIG = "preprocessor_config.json"
PROGRE_KEY = "progre_model"
"""The key of config.json that holds our `ModelConfig` in an exported folder."""


def require_transformers(what: str) -> ModuleType:
    """The `transformers` module, or a one-line UserError saying that `what` needs it and how to install it."""
    try:
        import transformers
    except ImportError:
        raise UserError(f"{what} needs the transformers package, an optional extra of progre: "
                        f"pip install -e '.[hf]' (or make venv)") from None
    transformers.utils.logging.disable_progress_bar()  # progre shows its own
    return transformers


def transformers_hubert_config(config: ModelConfig) -> dict[str, Any]:
    """`HubertConfig` arguments for a HuBERT encoder of `config` (the same modules, the same numbers)."""
    return dict(
        hidden_size=config.encoder_embed_dim, num_hidden_layers=config.encoder_layers,
        num_attention_heads=config.encoder_attention_heads, intermediate_size=config.encoder_ffn_embed_dim,
        hidden_act="gelu", hidden_dropout=config.dropout, activation_dropout=config.activation_dropout,
        attention_dropout=config.attention_dropout, feat_proj_dropout=config.dropout_input,
        layerdrop=config.encoder_layerdrop, layer_norm_eps=1e-5, feat_proj_layer_norm=True,
        feat_extract_norm="group" if config.extractor_mode == "default" else "layer",
        feat_extract_activation="gelu", conv_dim=[c for c, _, _ in config.conv_feature_layers],
        conv_kernel=[k for _, k, _ in config.conv_feature_layers],
        conv_stride=[s for _, _, s in config.conv_feature_layers], conv_bias=config.conv_bias,
        num_conv_pos_embeddings=config.conv_pos, num_conv_pos_embedding_groups=config.conv_pos_groups,
        conv_pos_batch_norm=False, do_stable_layer_norm=config.layer_norm_first, architectures=["HubertModel"],
    )


def refuse_progre(encoder: ProgREEncoder, source: Path) -> None:
    """A one-line UserError for a model with a ProgRE branch, which `HubertModel` cannot hold."""
    if encoder.config.kind != "hubert":
        raise UserError(f"{source} is a ProgRE model: transformers' HubertModel has no pitch or speaker branch, "
                        f"so it cannot be exported to transformers; read its states with the Python API "
                        f"(progre.load(path).hidden_states(wav)) or in s3prl (progre.s3prl.UpstreamExpert), or "
                        f"export it with --format ours or official")


def write_transformers_hubert(encoder: ProgREEncoder, source: Path, out: Path) -> None:
    """Write the HuBERT `encoder` (from `source`) into the folder `out` as a transformers `HubertModel`
    with its feature extractor's config."""
    refuse_progre(encoder, source)
    transformers = require_transformers("progre export --format transformers")
    config = transformers.HubertConfig(**transformers_hubert_config(encoder.config),
                                       **{PROGRE_KEY: encoder.config.to_dict()}, exported_from=str(source))
    with torch.random.fork_rng(devices=[]):  # its constructor draws weights that are replaced below
        model = transformers.HubertModel(config)
    legacy = TRANSFORMERS_LEGACY_WEIGHT_G in model.state_dict()
    state = ours_to_transformers_hubert(encoder.state_dict(), legacy_weight_norm=legacy)
    load_state_dict_checked(model, state, f"the encoder of {source} as a HubertModel")
    model.save_pretrained(str(out))
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=encoder.config.normalize,
        return_attention_mask=encoder.config.extractor_mode == "layer_norm").save_pretrained(str(out))


def is_transformers_export(folder: Path) -> bool:
    """Whether `folder` holds a transformers folder that `write_transformers_hubert` wrote."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text())
    except ValueError:
        return False
    return isinstance(config, dict) and PROGRE_KEY in config and "model_type" in config


def read_transformers_hubert(folder: Path) -> ProgREEncoder:
    """Our encoder, in eval mode, from a folder that `write_transformers_hubert` wrote."""
    folder = Path(folder)
    try:
        config = ModelConfig.from_dict(json.loads((folder / CONFIG).read_text())[PROGRE_KEY])
        state = load_file(str(folder / WEIGHTS))
    except Exception as exc:  # a truncated or edited folder: one line
        raise UserError(f"{folder}: not a readable transformers export of progre ({exc})") from None
    encoder = build_encoder(config)
    try:
        ours = transformers_hubert_to_ours(state)
    except ValueError as exc:
        raise UserError(f"{folder}: {exc}") from None
    load_state_dict_checked(encoder, ours, f"transformers export {folder}")
    return encoder.eval()
