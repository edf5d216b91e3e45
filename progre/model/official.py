"""Weight-name conversion between our encoder and other layouts: the official ProgRE release
(fairseq-style, `tests/data/official-base-state-dict.tsv`, and the file its MindSpore-to-PyTorch
script `migrating/chkp_conversion.py` writes), torchaudio's HuBERT and transformers' `HubertModel`;
and the model config a release file's tensors reveal (`official_config`), with the values they do not reveal
named.

Name tables are pairs of templates, one per layout. A placeholder {i} is a layer index, {w} a
parameter or buffer name; {k-1} on one side is {k} minus one (the release numbers its pitch blocks
from 1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Optional

import torch
from torch import Tensor

from ..errors import UserError
from .model_config import SIZES, ModelConfig, model_config

# (official, ours)
OFFICIAL_NAMES: list[tuple[str, str]] = [
    ("mask_emb", "mask_embedding"),
    ("feature_extractor.conv_layers.{i}.0.{w}", "feature_extractor.conv_layers.{i}.conv.{w}"),
    # fairseq's "default" extractor: GroupNorm at index 2 of the first block
    ("feature_extractor.conv_layers.{i}.2.{w}", "feature_extractor.conv_layers.{i}.norm.{w}"),
    ("layer_norm.{w}", "feature_norm.{w}"),
    ("post_extract_proj.{w}", "feature_projection.{w}"),
    ("pitch_encoder.conv{k}.0.{w}", "pitch_branch.blocks.{k-1}.conv.{w}"),
    ("pitch_encoder.conv{k}.1.{w}", "pitch_branch.blocks.{k-1}.norm.{w}"),
    ("pitch_encoder.lstm.{w}", "pitch_branch.gru.{w}"),
    ("pitch_encoder.out.{w}", "pitch_branch.proj.{w}"),
    ("sub_norm.{w}", "sub_norm.{w}"),
    ("encoder.pos_conv.0.{w}", "transformer.pos_conv.{w}"),
    ("encoder.layers.{i}.self_attn.{w}", "transformer.layers.{i}.attention.{w}"),
    ("encoder.layers.{i}.self_attn_layer_norm.{w}", "transformer.layers.{i}.attention_norm.{w}"),
    ("encoder.layers.{i}.fc1.{w}", "transformer.layers.{i}.fc1.{w}"),
    ("encoder.layers.{i}.fc2.{w}", "transformer.layers.{i}.fc2.{w}"),
    ("encoder.layers.{i}.final_layer_norm.{w}", "transformer.layers.{i}.ffn_norm.{w}"),
    ("encoder.layer_norm.{w}", "transformer.layer_norm.{w}"),
    ("encoder.astp.linear1.weight", "speaker_branch.attention_hidden.weight"),
    ("encoder.astp.linear2.weight", "speaker_branch.attention_score.weight"),
    ("encoder.astp.out.{w}", "speaker_branch.out.{w}"),
    ("encoder.astp.layer_norm.{w}", "speaker_branch.layer_norm.{w}"),
    # the LayerNorm after the speaker subtraction (Large only): the MindSpore encoder's attribute
    # `spk_norm_layer` (progre_encoder.py), which the conversion script's renaming (drop "acc_net.") makes
    # encoder.spk_norm_layer. The release's PyTorch model has no such module; its README loader looks for
    # "sub_spk_norm" instead. We write the first name and read all three, with MindSpore's gamma/beta too
    ("encoder.spk_norm_layer.{w}", "speaker_norm.{w}"),
    ("encoder.sub_spk_norm.{w}", "speaker_norm.{w}"),
    ("sub_spk_norm.{w}", "speaker_norm.{w}"),
]
_SPEAKER_NORM_NAMES = re.compile(r"(encoder\.spk_norm_layer|(encoder\.)?sub_spk_norm)\.(gamma|beta)\Z")
# fairseq's "layer_norm" extractor (HuBERT Large): LayerNorm inside (transpose, norm, transpose) at index 2
OFFICIAL_LAYER_NORM_CNN = ("feature_extractor.conv_layers.{i}.2.1.{w}", "feature_extractor.conv_layers.{i}.norm.{w}")

# the release's speaker attention is two 1x1 Conv1d, (out, in, 1); ours are Linear, (out, in)
_CONV1X1 = {"speaker_branch.attention_hidden.weight", "speaker_branch.attention_score.weight"}

# training heads of a fairseq HuBERT/ProgRE checkpoint, not part of the encoder: the masked-prediction
# projection and label embeddings, and the release's speaker classifier (spk_linear)
_OFFICIAL_HEADS = re.compile(r"final_proj\.|label_embs_concat|target_glu\.|spk_linear\.")

# (torchaudio, ours)
TORCHAUDIO_NAMES: list[tuple[str, str]] = [
    ("feature_extractor.conv_layers.{i}.conv.{w}", "feature_extractor.conv_layers.{i}.conv.{w}"),
    ("feature_extractor.conv_layers.{i}.layer_norm.{w}", "feature_extractor.conv_layers.{i}.norm.{w}"),
    ("encoder.feature_projection.layer_norm.{w}", "feature_norm.{w}"),
    ("encoder.feature_projection.projection.{w}", "feature_projection.{w}"),
    ("encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0", "transformer.pos_conv.weight_g"),
    ("encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1", "transformer.pos_conv.weight_v"),
    ("encoder.transformer.pos_conv_embed.conv.{w}", "transformer.pos_conv.{w}"),  # bias; old weight_g/_v
    ("encoder.transformer.layer_norm.{w}", "transformer.layer_norm.{w}"),
    ("encoder.transformer.layers.{i}.attention.{w}", "transformer.layers.{i}.attention.{w}"),
    ("encoder.transformer.layers.{i}.layer_norm.{w}", "transformer.layers.{i}.attention_norm.{w}"),
    ("encoder.transformer.layers.{i}.feed_forward.intermediate_dense.{w}", "transformer.layers.{i}.fc1.{w}"),
    ("encoder.transformer.layers.{i}.feed_forward.output_dense.{w}", "transformer.layers.{i}.fc2.{w}"),
    ("encoder.transformer.layers.{i}.final_layer_norm.{w}", "transformer.layers.{i}.ffn_norm.{w}"),
    ("mask_generator.mask_embedding", "mask_embedding"),
]

# (transformers' HubertModel, ours). The position conv's weight norm is a parametrization in transformers
# with torch >= 2.1 (original0 = g, original1 = v); older versions name them weight_g / weight_v
TRANSFORMERS_HUBERT_NAMES: list[tuple[str, str]] = [
    ("masked_spec_embed", "mask_embedding"),
    ("feature_extractor.conv_layers.{i}.conv.{w}", "feature_extractor.conv_layers.{i}.conv.{w}"),
    ("feature_extractor.conv_layers.{i}.layer_norm.{w}", "feature_extractor.conv_layers.{i}.norm.{w}"),
    ("feature_projection.layer_norm.{w}", "feature_norm.{w}"),
    ("feature_projection.projection.{w}", "feature_projection.{w}"),
    ("encoder.pos_conv_embed.conv.parametrizations.weight.original0", "transformer.pos_conv.weight_g"),
    ("encoder.pos_conv_embed.conv.parametrizations.weight.original1", "transformer.pos_conv.weight_v"),
    ("encoder.pos_conv_embed.conv.{w}", "transformer.pos_conv.{w}"),  # bias; weight_g / weight_v of old versions
    ("encoder.layer_norm.{w}", "transformer.layer_norm.{w}"),
    ("encoder.layers.{i}.attention.{w}", "transformer.layers.{i}.attention.{w}"),
    ("encoder.layers.{i}.layer_norm.{w}", "transformer.layers.{i}.attention_norm.{w}"),
    ("encoder.layers.{i}.feed_forward.intermediate_dense.{w}", "transformer.layers.{i}.fc1.{w}"),
    ("encoder.layers.{i}.feed_forward.output_dense.{w}", "transformer.layers.{i}.fc2.{w}"),
    ("encoder.layers.{i}.final_layer_norm.{w}", "transformer.layers.{i}.ffn_norm.{w}"),
]
TRANSFORMERS_LEGACY_WEIGHT_G = "encoder.pos_conv_embed.conv.weight_g"
"""A name that transformers' HubertModel has only under an old torch (weight_norm hooks, not a parametrization)."""

