"""progre pretrain: learning, exact resume, skipped non-finite steps, data plans and bad input."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from progre.cluster.labels import read_labels
from progre.config import PretrainParams
from progre.data.shards import Shards
from progre.errors import UserError
from progre.features.store import FeatureStore
from progre.train import batches as data_lib
from progre.train.loop import Trainer
from progre.train.schedule import learning_rate
from stages import pretrain as pretrain_stage

from .conftest import with_names_before_fairseq


def tiny(**overrides) -> PretrainParams:
    values = dict(size="tiny", max_steps=8, warmup_steps=2, lr=1e-3, batch_seconds=3.0, crop_min_seconds=0.3,
                  crop_max_seconds=2.0, bucket_size=8, log_every=2, valid_every=4, valid_batches=2,
                  checkpoint_every=3, keep_last=2, num_workers=0, seed=3)
    values.update(overrides)
    return PretrainParams(**values)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_learning_rate_schedule():
    kw = dict(peak=1.0, warmup_steps=10, max_steps=110, end=0.0, power=1.0)
    assert learning_rate(0, **kw) == pytest.approx(0.1)
    assert learning_rate(9, **kw) == pytest.approx(1.0)
    assert learning_rate(60, **kw) == pytest.approx(0.5)
    assert learning_rate(110, **kw) == 0.0


def test_masked_prediction_learns_on_the_tiny_corpus(phone_shards, phone_labels, tmp_path):
    labels, pitch = phone_labels
    summary = pretrain_stage.run(tiny(max_steps=40, log_every=5, valid_every=40, checkpoint_every=40),
                                 tmp_path / "run", phone_shards, labels, pitch)
    from progre.train.metrics_log import MetricsLog

    live = tmp_path / "run" / "train_state" / "dvclive"
    losses = MetricsLog.history(live, "train/loss_masked")
    assert [step for step, _ in losses] == list(range(5, 41, 5))
    last = MetricsLog.latest(live)
    assert last["train/loss_masked"] == losses[-1][1] < 0.85 * losses[0][1]
    counts = np.bincount(np.concatenate(list(read_labels(labels).labels.values())), minlength=8)
    majority = counts.max() / counts.sum()  # the best a model ignoring the audio could do
    assert last["train/acc_masked"] > majority + 0.05
    assert summary["steps"] == 40 and summary["bad_steps"] == 0
    assert (tmp_path / "run" / "curves.png").is_file() and (tmp_path / "run" / "metrics.json").is_file()
    assert list((tmp_path / "run" / "train_state" / "dvclive").rglob("*.tsv"))


def test_killed_run_resumed_with_the_same_command_equals_an_uninterrupted_run(phone_shards, phone_labels,
                                                                              tmp_path, monkeypatch):
    labels, pitch = phone_labels
    p = tiny()
    pretrain_stage.run(p, tmp_path / "straight", phone_shards, labels, pitch)

    real_step = Trainer.train_step

    def dies_at_update_5(self, batches):
        if self.step == 5:
            raise KeyboardInterrupt  # as if killed between checkpoints
        return real_step(self, batches)

    monkeypatch.setattr(Trainer, "train_step", dies_at_update_5)
    with pytest.raises(KeyboardInterrupt):
        pretrain_stage.run(p, tmp_path / "killed", phone_shards, labels, pitch)
    checkpoints = sorted(p.name for p in (tmp_path / "killed" / "train_state" / "checkpoints").iterdir())
    assert checkpoints == ["step-00000003"]
    monkeypatch.setattr(Trainer, "train_step", real_step)
    pretrain_stage.run(p, tmp_path / "killed", phone_shards, labels, pitch)  # the same command again

    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    kept = sorted(p.name for p in (tmp_path / "killed" / "train_state" / "checkpoints").iterdir())
    assert kept == ["step-00000006", "step-00000008"]  # keep_last=2


def test_non_finite_steps_are_skipped_counted_and_stop_when_persistent(phone_shards, phone_labels, tmp_path,
                                                                       monkeypatch):
    labels, pitch = phone_labels
    real_load = data_lib.PretrainData.load
    poisoned = {"count": 0}

    def load_with_nan(self, batch):
        out = real_load(self, batch)
        poisoned["count"] += 1
        if poisoned["count"] == 3:  # the third training micro-batch
            out["wav"][0, 100] = float("nan")
        return out

    monkeypatch.setattr(data_lib.PretrainData, "load", load_with_nan)
    summary = pretrain_stage.run(tiny(max_steps=5, valid_every=100, checkpoint_every=100), tmp_path / "r",
                                 phone_shards, labels, pitch)
    assert summary["bad_steps"] == 1 and summary["steps"] == 5
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "r").values())

    def always_nan(self, batch):
        out = real_load(self, batch)
        out["wav"][:] = float("nan")
        return out

    monkeypatch.setattr(data_lib.PretrainData, "load", always_nan)
    with pytest.raises(UserError, match="3 non-finite updates in a row"):
        pretrain_stage.run(tiny(max_bad_steps=3), tmp_path / "r2", phone_shards, labels, pitch)


def test_plans_are_deterministic_frame_aligned_and_within_budget(phone_shards, phone_labels):
    labels, pitch = phone_labels
    label_set = read_labels(labels)
    settings = data_lib.PlanSettings(batch_seconds=1.5, crop_min_seconds=0.3, crop_max_seconds=1.0, bucket_size=4)
    make = lambda seed: data_lib.PretrainData(Shards(phone_shards), "train", label_set,  # noqa: E731
                                              FeatureStore(pitch), None, settings, seed)
    data = make(0)
    plan = data.epoch_plan(0)
    assert sorted(i for b in plan for i in b.items) == list(range(len(data.items)))  # each utterance once
    for b in plan:
        assert b.crop * len(b.items) <= 1.5 * 16000 and b.crop <= 16000
        assert (b.crop - 400) % 320 == 0 and all(s % 320 == 0 for s in b.starts)
        assert all(s + b.crop <= data.items[i].num_samples for i, s in zip(b.items, b.starts))
    assert [vars(b) for b in make(0).epoch_plan(1)] == [vars(b) for b in data.epoch_plan(1)]
    assert [vars(b) for b in data.epoch_plan(1)] != [vars(b) for b in plan]

    batch = data.load(plan[0])
    i, start = plan[0].items[0], plan[0].starts[0]
    item = data.items[i]
    frames = (plan[0].crop - 400) // 320 + 1
    assert batch["labels"].shape == (len(plan[0].items), frames) == batch["pitch"].shape
    full = label_set.labels[item.key]  # 100 Hz: frame f of the crop takes label 2 * (start / 320 + f)
    expected = [full[2 * (start // 320 + f)] for f in range(frames)]
    assert batch["labels"][0].tolist() == [int(v) for v in expected]
    np.testing.assert_array_equal(batch["pitch"][0].numpy(),
                                  FeatureStore(pitch)[item.key][start // 320:start // 320 + frames, 0])


def test_ranks_split_the_micro_batch_sequence(phone_shards, phone_labels):
    labels, _ = phone_labels
    data = data_lib.PretrainData(Shards(phone_shards), "train", read_labels(labels), None, None,
                                 data_lib.PlanSettings(batch_seconds=1.0, crop_min_seconds=0.3, crop_max_seconds=1.0,
                                                       bucket_size=4), seed=1)
    single = [data.batch_at(k) for k in range(12)]
    per_rank = [data_lib.MicroBatches(data, 0, rank, 2) for rank in range(2)]
    streams = [iter(ds) for ds in per_rank]
    for j in range(6):
        for rank in range(2):
            assert next(streams[rank])["keys"] == data.load(single[2 * j + rank])["keys"]


def test_bad_inputs(phone_shards, phone_labels, tmp_path, monkeypatch):
    labels, pitch = phone_labels
    with pytest.raises(UserError, match="below the shortest usable utterance"):
        pretrain_stage.run(tiny(batch_seconds=0.2), tmp_path / "a", phone_shards, labels, pitch)
    with pytest.raises(UserError, match="needs --pitch"):
        pretrain_stage.run(tiny(), tmp_path / "b", phone_shards, labels, None)
    pretrain_stage.run(tiny(max_steps=2, checkpoint_every=1), tmp_path / "c", phone_shards, labels, pitch)
    # other settings (a sweep, another model size): the old run is kept aside and training starts afresh
    summary = pretrain_stage.run(tiny(max_steps=1, lr=2e-3, speaker_layer=3), tmp_path / "c", phone_shards,
                                 labels, pitch)
    assert summary["steps"] == 1
    aside = tmp_path / "c" / "train_state" / "superseded" / "checkpoints"
    assert sorted(p.name for p in aside.iterdir()) == ["step-00000001", "step-00000002"]
    pretrain_stage.run(tiny(max_steps=2, checkpoint_every=1), tmp_path / "c", phone_shards, labels, pitch)

    # a full disk while checkpointing: a one-line error, and the earlier checkpoint stays loadable
    import progre.train.checkpoint_store as ckpt

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(UserError, match="disk is full"):
        pretrain_stage.run(tiny(max_steps=4, checkpoint_every=1), tmp_path / "c", phone_shards, labels, pitch)
    monkeypatch.undo()
    names = sorted(p.name for p in (tmp_path / "c" / "train_state" / "checkpoints").iterdir())
    assert names == ["step-00000001", "step-00000002"]
    pretrain_stage.run(tiny(max_steps=4, checkpoint_every=1), tmp_path / "c", phone_shards, labels, pitch)


def test_labels_at_the_wrong_rate_or_with_missing_keys(phone_shards, phone_labels, tmp_path):
    import json

    import pyarrow.parquet as pq

    labels, pitch = phone_labels
    table = pq.read_table(labels / "labels.parquet")
    meta = json.loads(table.schema.metadata[b"progre"])
    (tmp_path / "wrong_rate").mkdir()
    pq.write_table(table.replace_schema_metadata({"progre": json.dumps(meta | {"label_rate": 50})}),
                   tmp_path / "wrong_rate" / "labels.parquet")
    with pytest.raises(UserError, match="do not match their labels"):
        pretrain_stage.run(tiny(), tmp_path / "r1", phone_shards, tmp_path / "wrong_rate", pitch)

    (tmp_path / "partial").mkdir()
    keep = [k != "utt00" for k in table.column("key").to_pylist()]
    import pyarrow as pa

    pq.write_table(table.filter(pa.array(keep)), tmp_path / "partial" / "labels.parquet")
    summary = pretrain_stage.run(tiny(max_steps=1), tmp_path / "r2", phone_shards, tmp_path / "partial", pitch)
    assert summary["skipped_no_labels"] == 1


def test_a_checkpoint_of_the_previous_format_resumes(phone_shards, phone_labels, tmp_path):
    """Upgrading mid-run keeps the run: state.pt files that stored every pretrain param ("recipe") beside
    a "compat" record (whose model config predates the fairseq names) resume, to the same weights as a
    run that was never interrupted."""
    labels, pitch = phone_labels
    pretrain_stage.run(tiny(max_steps=6), tmp_path / "straight", phone_shards, labels, pitch)
    pretrain_stage.run(tiny(max_steps=3), tmp_path / "old", phone_shards, labels, pitch)
    path = tmp_path / "old" / "train_state" / "checkpoints" / "step-00000003" / "state.pt"
    state = torch.load(path, weights_only=False)
    key = state.pop("resume")
    params = tiny(max_steps=3).to_dict()
    state["recipe"] = {k: v for k, v in params.items() if k not in {"log_every", "valid_every", "valid_batches",
                                                                      "checkpoint_every", "keep_last", "num_workers",
                                                                      "max_bad_steps", "max_steps"}}
    state["compat"] = {"model": with_names_before_fairseq(key["model_config"]), "num_labels": key["num_labels"],
                       "num_speakers": key["num_speakers"], "label_rate": key["label_rate"], "corpus": key["corpus"]}
    torch.save(state, path)
    summary = pretrain_stage.run(tiny(max_steps=6), tmp_path / "old", phone_shards, labels, pitch)
    assert summary["steps"] == 6 and not (tmp_path / "old" / "train_state" / "superseded").exists()
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "old")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_a_checkpoint_written_before_the_fairseq_names_resumes(phone_shards, phone_labels, tmp_path):
    """Renaming model-config fields to fairseq's options (ffn_dim -> encoder_ffn_embed_dim, ...) sets no
    running training aside: a checkpoint whose resume key and config.json hold the old names resumes,
    to the same weights as a run that was never interrupted."""
    import json

    labels, pitch = phone_labels
    pretrain_stage.run(tiny(max_steps=6), tmp_path / "straight", phone_shards, labels, pitch)
    pretrain_stage.run(tiny(max_steps=3), tmp_path / "old", phone_shards, labels, pitch)
    checkpoint = tmp_path / "old" / "train_state" / "checkpoints" / "step-00000003"
    state = torch.load(checkpoint / "state.pt", weights_only=False)
    state["resume"]["model_config"] = with_names_before_fairseq(state["resume"]["model_config"])
    assert "conv_grad_scale" in state["resume"]["model_config"]
    torch.save(state, checkpoint / "state.pt")
    meta = json.loads((checkpoint / "model" / "config.json").read_text())
    meta["model"] = with_names_before_fairseq(meta["model"])
    (checkpoint / "model" / "config.json").write_text(json.dumps(meta))
    summary = pretrain_stage.run(tiny(max_steps=6), tmp_path / "old", phone_shards, labels, pitch)
    assert summary["steps"] == 6 and not (tmp_path / "old" / "train_state" / "superseded").exists()
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "old")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_resume_compares_the_weight_changing_settings_only():
    from progre.train.loop import DEFAULTS, differing_settings

    saved = {"lr": 1e-3, "seed": 1, "unmasked_loss_weight": 0.0}
    assert differing_settings(saved, {"lr": 1e-3, "seed": 1}) == []
    assert differing_settings(saved, {"lr": 2e-3, "seed": 1}) == ["lr"]
    # a setting the checkpoint predates: unchanged while it keeps its default
    assert differing_settings({"lr": 1e-3}, {"lr": 1e-3, "speaker_loss_weight": DEFAULTS["speaker_loss_weight"]}) == []
    assert differing_settings({"lr": 1e-3}, {"lr": 1e-3, "speaker_loss_weight": 0.5}) == ["speaker_loss_weight"]
    assert differing_settings({}, {"corpus": "abc"}) == ["corpus"]  # no default: must be recorded


def test_layer_drop_is_the_size_presets_unless_set_and_a_change_supersedes_checkpoints():
    from progre.config import load_params
    from progre.train.loop import RunSpec, differing_settings
    from progre.train.run import ModelChoice

    # the base recipes differ, each as its release trains: ProgRE without layer drop, HuBERT Base with 0.05
    assert ModelChoice(model="progre", size="base").config().encoder_layerdrop == 0.0
    assert ModelChoice(model="hubert", size="base").config().encoder_layerdrop == 0.05
    # the equal setting is one override, for either model
    for model in ("progre", "hubert"):
        for value in ("0.05", "0"):
            p = load_params(PretrainParams, None, overrides=["size=base", f"model={model}", f"encoder_layerdrop={value}"])
            assert p.to(ModelChoice).config().encoder_layerdrop == float(value)
    with pytest.raises(UserError, match=r"pretrain: .*encoder_layerdrop must be in \[0, 1\), got 1.0"):
        ModelChoice(encoder_layerdrop=1.0).config()
    with pytest.raises(UserError, match="below the minimum"):
        load_params(PretrainParams, None, overrides=["encoder_layerdrop=-0.1"])
    # the layer drop is part of the model config the run spec holds: a changed one starts afresh
    specs = [RunSpec(ModelChoice(model="hubert", size="base", encoder_layerdrop=v).config(), 100, 0, 50, "c", [])
             for v in (None, 0.0)]
    assert differing_settings(specs[0].compatibility(), specs[1].compatibility()) == ["model_config"]


def test_a_broken_latest_checkpoint_is_set_aside_and_the_one_before_resumes(phone_shards, phone_labels, tmp_path,
                                                                            monkeypatch):
    labels, pitch = phone_labels
    p = tiny(max_steps=6, checkpoint_every=2, keep_last=2)
    pretrain_stage.run(p, tmp_path / "straight", phone_shards, labels, pitch)
    real_step = Trainer.train_step

    def dies_at_update_5(self, batches):
        if self.step == 5:
            raise KeyboardInterrupt
        return real_step(self, batches)

    monkeypatch.setattr(Trainer, "train_step", dies_at_update_5)
    with pytest.raises(KeyboardInterrupt):
        pretrain_stage.run(p, tmp_path / "killed", phone_shards, labels, pitch)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    checkpoints = tmp_path / "killed" / "train_state" / "checkpoints"
    state = checkpoints / "step-00000004" / "state.pt"
    state.write_bytes(state.read_bytes()[:len(state.read_bytes()) // 2])  # cut in half, as by a kill or a full disk
    leftover = checkpoints / ".step-00000006.x1y2.tmp"  # a checkpoint write that a kill -9 interrupted
    (leftover / "model").mkdir(parents=True)
    summary = pretrain_stage.run(p, tmp_path / "killed", phone_shards, labels, pitch)
    assert summary["steps"] == 6 and not leftover.exists()
    assert (tmp_path / "killed" / "train_state" / "broken" / "step-00000004" / "state.pt").is_file()
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    from progre.train.metrics_log import MetricsLog

    steps = [s for s, _ in MetricsLog.history(tmp_path / "killed" / "train_state" / "dvclive", "train/loss_masked")]
    assert steps == sorted(set(steps))  # steps 3-4 were logged before the kill and not again
