"""`progre evaluate` and `progre report` end to end on the tiny synthetic corpus (few epochs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import numpy as np
import pytest
import soundfile as sf
import torch

from progre.config import EvaluateParams, ReportParams, ShardParams, SynthParams
from stages import synth as synth_stage
from progre.errors import UserError
from progre.model import build_encoder, model_config, save_checkpoint
from stages import evaluate, report
from stages import shard as shard_stage

TASKS = ("sid", "pr", "asr", "er", "se", "vc")
FAST = {"max_epochs": 2, "patience": 2, "batch_size": 4, "asr_hidden": 8, "asr_layers": 1, "head_seeds": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The tiny eSpeak corpus (4 speakers x 4 utterances, 4 styles, phones, text), sharded, and a
    tiny ProgRE checkpoint with random weights."""
    base = tmp_path_factory.mktemp("evaluate")
    synth_stage.run(SynthParams(preset="tiny"), base / "corpus")
    shard_stage.run(ShardParams(workers=1), base / "corpus", base / "shards")
    torch.manual_seed(0)
    save_checkpoint(base / "progre", build_encoder(model_config("tiny", "progre")))
    return {"base": base, "shards": base / "shards", "checkpoint": base / "progre", "cache": base / "cache"}


@pytest.fixture(scope="module")
def progre_eval(tiny) -> Path:
    out = tiny["base"] / "eval-progre"
    evaluate.run(EvaluateParams(**FAST), upstream=str(tiny["checkpoint"]), out=out, shards=tiny["shards"],
                 cache=tiny["cache"])
    return out


def _shards_with_index(tiny, name: str, change) -> Path:
    """A copy of the tiny shards whose index rows went through `change` (same keys: same fingerprint)."""
    folder = tiny["base"] / name
    shutil.copytree(tiny["shards"], folder)
    table = pq.read_table(folder / "index.parquet")
    rows = [change(dict(r)) for r in table.to_pylist()]
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), folder / "index.parquet")
    return folder