_PLACEHOLDER = re.compile(r"\{(\w)(-1)?\}")


class _Template:
    """A name with placeholders: matches names (capturing the fields) and formats fields back."""

    def __init__(self, text: str):
        self.text = text
        parts, pos = [], 0
        for m in _PLACEHOLDER.finditer(text):
            parts.append(re.escape(text[pos:m.start()]))
            field, minus_one = m.group(1), bool(m.group(2))
            group = r"\d+" if field in "ik" else r"[\w.]+"
            parts.append(f"(?P<{field}{'_m1' if minus_one else ''}>{group})")
            pos = m.end()
        parts.append(re.escape(text[pos:]))
        self.pattern = re.compile("".join(parts) + r"\Z")

    def match(self, name: str) -> Optional[dict[str, str]]:
        m = self.pattern.match(name)
        if m is None:
            return None
        fields = {}
        for key, value in m.groupdict().items():
            if key.endswith("_m1"):
                fields[key[:-3]] = str(int(value) + 1)
            else:
                fields[key] = value
        return fields

    def format(self, fields: dict[str, str]) -> str:
        def fill(m: re.Match) -> str:
            value = fields[m.group(1)]
            return str(int(value) - 1) if m.group(2) else value

        return _PLACEHOLDER.sub(fill, self.text)


