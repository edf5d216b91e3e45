"""Weights in the official release's layout: import, export, round trips."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from typer.testing import CliRunner

from progre.cli import app
from progre.frames import num_frames
from progre.errors import UserError
from progre.model import (ModelConfig, ProgREEncoder, build_encoder, load_encoder, model_config, official_to_ours,
                          ours_to_official, save_checkpoint)
from progre.model.checkpoint import CONFIG, load_state_dict_checked
from stages.export import export, import_official

# every tensor name and shape of the official release's Base checkpoint (a copy of the project's
# shared/spec/official-base-state-dict.tsv, kept here so the tests never depend on files outside the repo)
SPEC = Path(__file__).resolve().parent / "data" / "official-base-state-dict.tsv"


def _spec() -> dict[str, tuple[int, ...]]:
    rows = [line.split("\t") for line in SPEC.read_text().splitlines() if line.strip()]
    return {name: tuple(ast.literal_eval(shape)) for name, shape in rows}


def _random_official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in _spec().items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(100)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = 0.05 * torch.randn(shape, generator=g)
    return state


def test_random_release_state_dict_loads_and_extracts():
    official = _random_official_state_dict()
    encoder = build_encoder(model_config("base", "progre")).eval()
    # the fairseq checkpoint wrapping and its training heads are handled too
    ours = official_to_ours({"model": {**official, "final_proj.weight": torch.zeros(256, 768),
                                       "label_embs_concat": torch.zeros(504, 256)}}, encoder.state_dict())
    load_state_dict_checked(encoder, ours, "spec state dict")  # strict: no missing or unexpected names
    wav = 0.1 * torch.randn(1, 16000)
    with torch.no_grad():
        states, frames = encoder.extract(wav, torch.randn(1, 49))
    assert frames.tolist() == [49]
    assert len(states) == 14 and all(s.shape == (1, 49, 768) for s in states)
    assert encoder.hidden_state_names()[:6] == ["pitch", "layer1", "layer2", "layer3", "speaker", "layer4-speaker"]
    # and back: the spec's names and shapes exactly
    back = ours_to_official(encoder.state_dict())
    assert {k: tuple(v.shape) for k, v in back.items()} == _spec()
    assert all(torch.equal(back[k], official[k]) for k in official)


def test_release_layout_errors():
    official = _random_official_state_dict()
    expected = build_encoder(model_config("base", "progre")).state_dict()
    with pytest.raises(UserError, match="unexpected tensors .*encoder.mystery"):
        official_to_ours({**official, "encoder.mystery.weight": torch.zeros(1)}, expected)
    with pytest.raises(UserError, match="not a state dict"):
        official_to_ours([1, 2, 3], expected)
    with pytest.raises(UserError, match="two tensors for one weight: encoder.sub_spk_norm.bias and sub_spk_norm.beta"):
        official_to_ours({"encoder.sub_spk_norm.bias": torch.zeros(768), "sub_spk_norm.beta": torch.zeros(768)},
                         expected)
    del official["sub_norm.bias"]
    with pytest.raises(UserError, match="missing sub_norm.bias"):
        load_state_dict_checked(build_encoder(model_config("base", "progre")), official_to_ours(official, expected),
                                "x")


def test_import_official_rejects_wrong_size_and_bad_files(tmp_path):
    torch.manual_seed(0)
    tiny = build_encoder(model_config("tiny", "progre"))
    torch.save(ours_to_official(tiny.state_dict()), tmp_path / "tiny.pt")
    with pytest.raises(UserError, match="read as a base model.*do not fit the model"):
        import_official(tmp_path / "tiny.pt", tmp_path / "out", size="base")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="not found"):
        import_official(tmp_path / "missing.pt", tmp_path / "out", size="base")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read"):
        import_official(tmp_path / "junk.pt", tmp_path / "out", size="base")


@pytest.mark.parametrize("kind", ["progre", "hubert"])
def test_export_import_round_trip(tmp_path, kind):
    torch.manual_seed(0)
    encoder = build_encoder(model_config("tiny", kind)).eval()
    for m in encoder.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
    save_checkpoint(tmp_path / "run" / "checkpoints" / "step100", encoder)

    export(tmp_path / "run", tmp_path / "official", official=True)  # a run folder: finds the checkpoint
    import_official(tmp_path / "official" / "model.pt", tmp_path / "imported", size="tiny")
    export(tmp_path / "imported", tmp_path / "exported", official=False)
    wav, pitch = 0.1 * torch.randn(2, 9000), torch.randn(2, num_frames(9000))
    lengths = torch.tensor([9000, 6000])
    with torch.no_grad():
        expected, _ = encoder.extract(wav, pitch, lengths)
        for folder in ("imported", "exported"):
            loaded = load_encoder(tmp_path / folder)
            assert loaded.config == encoder.config
            states, _ = loaded.extract(wav, pitch, lengths)
            assert len(states) == len(expected)
            for a, b in zip(states, expected):
                assert torch.equal(a, b)


def test_import_official_explains_pickled_objects(tmp_path):
    import argparse

    torch.save({"model": {"mask_emb": torch.zeros(768)}, "args": argparse.Namespace(x=1)}, tmp_path / "ckpt.pt")
    with pytest.raises(UserError, match="argparse.Namespace object besides the weights"):
        import_official(tmp_path / "ckpt.pt", tmp_path / "out", size="base")


# ---------------------------------------------------------------- the release's converted checkpoint
# `migrating/chkp_conversion.py` of github.com/wangtianrui/ProgRE writes TORCHModel_base_progre.ckpt as
# {"model": {...}} with the 252 names of its `migrating/torch.txt`: the PyTorch model's names less the
# three num_batches_tracked (MindSpore's BatchNorm has none), plus its training heads, all in MindSpore's
# shapes: MindSpore's Conv1d is a Conv2d with kernel (1, k), so every conv weight (the CNN's, the
# pitch branch's, the speaker branch's 1x1 convs and the weight-norm position conv's g and v) has a unit
# axis at index 2.
RELEASE_HEADS = {"final_proj.weight": (256, 768), "final_proj.bias": (256,), "label_embs_concat": (504, 256),
                 "spk_linear.weight": (100, 768), "spk_linear.bias": (100,)}  # the release's speaker count is unknown


def _randomized(encoder: ProgREEncoder) -> ProgREEncoder:
    """`encoder` with every tensor moved off its init (LayerNorms off 1 and 0, BatchNorm statistics set),
    so a weight loaded into the wrong place shows in the outputs."""
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.02 * torch.randn_like(p))
        for m in encoder.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(1000)
    return encoder.eval()


def _as_converted_release(encoder: ProgREEncoder) -> dict:
    """`encoder`'s weights as the release's conversion script writes them (see above)."""
    state = {}
    for name, tensor in ours_to_official(encoder.state_dict()).items():
        if not name.endswith("num_batches_tracked"):
            state[name] = tensor.unsqueeze(2) if tensor.dim() == 3 else tensor
    heads = {name: torch.randn(shape) for name, shape in RELEASE_HEADS.items()}
    return {"model": {**state, **heads}}


def _assert_same_states(imported: ProgREEncoder, original: ProgREEncoder, samples: int = 16000) -> float:
    """Both encoders give the same hidden states on a random padded batch; returns the largest difference."""
    torch.manual_seed(1)
    wav, pitch = 0.1 * torch.randn(2, samples), torch.randn(2, num_frames(samples))
    lengths = torch.tensor([samples, samples * 3 // 4])
    with torch.no_grad():
        expected, _ = original.extract(wav, pitch, lengths)
        states, _ = imported.extract(wav, pitch, lengths)
    assert len(states) == len(expected) == len(original.hidden_state_names())
    worst = max(float((a - b).abs().max()) for a, b in zip(states, expected))
    assert worst <= 1e-5
    return worst


@pytest.fixture(scope="module")
def converted_base(tmp_path_factory):
    """A random ProgRE Base encoder and its weights saved as the release's converted checkpoint."""
    torch.manual_seed(0)
    encoder = _randomized(build_encoder(model_config("base", "progre")))
    path = tmp_path_factory.mktemp("release") / "TORCHModel_base_progre.ckpt"
    torch.save(_as_converted_release(encoder), path)
    return encoder, path


