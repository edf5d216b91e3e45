"""Weight-name conversion between our encoder and other layouts: the official ProgRE release
(fairseq-style, `tests/data/official-base-state-dict.tsv`, and the file its MindSpore-to-PyTorch
script `migrating/chkp_conversion.py` writes), torchaudio's HuBERT and transformers' `HubertModel`.

Name tables are pairs of templates, one per layout. A placeholder {i} is a layer index, {w} a
parameter or buffer name; {k-1} on one side is {k} minus one (the release numbers its pitch blocks
from 1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch import Tensor

from ..errors import UserError

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
    # the LayerNorm after the speaker subtraction (MindSpore `spk_norm`, Large only). The release publishes
    # no PyTorch name for it, only a loader that looks for "sub_spk_norm": we write the first name, read both
    ("encoder.sub_spk_norm.{w}", "speaker_norm.{w}"),
    ("sub_spk_norm.{w}", "speaker_norm.{w}"),
]
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
TRANSFORMERS_LEGACY_WEIGHT_NORM = {
    "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv_embed.conv.weight_g",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv_embed.conv.weight_v",
}
"""The parametrization names -> the names transformers' HubertModel has under an old torch (weight_norm hooks)."""

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
    state_dict = unwrap_checkpoint(state_dict)
    rules = _compile([OFFICIAL_LAYER_NORM_CNN] + OFFICIAL_NAMES)
    out: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    unknown, twice, misfits = [], [], []
    for name, tensor in state_dict.items():
        if _OFFICIAL_HEADS.match(name):
            continue
        if not isinstance(tensor, Tensor):
            raise UserError(f"{name} is a {type(tensor).__name__}, not a tensor")
        ours = _rename(_mindspore_norm_names(name), rules)
        if ours is None:
            unknown.append(name)
            continue
        if ours in out:
            twice.append(f"{sources[ours]} and {name}")
            continue
        sources[ours] = name
        out[ours] = tensor
        if ours in expected:
            fitted = _fit_shape(tensor, expected[ours].shape)
            if fitted is None:
                misfits.append(f"{name} {tuple(tensor.shape)} (the model's: {tuple(expected[ours].shape)})")
            else:
                out[ours] = fitted
    problems = []
    if unknown:
        problems.append(f"unexpected tensors for the official ProgRE layout: {name_listing(unknown)}")
    if twice:
        problems.append(f"two tensors for one weight: {name_listing(twice, 3)}")
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


def _mindspore_norm_names(name: str) -> str:
    """The release's README loader renames `beta` to `bias` in `sub_spk_norm` names (a MindSpore name
    its Large conversion left); `gamma` is the matching weight."""
    if "sub_spk_norm." not in name:
        return name
    return re.sub(r"\.beta\Z", ".bias", re.sub(r"\.gamma\Z", ".weight", name))


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
    rules = _compile(pairs, reverse=True)
    out: dict[str, Tensor] = {}
    unknown = []
    for name, tensor in state_dict.items():
        official = _rename(name, rules)
        if official is None:
            unknown.append(name)
        else:
            out[official] = tensor.unsqueeze(-1) if name in _CONV1X1 else tensor
    if unknown:
        raise ValueError(f"tensors with no counterpart in the official layout: {name_listing(unknown)}")
    return out


def infer_official_overrides(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Config fields that a release state dict fixes beyond its size preset: the CNN's normalisation
    and the LayerNorm after the speaker subtraction."""
    names = set(unwrap_checkpoint(state_dict))
    overrides: dict[str, Any] = {}
    if "feature_extractor.conv_layers.1.2.1.weight" in names:
        overrides["extractor_mode"] = "layer_norm"
    elif "feature_extractor.conv_layers.0.2.weight" in names:
        overrides["extractor_mode"] = "default"
    if any("sub_spk_norm." in name for name in names):
        overrides["speaker_norm"] = True
    return overrides


def torchaudio_hubert_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchaudio's `hubert_base()` / `Wav2Vec2Model` (or `HuBERTPretrainModel`) state dict renamed
    to our HuBERT encoder's names. `Wav2Vec2Model` has no mask embedding, so then the result lacks
    "mask_embedding". Heads (aux, logit generator) are dropped."""
    rules = _compile(TORCHAUDIO_NAMES)
    out: dict[str, Tensor] = {}
    unknown = []
    for name, tensor in state_dict.items():
        name = name.removeprefix("wav2vec2.")
        if name.startswith(("aux.", "logit_generator.")):
            continue
        ours = _rename(name, rules)
        if ours is None:
            unknown.append(name)
        else:
            out[ours] = tensor
    if unknown:
        raise ValueError(f"unexpected tensors for torchaudio's HuBERT: {name_listing(unknown)}")
    return out


def name_listing(names: list[str], limit: int = 6) -> str:
    """Sorted names, the first `limit` of them, with a count when cut."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def ours_to_transformers_hubert(state_dict: Mapping[str, Tensor], legacy_weight_norm: bool = False) -> dict[str, Tensor]:
    """Our HuBERT encoder's state dict in the names of transformers' `HubertModel` (the position conv's
    weight norm as a parametrization, or with `legacy_weight_norm` as weight_g / weight_v). A ValueError
    names tensors that `HubertModel` has no place for (the ProgRE branches)."""
    rules = _compile(TRANSFORMERS_HUBERT_NAMES, reverse=True)
    out: dict[str, Tensor] = {}
    unknown = []
    for name, tensor in state_dict.items():
        theirs = _rename(name, rules)
        if theirs is None:
            unknown.append(name)
            continue
        if legacy_weight_norm:
            theirs = TRANSFORMERS_LEGACY_WEIGHT_NORM.get(theirs, theirs)
        out[theirs] = tensor
    if unknown:
        raise ValueError(f"tensors with no counterpart in transformers' HubertModel: {name_listing(unknown)}")
    return out


def transformers_hubert_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A transformers `HubertModel` state dict (either weight-norm naming) in our encoder's names."""
    rules = _compile(TRANSFORMERS_HUBERT_NAMES)
    out: dict[str, Tensor] = {}
    unknown = []
    for name, tensor in state_dict.items():
        ours = _rename(name.removeprefix("hubert."), rules)
        if ours is None:
            unknown.append(name)
        else:
            out[ours] = tensor
    if unknown:
        raise ValueError(f"unexpected tensors for transformers' HubertModel: {name_listing(unknown)}")
    return out