def _compile(pairs: list[tuple[str, str]], reverse: bool = False) -> list[tuple[_Template, _Template]]:
    return [(_Template(b), _Template(a)) if reverse else (_Template(a), _Template(b)) for a, b in pairs]


def _rename(name: str, rules: list[tuple[_Template, _Template]]) -> Optional[str]:
    for source, target in rules:
        fields = source.match(name)
        if fields is not None:
            return target.format(fields)
    return None


def _rename_all(state_dict: Mapping[str, Tensor], rules: list[tuple[_Template, _Template]], unknown_message: str,
                lookup: Callable[[str], str] = lambda name: name) -> dict[str, Tensor]:
    """`state_dict` renamed by `rules` (each name looked up as `lookup` gives it); a ValueError
    "`unknown_message`: names" lists the names no rule matches."""
    out: dict[str, Tensor] = {}
    unknown = []
    for name, tensor in state_dict.items():
        renamed = _rename(lookup(name), rules)
        if renamed is None:
            unknown.append(name)
        else:
            out[renamed] = tensor
    if unknown:
        raise ValueError(f"{unknown_message}: {name_listing(unknown)}")
    return out


def unwrap_checkpoint(obj: Any) -> Mapping[str, Tensor]:
    """The state dict inside a loaded .pt: the dict itself, or a fairseq checkpoint's "model" entry."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise UserError("not a state dict: expected a mapping of tensor names to tensors (or a fairseq "
                        "checkpoint with a 'model' entry)")
    return obj


def official_to_ours(state_dict: Mapping[str, Any], expected: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A release state dict (or fairseq checkpoint dict) renamed to our encoder's names and fitted to
    the shapes of `expected` (the state dict of the encoder it is for).

    Reads the release's PyTorch model layout and the converted checkpoint its conversion script
    writes (MindSpore's shapes, no `num_batches_tracked`). As the release's README loader does, a
    tensor of another rank than ours is reshaped (here only by adding or dropping unit axes: MindSpore's
    Conv1d weights are (out, in, 1, k)) and one of the same rank but another shape is transposed.
    Training heads are dropped; unknown names, two tensors for one name and shapes that cannot be
    fitted are a UserError. Missing or surplus names are left to the strict load that follows.
    """
    out, sources, problems = _renamed(state_dict)
    misfits = []
    for ours, tensor in out.items():
        if ours in expected:
            fitted = _fit_shape(tensor, expected[ours].shape)
            if fitted is None:
                misfits.append(f"{sources[ours]} {tuple(tensor.shape)} (the model's: {tuple(expected[ours].shape)})")
            else:
                out[ours] = fitted
    if misfits:
        problems.append(f"shapes that do not fit the model, even without unit axes or transposed: "
                        f"{name_listing(misfits, 3)}")
    if problems:
        raise UserError("; ".join(problems))
    for name, buffer in expected.items():
        # MindSpore's BatchNorm has no such counter, so the converted file lacks it. 0 is what the
        # release's loader leaves (its fresh model's value); BatchNorm reads it only when momentum is None
        # (a cumulative average), and ours uses momentum 0.1, so it changes no output and no training step.
        if name.endswith(".num_batches_tracked") and name not in out:
            out[name] = torch.zeros_like(buffer)
    return out