def test_converted_release_checkpoint_has_the_release_layout(converted_base):
    _, path = converted_base
    state = torch.load(path, weights_only=True)["model"]
    assert len(state) == 252
    assert not any(name.endswith("num_batches_tracked") for name in state)
    unit_axis = {name for name, t in state.items() if t.dim() == 4}
    assert len(unit_axis) == 14 and all(state[name].shape[2] == 1 for name in unit_axis)
    assert state["feature_extractor.conv_layers.0.0.weight"].shape == (512, 1, 1, 10)
    assert state["encoder.pos_conv.0.weight_g"].shape == (1, 1, 1, 128)
    assert state["encoder.astp.linear1.weight"].shape == (256, 768, 1, 1)


def test_converted_release_checkpoint_imports_with_the_same_hidden_states(converted_base, tmp_path):
    encoder, path = converted_base
    result = CliRunner().invoke(app, ["import-official", str(path), "--out", str(tmp_path / "imported")])
    assert result.exit_code == 0, result.output
    imported = load_encoder(tmp_path / "imported")
    assert imported.config == encoder.config
    assert len(imported.hidden_state_names()) == 14
    _assert_same_states(imported, encoder)
    for name, buffer in imported.state_dict().items():
        if name.endswith("num_batches_tracked"):
            assert int(buffer) == 0  # filled in: the converted file has none


