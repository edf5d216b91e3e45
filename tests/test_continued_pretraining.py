"""Continued pretraining (`progre pretrain --init`, `pretrain.init`): the run starts from the init's encoder
weights (heads, optimiser and schedule fresh), resumes after a kill like any run, and a checkpoint made
from another init never resumes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from progre.cli import app
from progre.config import PretrainParams, load_params
from progre.errors import UserError
from progre.model import build_encoder, load_encoder, model_config, save_checkpoint
from progre.train.loop import Trainer
from stages import pretrain as pretrain_stage
from stages.export import import_official

from .test_model_import import _as_converted_release, _randomized
from .test_pretrain import tiny


@pytest.fixture(scope="module")
def imported_release(tmp_path_factory) -> Path:
    """A tiny ProgRE encoder (weights and BatchNorm statistics off their init) written as the release's
    converted checkpoint and imported with `import-official`, as a user imports ProgRE Base."""
    torch.manual_seed(7)
    encoder = _randomized(build_encoder(model_config("tiny", "progre")))
    base = tmp_path_factory.mktemp("release")
    torch.save(_as_converted_release(encoder), base / "TORCHModel_tiny_progre.ckpt")
    import_official(base / "TORCHModel_tiny_progre.ckpt", base / "imported", size="tiny")
    return base / "imported"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_a_continued_run_starts_from_the_init_and_resumes_after_a_kill(imported_release, phone_shards, phone_labels,
                                                                       tmp_path, monkeypatch):
    labels, pitch = phone_labels
    p = tiny(init=str(imported_release))
    init = load_encoder(imported_release).state_dict()
    real_step = Trainer.train_step
    at_step_0 = {}

    def record_step_0(self, batches):
        if self.step == 0:
            at_step_0.update({k: v.clone() for k, v in self.model.encoder.state_dict().items()})
        return real_step(self, batches)

    monkeypatch.setattr(Trainer, "train_step", record_step_0)
    summary = pretrain_stage.run(p, tmp_path / "straight", phone_shards, labels, pitch)
    assert at_step_0.keys() == init.keys()
    for name, tensor in init.items():  # the model before its first update is the init's encoder
        assert torch.equal(at_step_0[name], tensor), name
    trained = _weights(tmp_path / "straight")
    assert not torch.equal(trained["encoder.feature_projection.weight"], init["feature_projection.weight"])
    record = json.loads((tmp_path / "straight" / "model" / "config.json").read_text())["init"]
    assert record["path"] == str(imported_release) and len(record["weights_sha256"]) == 64
    assert summary["init"] == record
    assert json.loads((tmp_path / "straight" / "metrics.json").read_text())["init"] == record

    def dies_at_update_5(self, batches):
        if self.step == 5:
            raise KeyboardInterrupt  # as if killed between checkpoints
        return real_step(self, batches)

    monkeypatch.setattr(Trainer, "train_step", dies_at_update_5)
    with pytest.raises(KeyboardInterrupt):
        pretrain_stage.run(p, tmp_path / "killed", phone_shards, labels, pitch)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    pretrain_stage.run(p, tmp_path / "killed", phone_shards, labels, pitch)  # the same command again
    assert not (tmp_path / "killed" / "train_state" / "superseded").exists()
    resumed = _weights(tmp_path / "killed")
    for name in trained:
        torch.testing.assert_close(resumed[name], trained[name], rtol=0, atol=0, msg=name)


def test_a_checkpoint_from_another_init_does_not_resume(imported_release, phone_shards, phone_labels, tmp_path):
    labels, pitch = phone_labels
    run = tmp_path / "run"
    pretrain_stage.run(tiny(max_steps=3), run, phone_shards, labels, pitch)  # from random init
    pretrain_stage.run(tiny(max_steps=3, init=str(imported_release)), run, phone_shards, labels, pitch)
    aside = run / "train_state" / "superseded" / "checkpoints"
    assert aside.is_dir()  # the random-init run's checkpoints, set aside: this run started afresh
    other = tmp_path / "other"
    save_checkpoint(other, _randomized(build_encoder(model_config("tiny", "progre"))))
    pretrain_stage.run(tiny(max_steps=3, init=str(other)), run, phone_shards, labels, pitch)
    state = torch.load(next(aside.glob("step-*/state.pt")), weights_only=False)
    assert "init" in state["resume"]  # now the first init's checkpoints are the superseded ones


def test_an_init_of_another_size_or_kind_is_one_line(phone_shards, phone_labels, tmp_path):
    labels, pitch = phone_labels
    save_checkpoint(tmp_path / "hubert", build_encoder(model_config("tiny", "hubert")))
    with pytest.raises(UserError) as error:
        pretrain_stage.run(tiny(init=str(tmp_path / "hubert")), tmp_path / "run", phone_shards, labels, pitch)
    message = str(error.value)
    assert "\n" not in message and "is a different model" in message and "pitch_branch=False (expected True)" in message
    save_checkpoint(tmp_path / "wide", build_encoder(model_config("tiny", "progre", encoder_embed_dim=128)))
    with pytest.raises(UserError, match="encoder_embed_dim=128 \\(expected 256\\)"):
        pretrain_stage.run(tiny(init=str(tmp_path / "wide")), tmp_path / "run", phone_shards, labels, pitch)
    with pytest.raises(UserError, match="not found"):
        pretrain_stage.run(tiny(init=str(tmp_path / "missing")), tmp_path / "run", phone_shards, labels, pitch)


def test_the_init_brings_its_layer_norm_after_the_speaker_subtraction(tmp_path):
    """The release's Large has a LayerNorm after the speaker subtraction (`speaker_norm`), which no pretrain
    setting names: a run continued from it has one too."""
    from progre.train.run import init_weights

    save_checkpoint(tmp_path / "large-like", build_encoder(model_config("tiny", "progre", speaker_norm=True)))
    init, config = init_weights(str(tmp_path / "large-like"), model_config("tiny", "progre"))
    assert config.speaker_norm and "speaker_norm.weight" in init.state
    assert config.differences(model_config("tiny", "progre")) == {"speaker_norm": (True, False)}


def test_init_is_a_parameter_and_an_option():
    assert PretrainParams().init is None
    assert load_params(PretrainParams, overrides=["init=runs/base/model"]).init == "runs/base/model"
    result = CliRunner().invoke(app, ["pretrain", "--help"])
    assert "--init" in result.output
    result = CliRunner().invoke(app, ["params", "pretrain"])
    assert "init: str or null = None" in result.output
