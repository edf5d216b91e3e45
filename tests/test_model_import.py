"""Weights in the official release's layout: import, export, round trips."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from progre.frames import num_frames
from progre.errors import UserError
from progre.model import (ModelConfig, ProgREEncoder, load_encoder, model_config, official_to_ours, ours_to_official,
                          save_checkpoint)
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
    encoder = ProgREEncoder(model_config("base", "progre")).eval()
    # the fairseq checkpoint wrapping and its training heads are handled too
    ours = official_to_ours({"model": {**official, "final_proj.weight": torch.zeros(256, 768),
                                       "label_embs_concat": torch.zeros(504, 256)}})
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
    with pytest.raises(UserError, match="unexpected tensors .*encoder.mystery"):
        official_to_ours({**official, "encoder.mystery.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="not a state dict"):
        official_to_ours([1, 2, 3])
    encoder = ProgREEncoder(model_config("base", "progre"))
    del official["sub_norm.bias"]
    with pytest.raises(UserError, match="missing sub_norm.bias"):
        load_state_dict_checked(encoder, official_to_ours(official), "x")


def test_import_official_rejects_wrong_size_and_bad_files(tmp_path):
    torch.manual_seed(0)
    tiny = ProgREEncoder(model_config("tiny", "progre"))
    torch.save(ours_to_official(tiny.state_dict()), tmp_path / "tiny.pt")
    with pytest.raises(UserError, match="read as a base model.*wrong shapes"):
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
    encoder = ProgREEncoder(model_config("tiny", kind)).eval()
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


def test_speaker_norm_follows_the_subtraction():
    torch.manual_seed(0)
    encoder = ProgREEncoder(model_config("tiny", "progre", speaker_norm=True)).eval()
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
        plain = ProgREEncoder(model_config("tiny", "progre"))
        plain.load_state_dict({k: v for k, v in encoder.state_dict().items() if not k.startswith("speaker_norm.")})
        plain_states, _ = plain.eval().extract(wav, pitch)
    assert torch.equal(plain_states[after - 1], states[after - 1])
    assert not torch.allclose(plain_states[after], states[after])


def test_checkpoints_without_speaker_norm_in_their_config_still_load(tmp_path):
    import json

    torch.manual_seed(0)
    encoder = ProgREEncoder(model_config("tiny", "progre")).eval()
    save_checkpoint(tmp_path / "old", encoder)
    meta = json.loads((tmp_path / "old" / CONFIG).read_text())
    del meta["model"]["speaker_norm"]  # as written before the field existed
    (tmp_path / "old" / CONFIG).write_text(json.dumps(meta))
    assert ModelConfig.from_dict(meta["model"]).speaker_norm is False
    loaded = load_encoder(tmp_path / "old")
    assert loaded.config == encoder.config and not hasattr(loaded, "speaker_norm")
    with pytest.raises(ValueError, match="speaker_norm needs speaker_branch"):
        model_config("tiny", "hubert", speaker_norm=True)