@pytest.mark.parametrize("names", [("encoder.spk_norm_layer.gamma", "encoder.spk_norm_layer.beta"),
                                   ("encoder.spk_norm_layer.weight", "encoder.spk_norm_layer.bias"),
                                   ("encoder.sub_spk_norm.weight", "encoder.sub_spk_norm.beta"),
                                   ("sub_spk_norm.gamma", "sub_spk_norm.bias")])
def test_converted_release_with_speaker_norm_imports(tmp_path, names):
    # the Large layout's extra pieces on a tiny model: LayerNorm CNN and the LayerNorm after the speaker
    # subtraction, under the MindSpore attribute's name (spk_norm_layer, with MindSpore's gamma and beta
    # or converted to weight and bias) or the name the release's README loader looks for (sub_spk_norm)
    torch.manual_seed(0)
    encoder = _randomized(build_encoder(model_config("tiny", "progre", extractor_mode="layer_norm", speaker_norm=True)))
    converted = _as_converted_release(encoder)
    # we write the MindSpore attribute's name, converted as the release's script converts the others
    assert {"encoder.spk_norm_layer.weight", "encoder.spk_norm_layer.bias"} <= set(converted["model"])
    converted["model"][names[0]] = converted["model"].pop("encoder.spk_norm_layer.weight")
    converted["model"][names[1]] = converted["model"].pop("encoder.spk_norm_layer.bias")
    torch.save(converted, tmp_path / "large-like.ckpt")
    imported = import_official(tmp_path / "large-like.ckpt", tmp_path / "imported", size="tiny")
    assert imported.config.speaker_norm and imported.config == encoder.config
    _assert_same_states(load_encoder(tmp_path / "imported"), encoder, samples=9000)


def test_speaker_norm_follows_the_subtraction():
    torch.manual_seed(0)
    encoder = build_encoder(model_config("tiny", "progre", speaker_norm=True)).eval()
    names = encoder.hidden_state_names()
    after = names.index("layer2-speaker")
    assert names[after - 1] == "speaker" and len(names) == 6  # the list is the same as without the norm
    wav, pitch = 0.1 * torch.randn(1, 8000), torch.randn(1, num_frames(8000))
    with torch.no_grad():
        states, _ = encoder.extract(wav, pitch)
        # the state after the subtraction is normalised (LayerNorm at init: zero mean, unit variance per frame)
        # and is what layer 3 reads
        assert states[after].mean(-1).abs().max() < 1e-5
        assert torch.allclose(states[after].var(-1, unbiased=False), torch.ones(1, states[after].shape[1]), atol=1e-3)
        assert torch.allclose(encoder.transformer.layers[2](states[after], None), states[after + 1], atol=1e-6)
        plain = build_encoder(model_config("tiny", "progre"))
        plain.load_state_dict({k: v for k, v in encoder.state_dict().items() if not k.startswith("speaker_norm.")})
        plain_states, _ = plain.eval().extract(wav, pitch)
    assert torch.equal(plain_states[after - 1], states[after - 1])
    assert not torch.allclose(plain_states[after], states[after])