def test_evaluate_writes_every_output_of_every_task(progre_eval):
    names = ["pitch", "layer1", "speaker", "layer2-speaker", "layer3", "layer4"]
    summary = json.loads((progre_eval / "summary.json").read_text())
    assert summary["upstream"] == "progre" and summary["state_names"] == names
    for task in TASKS:
        folder = progre_eval / task
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["task"] == task and metrics["upstream"] == "progre"
        assert metrics["num_states"] == 6 and metrics["state_names"] == names
        runs = metrics["runs"]
        assert [r["seed"] for r in runs] == metrics["head_seeds"] == [1234, 1235]
        assert all(1 <= r["best_epoch"] <= r["epochs"] <= 2 and r["lr"] == metrics["lr"] for r in runs)
        scores = [r["test_metrics"][metrics["metric"]] for r in runs]
        assert metrics["test"] == pytest.approx(np.mean(scores)) and metrics["test_std"] == pytest.approx(np.std(scores))
        assert metrics["test"] >= 0 and np.isfinite(metrics["valid"]) and metrics["protocol"] == "demo"
        # SE and VC read the clean test utterances (VC: of the speakers other than the target); half are noisy
        assert metrics["utterances"]["test"] == 4 if task not in ("se", "vc") else 1 <= metrics["utterances"]["test"] < 4
        assert summary["tasks"][task]["test"] == metrics["test"]
        # only the tasks that make audio record examples and a reference row
        assert {"examples", "reference"} & set(metrics) == ({"examples", "reference"} if task in ("se", "vc") else set())
        weights = json.loads((folder / "layer_weights.json").read_text())["layer_weights"]
        assert [w["state"] for w in weights] == names
        assert sum(w["weight"] for w in weights) == pytest.approx(1.0)
        assert (folder / "layer_weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        history = json.loads((folder / "history.json").read_text())["seeds"]
        assert [len(history[str(r["seed"])]) for r in runs] == [r["epochs"] for r in runs]  # a validation per epoch
    assert set(json.loads((progre_eval / "asr" / "metrics.json").read_text())["test_metrics"]) == {"wer", "cer"}
    assert json.loads((progre_eval / "sid" / "metrics.json").read_text())["classes"] == 4
    se = json.loads((progre_eval / "se" / "metrics.json").read_text())
    assert {"pesq", "stoi", "si_sdri"} <= set(se["test_metrics"]) and se["reference"]["si_sdri"] == 0.0
    assert 1.0 <= se["reference"]["pesq"] <= 4.7 and 0.0 <= se["reference"]["stoi"] <= 1.0
    for example in se["examples"]:
        for role in ("input", "output", "reference"):
            assert sf.info(progre_eval / "se" / "examples" / example[role]).samplerate == 16000
    vc = json.loads((progre_eval / "vc" / "metrics.json").read_text())
    assert {"mcd", "sim", "cer"} <= set(vc["test_metrics"]) and {"mcd", "sim", "cer"} <= set(vc["reference"])
    assert vc["metric"] == "mcd" and vc["test"] > 0 and 0.0 <= vc["test_metrics"]["sim"] <= 1.0


def test_hidden_states_are_cached_and_reruns_are_deterministic_with_any_worker_count(tiny, progre_eval, monkeypatch):
    import progre.downstream.conversion as conversion
    import progre.downstream.upstreams as upstreams

    entries = sorted(p.name for p in tiny["cache"].iterdir() if not p.name.startswith("."))
    assert [e.rsplit("-", 1)[0] for e in entries if e.startswith("checkpoint-")] == ["checkpoint", "checkpoint-noisy"]

    def no_extraction(*args, **kwargs):
        raise AssertionError("hidden states were recomputed instead of read from the cache")

    monkeypatch.setattr(upstreams, "build_extractor", no_extraction)
    monkeypatch.setattr(conversion, "analyse", no_extraction)  # VC's WORLD analyses and reference row are cached
    out = tiny["base"] / "eval-progre-again"
    # the first run fitted in two worker processes, this one fits in this process
    evaluate.run(EvaluateParams(**FAST, tasks=["sid", "pr", "asr", "vc"], workers=1), upstream=str(tiny["checkpoint"]),
                 out=out, shards=tiny["shards"], cache=tiny["cache"])
    assert sorted(p.name for p in tiny["cache"].iterdir() if not p.name.startswith(".")) == entries
    for task in ("sid", "pr", "asr", "vc"):
        first, again = (json.loads((folder / task / "metrics.json").read_text()) for folder in (progre_eval, out))
        assert again["test_metrics"] == first["test_metrics"] and again["valid_metrics"] == first["valid_metrics"]
        assert (json.loads((out / task / "layer_weights.json").read_text()) ==
                json.loads((progre_eval / task / "layer_weights.json").read_text()))


def test_every_task_can_be_handed_to_a_spawned_fit_worker(tiny):
    """On CUDA the fits run in spawned workers, which receive the tasks pickled (no closures in them)."""
    from multiprocessing.reduction import ForkingPickler

    from progre.data.shards import Shards
    from progre.downstream.evaluation import EvaluationSettings
    from progre.downstream.registry import build_task

    options = EvaluationSettings(**FAST).task_options(Shards(tiny["shards"]), tiny["cache"], torch.device("cpu"))
    for name in TASKS:
        task = build_task(name, options)
        again = ForkingPickler.loads(ForkingPickler.dumps(task))
        assert type(again) is type(task) and again.name == task.name


def test_spawned_fit_workers_give_the_metrics_of_forked_ones(tiny, progre_eval, monkeypatch):
    """The CUDA route (spawned workers, `pool.START_METHODS`) taken on the CPU: every task's data, head and
    scorer handed over pickled give what the forked workers of `progre_eval` found."""
    from progre.downstream import pool

    monkeypatch.setitem(pool.START_METHODS, "cpu", "spawn")
    out = tiny["base"] / "eval-progre-spawned"
    evaluate.run(EvaluateParams(**FAST), upstream=str(tiny["checkpoint"]), out=out, shards=tiny["shards"],
                 cache=tiny["cache"])
    for task in TASKS:
        first, again = (json.loads((folder / task / "metrics.json").read_text()) for folder in (progre_eval, out))
        assert again["test_metrics"] == first["test_metrics"] and again["valid_metrics"] == first["valid_metrics"]
        assert again.get("examples") == first.get("examples")
        assert (json.loads((out / task / "layer_weights.json").read_text()) ==
                json.loads((progre_eval / task / "layer_weights.json").read_text()))


def test_random_init_and_mfcc_upstreams_and_the_report(tiny, progre_eval):
    random_out, mfcc_out = tiny["base"] / "eval-random", tiny["base"] / "eval-mfcc"
    evaluate.run(EvaluateParams(**FAST, tasks=["sid"]), upstream=f"random:{tiny['checkpoint']}", out=random_out,
                 shards=tiny["shards"], cache=tiny["cache"])
    evaluate.run(EvaluateParams(**FAST, tasks=["sid", "pr"]), upstream="mfcc", out=mfcc_out, shards=tiny["shards"],
                 cache=tiny["cache"])
    assert json.loads((random_out / "sid" / "metrics.json").read_text())["upstream"] == "random-progre"
    assert json.loads((mfcc_out / "pr" / "metrics.json").read_text())["state_names"] == ["mfcc"]
    assert json.loads((mfcc_out / "pr" / "metrics.json").read_text())["frame_rate"] == 100
    kinds = {p.name.split("-")[0] for p in tiny["cache"].iterdir() if not p.name.startswith(".")}
    # the VC judges are MFCC heads, cached too, and so are VC's WORLD analyses and reference row
    assert kinds == {"checkpoint", "mfcc", "random", "judges", "vc"}
    assert sorted(p.name.split("-")[1] for p in tiny["cache"].glob("vc-*")) == ["reference", "world"]

    result = report.run(ReportParams(title="Tiny"), results=[progre_eval, mfcc_out, random_out],
                        out=tiny["base"] / "reports")
    md = tiny["base"] / "reports" / "report.md"
    text = md.read_text()
    assert result["upstreams"] == ["progre", "mfcc", "random-progre"]
    header = next(line for line in text.splitlines() if line.startswith("| upstream"))
    for column in ("SID acc ↑", "PR PER ↓", "ASR WER ↓", "ASR CER ↓", "ER acc ↑", "SE PESQ ↑", "SE STOI ↑",
                   "SE SI-SDRi dB ↑", "VC MCD dB ↓", "VC SIM ↑", "VC CER ↓"):
        assert column in header
    assert "| *noisy input (no enhancement)* |" in text and "| *source, WORLD resynthesis (no conversion)* |" in text
    assert "## Audio examples" in text and (tiny["base"] / "reports" / "report-se-spectrograms.png").is_file()
    assert list((tiny["base"] / "reports" / "audio" / "vc").glob("*-progre.flac"))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"progre", "mfcc", "random-progre"}
    sid = json.loads((progre_eval / "sid" / "metrics.json").read_text())["test"]
    assert f"{100 * sid:.1f} ± " in rows["progre"]  # mean ± std over the head seeds
    assert "–" in rows["mfcc"]  # mfcc ran no ASR
    for task in TASKS:
        image = md.with_name(f"report-{task}-layer-weights.png")
        assert image.is_file() and f"]({image.name})" in text
    assert "## How to read this" in text
    assert "mfcc has a single hidden state" in text  # one state: its weight is 1, no panel