def _renamed(state_dict: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """The tensors of a release state dict under our names (training heads dropped, shapes as they
    are), the release name of each, and the problems found: unknown names, two tensors for one weight."""
    state_dict = unwrap_checkpoint(state_dict)
    rules = _compile([OFFICIAL_LAYER_NORM_CNN] + OFFICIAL_NAMES)
    out: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    unknown, twice = [], []
    for name, tensor in state_dict.items():
        if _OFFICIAL_HEADS.match(name):
            continue
        if not isinstance(tensor, Tensor):
            raise UserError(f"{name} is a {type(tensor).__name__}, not a tensor")
        ours = _rename(_mindspore_norm_names(name), rules)
        if ours is None:
            unknown.append(name)
        elif ours in out:
            twice.append(f"{sources[ours]} and {name}")
        else:
            sources[ours] = name
            out[ours] = tensor
    problems = []
    if unknown:
        problems.append(f"unexpected tensors for the official ProgRE layout: {name_listing(unknown)}")
    if twice:
        problems.append(f"two tensors for one weight: {name_listing(twice, 3)}")
    return out, sources, problems


def _mindspore_norm_names(name: str) -> str:
    """MindSpore's LayerNorm names its weight `gamma` and its bias `beta`. The conversion script's name
    table turns them into weight and bias, but has no entry for the speaker norm (Base has none), and the
    release's README loader renames only `beta` to `bias` in `sub_spk_norm` names: for the speaker
    norm's names we read gamma and beta as weight and bias."""
    found = _SPEAKER_NORM_NAMES.match(name)
    if found is None:
        return name
    return name[:found.start(3)] + ("weight" if found.group(3) == "gamma" else "bias")


def _fit_shape(tensor: Tensor, shape: torch.Size) -> Optional[Tensor]:
    """`tensor` with `shape`: as it is, without or with unit axes (rank differs), or transposed
    (same rank); None when none of these gives `shape`."""
    if tensor.shape == shape:
        return tensor
    if tensor.dim() != len(shape):
        # only unit axes may differ, so the reshape keeps every element in place
        if [n for n in tensor.shape if n != 1] == [n for n in shape if n != 1]:
            return tensor.reshape(shape)
        return None
    transposed = tensor.permute(*reversed(range(tensor.dim())))
    return transposed if transposed.shape == shape else None


def ours_to_official(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our encoder's state dict in the release's names and shapes (inverse of `official_to_ours`)."""
    layer_norm_cnn = "feature_extractor.conv_layers.1.norm.weight" in state_dict
    pairs = ([OFFICIAL_LAYER_NORM_CNN] if layer_norm_cnn else []) + OFFICIAL_NAMES
    shaped = {name: tensor.unsqueeze(-1) if name in _CONV1X1 else tensor for name, tensor in state_dict.items()}
    return _rename_all(shaped, _compile(pairs, reverse=True), "tensors with no counterpart in the official layout")


READ_FROM_WEIGHTS = (
    "pitch_branch", "speaker_branch", "speaker_norm", "extractor_mode", "conv_bias", "conv_feature_layers",
    "encoder_embed_dim", "encoder_layers", "encoder_ffn_embed_dim", "conv_pos", "conv_pos_groups", "pitch_channels",
    "pitch_kernel", "pitch_gru_hidden", "speaker_bottleneck",
)
"""Config fields a release file's tensors reveal (by their names or shapes); of `conv_feature_layers` only
the channels and kernels: the strides have no weights."""
ASSUMED_SHAPING = ("conv_strides", "encoder_attention_heads", "layer_norm_first", "normalize", "speaker_layer")
"""What the tensors do not reveal and the hidden states depend on, taken from the size preset: the conv
strides (no weights), the head count (q/k/v are (D, D) for any head count), where the LayerNorms sit (pre-
and post-LN have the same tensors), the waveform normalisation (no weights) and the layer the speaker branch
reads (the names carry no layer index: `encoder.astp` is one module beside the layer list)."""
ASSUMED_TRAINING = ("feature_grad_mult", "dropout", "attention_dropout", "activation_dropout", "dropout_input",
                    "encoder_layerdrop", "speaker_grad_through")
"""Training-only values, taken from the size preset: they change no hidden state of the imported encoder,
only how further training would run."""


def official_config(state_dict: Mapping[str, Any], size: str,
                    **assume: Any) -> tuple[ModelConfig, dict[str, Any]]:
    """The config of the model a release state dict holds, and the values assumed for it.

    Every field in `READ_FROM_WEIGHTS` is read from the tensors; the others come from the `size` preset
    (of ProgRE, or of HuBERT when the file has neither branch), or from `assume`, which replaces preset
    values the tensors do not reveal. Returns (config, assumed): `assumed` maps each unrevealed value
    (`ASSUMED_SHAPING`, then `ASSUMED_TRAINING`; `conv_strides` is the stride list) to what was taken.
    A file whose width or layer count is not the preset's is a UserError (naming the size it fits, if
    one does): the unrevealed values of one size do not hold for another.
    """
    clash = sorted(set(assume) & set(READ_FROM_WEIGHTS))
    if clash:
        raise UserError(f"{', '.join(clash)}: read from the weights, not assumed")
    renamed, _, problems = _renamed(state_dict)
    if problems:
        raise UserError("; ".join(problems))
    revealed = _read_config_fields(renamed)
    kind = "progre" if revealed["pitch_branch"] or revealed["speaker_branch"] else "hubert"
    try:
        preset = model_config(size, kind, **assume)
    except (TypeError, ValueError) as exc:
        raise UserError(f"the values assumed: {exc}") from None
    wrong = _size_mismatch(revealed, preset, size)
    if wrong:
        raise UserError(wrong)
    strides = [stride for _, _, stride in preset.conv_feature_layers]
    cnn = revealed.pop("conv_feature_layers")
    if len(cnn) != len(strides):
        raise UserError(f"the weights have {len(cnn)} conv layers, the {size} preset {len(strides)}: "
                        f"their strides are not known (the strides have no weights)")
    revealed["conv_feature_layers"] = [(channels, kernel, stride) for (channels, kernel), stride in zip(cnn, strides)]
    fields = preset.to_dict() | revealed
    try:
        config = ModelConfig.from_dict(fields)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    assumed: dict[str, Any] = {"conv_strides": strides}
    for name in ASSUMED_SHAPING[1:] + ASSUMED_TRAINING:
        if name in ("speaker_layer", "speaker_grad_through") and not config.speaker_branch:
            continue
        assumed[name] = getattr(config, name)
    return config, assumed


def describe_official_config(config: ModelConfig, assumed: dict[str, Any], size: str) -> str:
    """One line: what `official_config` read from the weights and what it assumed."""
    read = []
    for name in READ_FROM_WEIGHTS:
        value = getattr(config, name)
        if name == "conv_feature_layers":
            value = " ".join(f"{channels}x{kernel}" for channels, kernel, _ in value)  # channels x kernel
        read.append(f"{name} {value}")
    shaping = [f"{name} {value}" for name, value in assumed.items() if name not in ASSUMED_TRAINING]
    training = [f"{name} {value}" for name, value in assumed.items() if name in ASSUMED_TRAINING]
    return (f"read from the weights: {', '.join(read)}; not in the weights, assumed as the {size} preset's: "
            f"{', '.join(shaping)}; training only, also the preset's: {', '.join(training)}")


def _read_config_fields(renamed: Mapping[str, Tensor]) -> dict[str, Any]:
    """The `READ_FROM_WEIGHTS` fields from tensors under our names (MindSpore's shapes allowed: conv weights
    with a unit axis; widths are read from 1-D tensors where one exists, so a transposed matrix does not
    mislead). `conv_feature_layers` holds (channels, kernel) pairs here."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in renamed:
            official = _rename(name, _compile([OFFICIAL_LAYER_NORM_CNN] + OFFICIAL_NAMES, reverse=True))
            raise UserError(f"cannot read the model's shape: the weights have no {official or name}")
        return tuple(renamed[name].shape)

    def indices(pattern: str) -> list[int]:
        found = re.compile(pattern)
        return sorted({int(m.group(1)) for m in map(found.match, renamed) if m})

    config: dict[str, Any] = {
        "pitch_branch": any(n.startswith("pitch_branch.") for n in renamed),
        "speaker_branch": any(n.startswith("speaker_branch.") for n in renamed),
        "speaker_norm": any(n.startswith("speaker_norm.") for n in renamed),
        # fairseq's "default" extractor normalises the first block only; "layer_norm" every block
        "extractor_mode": "layer_norm" if "feature_extractor.conv_layers.1.norm.weight" in renamed else "default",
        "conv_bias": "feature_extractor.conv_layers.0.conv.bias" in renamed,
    }
    conv_shapes = [shape(f"feature_extractor.conv_layers.{i}.conv.weight")
                   for i in indices(r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight\Z")]
    config["conv_feature_layers"] = [(conv[0], conv[-1]) for conv in conv_shapes]
    if not config["conv_feature_layers"]:
        shape("feature_extractor.conv_layers.0.conv.weight")  # the one-line error
    width = shape("transformer.layer_norm.weight")[0]
    config["encoder_embed_dim"] = width
    config["encoder_layers"] = len(indices(r"transformer\.layers\.(\d+)\."))
    config["encoder_ffn_embed_dim"] = shape("transformer.layers.0.fc1.bias")[0]
    weight_v = shape("transformer.pos_conv.weight_v")  # (D, D / groups, [1,] kernel)
    config["conv_pos"] = weight_v[-1]
    config["conv_pos_groups"] = width // weight_v[1]
    if config["pitch_branch"]:
        config["pitch_channels"] = shape("pitch_branch.blocks.0.conv.bias")[0]
        config["pitch_kernel"] = shape("pitch_branch.blocks.0.conv.weight")[-1]
        config["pitch_gru_hidden"] = shape("pitch_branch.gru.bias_hh_l0")[0] // 3  # a GRU's three gates
    if config["speaker_branch"]:
        config["speaker_bottleneck"] = shape("speaker_branch.attention_hidden.weight")[0]  # (B, D, 1[, 1])
    return config


def _size_mismatch(revealed: dict[str, Any], preset: ModelConfig, size: str) -> Optional[str]:
    """A message when the weights' width or layer count is not `preset`'s, else None."""
    def describe(layers: int, width: int) -> str:
        return f"{layers} transformer layers of width {width}"

    got = (revealed["encoder_layers"], revealed["encoder_embed_dim"])
    if got == (preset.encoder_layers, preset.encoder_embed_dim):
        return None
    presets = {s: model_config(s, "progre") for s in SIZES}
    fits = [s for s, c in presets.items() if (c.encoder_layers, c.encoder_embed_dim) == got]
    hint = f"; they are a {fits[0]} model's" if fits else ""
    return (f"the weights do not fit the model: {describe(*got)}, where the {size} preset has "
            f"{describe(preset.encoder_layers, preset.encoder_embed_dim)}{hint}")


def torchaudio_hubert_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchaudio's `hubert_base()` / `Wav2Vec2Model` (or `HuBERTPretrainModel`) state dict renamed
    to our HuBERT encoder's names. `Wav2Vec2Model` has no mask embedding, so then the result lacks
    "mask_embedding". Heads (aux, logit generator) are dropped."""
    encoder = {name.removeprefix("wav2vec2."): tensor for name, tensor in state_dict.items()}
    encoder = {name: tensor for name, tensor in encoder.items() if not name.startswith(("aux.", "logit_generator."))}
    return _rename_all(encoder, _compile(TORCHAUDIO_NAMES), "unexpected tensors for torchaudio's HuBERT")


def name_listing(names: list[str], limit: int = 6) -> str:
    """Sorted names, the first `limit` of them, with a count when cut."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def ours_to_transformers_hubert(state_dict: Mapping[str, Tensor],
                                legacy_weight_norm: bool = False) -> dict[str, Tensor]:
    """Our HuBERT encoder's state dict in the names of transformers' `HubertModel` (the position conv's
    weight norm as a parametrization, or with `legacy_weight_norm` as weight_g / weight_v). A ValueError
    names tensors that `HubertModel` has no place for (the ProgRE branches)."""
    # without the parametrization's names, the position conv's weight_g / weight_v keep theirs (the rule for {w})
    pairs = [pair for pair in TRANSFORMERS_HUBERT_NAMES if not (legacy_weight_norm and "parametrizations" in pair[0])]
    return _rename_all(state_dict, _compile(pairs, reverse=True),
                       "tensors with no counterpart in transformers' HubertModel")


def transformers_hubert_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A transformers `HubertModel` state dict (either weight-norm naming) in our encoder's names."""
    return _rename_all(state_dict, _compile(TRANSFORMERS_HUBERT_NAMES),
                       "unexpected tensors for transformers' HubertModel",
                       lookup=lambda name: name.removeprefix("hubert."))
