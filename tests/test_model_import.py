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


def test_converted_release_with_speaker_norm_imports(tmp_path):
    # the Large layout's extra pieces on a tiny model: LayerNorm CNN and sub_spk_norm, the latter with
    # the MindSpore name `beta` the release's loader renames
    torch.manual_seed(0)
    encoder = _randomized(build_encoder(model_config("tiny", "progre", extractor_mode="layer_norm", speaker_norm=True)))
    converted = _as_converted_release(encoder)
    assert {"encoder.sub_spk_norm.weight", "encoder.sub_spk_norm.bias"} <= set(converted["model"])
    converted["model"]["encoder.sub_spk_norm.beta"] = converted["model"].pop("encoder.sub_spk_norm.bias")
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