def test_converted_release_shape_errors(tmp_path):
    torch.manual_seed(0)
    encoder = _randomized(build_encoder(model_config("tiny", "progre")))
    expected = encoder.state_dict()
    converted = _as_converted_release(encoder)["model"]
    # a linear weight stored transposed is turned back, as the release's loader does
    ours = official_to_ours({**converted, "post_extract_proj.weight": converted["post_extract_proj.weight"].T},
                            expected)
    assert torch.equal(ours["feature_projection.weight"], expected["feature_projection.weight"])
    # a reshape that would move elements (not just unit axes) is refused, as is a shape no transpose fits
    weight_v = converted["encoder.pos_conv.0.weight_v"]  # (256, 16, 1, 128)
    bad = {**converted, "encoder.pos_conv.0.weight_v": weight_v.reshape(256, 16, 2, 64)}
    with pytest.raises(UserError, match=r"encoder.pos_conv.0.weight_v \(256, 16, 2, 64\) \(the model's: "
                                        r"\(256, 16, 128\)\)") as err:
        official_to_ours(bad, expected)
    assert "\n" not in str(err.value)
    bad = {**converted, "post_extract_proj.weight": torch.zeros(256, 100)}
    with pytest.raises(UserError, match=r"post_extract_proj.weight \(256, 100\) \(the model's: \(256, 128\)\)"):
        official_to_ours(bad, expected)
    # through the command: the file is named, nothing is written; an unknown name is still refused
    torch.save({"model": bad}, tmp_path / "bad.ckpt")
    with pytest.raises(UserError, match="bad.ckpt .read as a tiny model.: shapes that do not fit"):
        import_official(tmp_path / "bad.ckpt", tmp_path / "out", size="tiny")
    torch.save({"model": {**converted, "encoder.mystery.weight": torch.zeros(3)}}, tmp_path / "unknown.ckpt")
    with pytest.raises(UserError, match="unexpected tensors for the official ProgRE layout: encoder.mystery.weight"):
        import_official(tmp_path / "unknown.ckpt", tmp_path / "out", size="tiny")
    assert not (tmp_path / "out").exists()


def test_checkpoints_without_speaker_norm_in_their_config_still_load(tmp_path):
    import json

    torch.manual_seed(0)
    encoder = build_encoder(model_config("tiny", "progre")).eval()
    save_checkpoint(tmp_path / "old", encoder)
    meta = json.loads((tmp_path / "old" / CONFIG).read_text())
    del meta["model"]["speaker_norm"]  # as written before the field existed
    (tmp_path / "old" / CONFIG).write_text(json.dumps(meta))
    assert ModelConfig.from_dict(meta["model"]).speaker_norm is False
    loaded = load_encoder(tmp_path / "old")
    assert loaded.config == encoder.config and loaded.speaker_norm is None
    assert not any(name.startswith("speaker_norm.") for name in loaded.state_dict())
    with pytest.raises(ValueError, match="speaker_norm needs speaker_branch"):
        model_config("tiny", "hubert", speaker_norm=True)


# ---------------------------------------------------------------- the release's Large
# The release ships its Large ProgRE as a MindSpore checkpoint only; converted as its script converts the
# Base, its file holds the Base's names with 24 layers of width 1024, HuBERT Large's LayerNorm in every CNN
# block (fairseq's index 2.1), and the MindSpore encoder's `spk_norm_layer` (LayerNorm weights gamma, beta).
LARGE_ASSUMED = {"conv_strides": [5, 2, 2, 2, 2, 2, 2], "encoder_attention_heads": 16, "layer_norm_first": True,
                 "normalize": True, "speaker_layer": 4, "feature_grad_mult": 1.0, "dropout": 0.0,
                 "attention_dropout": 0.0, "activation_dropout": 0.0, "dropout_input": 0.0, "encoder_layerdrop": 0.0,
                 "speaker_grad_through": False}


def _in_release_names(converted: dict) -> dict:
    """A converted file with the speaker norm under the MindSpore attribute's name and parameter names."""
    state = dict(converted["model"])
    state["encoder.spk_norm_layer.gamma"] = state.pop("encoder.spk_norm_layer.weight")
    state["encoder.spk_norm_layer.beta"] = state.pop("encoder.spk_norm_layer.bias")
    return {"model": state}