def test_report_merges_one_task_folders_of_an_upstream(tiny, progre_eval):
    parts = []
    for task in ("sid", "er"):  # the layout of a DVC matrix: one evaluation folder per upstream and task
        folder = tiny["base"] / f"matrix-progre-{task}"
        shutil.copytree(progre_eval / task, folder / task)
        parts.append(folder)
    parts.append(progre_eval / "pr")  # a task folder given directly
    out = tiny["base"] / "merged"
    result = report.run(ReportParams(), results=parts, out=out)
    assert result["upstreams"] == ["progre"] and result["tasks"] == ["sid", "pr", "er"]
    with pytest.raises(UserError, match="two sid results"):
        report.run(ReportParams(), results=[progre_eval, parts[0]], out=out, overwrite=True)
    with pytest.raises(UserError, match="not found"):
        report.run(ReportParams(), results=[tiny["base"] / "nowhere"], out=out, overwrite=True)


def test_a_task_without_labels_is_skipped_and_the_others_run(tiny):
    shards = _shards_with_index(tiny, "shards-no-style", lambda r: {**r, "style": None})
    out = tiny["base"] / "eval-no-style"
    summary = evaluate.run(EvaluateParams(**FAST, tasks=["sid", "er"]), upstream="mfcc", out=out, shards=shards,
                           cache=tiny["cache"])
    er = json.loads((out / "er" / "metrics.json").read_text())
    assert er["status"] == "skipped" and "no style labels" in er["reason"]
    assert not (out / "er" / "layer_weights.png").exists()
    assert summary["tasks"]["sid"]["status"] == "ok" and summary["tasks"]["er"]["status"] == "skipped"
    report.run(ReportParams(), results=[out], out=tiny["base"] / "no-style-report")
    assert "skipped" in (tiny["base"] / "no-style-report" / "report.md").read_text()


def test_a_split_without_utterances_leaves_nothing_to_run(tiny):
    shards = _shards_with_index(tiny, "shards-no-valid", lambda r: {**r, "split": "train" if r["split"] == "valid"
                                                                      else r["split"]})
    with pytest.raises(UserError, match="nothing to evaluate.*no usable utterances in the valid split"):
        evaluate.run(EvaluateParams(**FAST, tasks=["sid", "er"]), upstream="mfcc", out=tiny["base"] / "eval-no-valid",
                     shards=shards, cache=tiny["cache"])
    assert not (tiny["base"] / "eval-no-valid").exists()


def test_a_checkpoint_that_does_not_load_is_a_user_error(tiny, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(tiny["checkpoint"] / "config.json", broken / "config.json")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    params = EvaluateParams(**FAST, tasks=["sid"])
    for upstream, message in ((str(broken), "cannot read model.safetensors"),
                              (str(tmp_path / "missing"), "not found"),
                              (f"random:{tmp_path / 'missing'}", "not found")):
        with pytest.raises(UserError, match=message) as info:
            evaluate.run(params, upstream=upstream, out=tmp_path / "out", shards=tiny["shards"],
                         cache=tmp_path / "cache")
        assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()