def test_large_release_file_reveals_its_config():
    # every name and shape of a full-size Large in the release's layout, without memory: a model on the meta
    # device (shapes only), written in the release's names and MindSpore's shapes
    from progre.model.official import official_config

    with torch.device("meta"):
        large = build_encoder(model_config("large", "progre", speaker_norm=True))
        state = _in_release_names(_as_converted_release(large))["model"]
    assert state["encoder.layers.23.self_attn.q_proj.weight"].shape == (1024, 1024)
    assert state["encoder.layers.0.fc1.weight"].shape == (4096, 1024)
    assert state["feature_extractor.conv_layers.0.0.weight"].shape == (512, 1, 1, 10)
    assert state["feature_extractor.conv_layers.6.2.1.weight"].shape == (512,)
    assert state["encoder.pos_conv.0.weight_v"].shape == (1024, 64, 1, 128)
    assert state["encoder.spk_norm_layer.gamma"].shape == (1024,) and "encoder.layers.24.fc1.bias" not in state
    config, assumed = official_config({"model": state}, "large")
    assert config == large.config
    assert assumed == LARGE_ASSUMED
    # every tensor lands on a weight of the Large encoder, in its shape
    ours = official_to_ours(state, large.state_dict())
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in large.state_dict().items()}
    # read as another size, the file is refused: that size's assumptions would not hold
    with pytest.raises(UserError, match="24 transformer layers of width 1024, where the base preset has 12 "
                                        "transformer layers of width 768; they are a large model's"):
        official_config(state, "base")
    # values the weights reveal cannot be assumed; the others can
    with pytest.raises(UserError, match="encoder_embed_dim: read from the weights"):
        official_config(state, "large", encoder_embed_dim=1024)
    assert official_config(state, "large", speaker_layer=6)[1]["speaker_layer"] == 6


def test_values_the_weights_reveal_are_read_not_taken_from_the_preset():
    from progre.model.official import official_config

    with torch.device("meta"):
        odd = build_encoder(model_config("base", "progre", conv_bias=True, encoder_ffn_embed_dim=2048, conv_pos=64,
                                         conv_pos_groups=8, pitch_channels=128, pitch_kernel=3, pitch_gru_hidden=16,
                                         speaker_bottleneck=128, extractor_mode="layer_norm",
                                         conv_feature_layers=[(256, 10, 5)] + [(256, 3, 2)] * 4 + [(256, 2, 2)] * 2))
        state = _as_converted_release(odd)
    config, assumed = official_config(state, "base")
    assert config == odd.config
    assert assumed["layer_norm_first"] is False and assumed["normalize"] is False
    with torch.device("meta"):
        hubert = build_encoder(model_config("base", "hubert"))
    config, assumed = official_config(ours_to_official(hubert.state_dict()), "base")
    assert config == hubert.config and config.encoder_layerdrop == 0.05  # HuBERT Base's preset, not ProgRE's
    assert "speaker_layer" not in assumed


def test_large_layout_release_file_imports_with_the_same_hidden_states():
    # the Large's layout (pre-LN Transformer, LayerNorm in every CNN block, normalised waveform, the speaker
    # norm as spk_norm_layer gamma/beta) at the tiny model's sizes, so real weights stay small; what a
    # full-size file reveals is checked above, and by the slow test below end to end
    from progre.model.official import official_config

    torch.manual_seed(0)
    layout = dict(extractor_mode="layer_norm", layer_norm_first=True, normalize=True, speaker_norm=True, conv_bias=True)
    encoder = _randomized(build_encoder(model_config("tiny", "progre", **layout)))
    converted = _in_release_names(_as_converted_release(encoder))
    config, assumed = official_config(converted, "tiny", layer_norm_first=True, normalize=True)
    assert config == encoder.config and assumed["layer_norm_first"] is True
    imported = build_encoder(config)
    load_state_dict_checked(imported, official_to_ours(converted, imported.state_dict()), "large layout")
    _assert_same_states(imported.eval(), encoder, samples=9000)
    # what the tensors cannot tell apart: the tiny preset's post-LN is assumed and named as such
    assert official_config(converted, "tiny")[1]["layer_norm_first"] is False


@pytest.mark.slow
def test_full_size_large_release_file_imports(tmp_path):
    import json

    torch.manual_seed(0)
    encoder = _randomized(build_encoder(model_config("large", "progre", speaker_norm=True)))
    torch.save(_in_release_names(_as_converted_release(encoder)), tmp_path / "TORCHModel_large_progre.ckpt")
    result = CliRunner().invoke(app, ["import-official", str(tmp_path / "TORCHModel_large_progre.ckpt"),
                                      "--size", "large", "--out", str(tmp_path / "imported")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "imported" / CONFIG).read_text())
    assert meta["assumed"] == LARGE_ASSUMED
    imported = load_encoder(tmp_path / "imported")
    assert imported.config == encoder.config
    _assert_same_states(imported, encoder, samples=8000)
