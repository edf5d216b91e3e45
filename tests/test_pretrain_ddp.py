"""2-process gloo DDP, under torchrun or started by `progre pretrain` itself (`nproc_per_node: 2`, the DVC
stage's route), gives the weights of one process accumulating the same micro-batches; ranks that do not
share the run folder, or wait for a rank that never answers, stop with one line.

Rank r takes micro-batches r, r + 2, ... of the same plan, so 2 ranks x 1 micro-batch per update
see exactly what 1 process sees with grad_accum=2, with the same dropout and masks (seeded per
micro-batch). BatchNorm in the pitch branch normalises each micro-batch by its own statistics in
both set-ups (no SyncBatchNorm: statistics are per process). Only the order of float additions
in the all-reduce differs, hence the tolerance of 1e-5.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SETTINGS = ["size=tiny", "max_steps=4", "warmup_steps=1", "lr=1e-3", "batch_seconds=3.0", "crop_min_seconds=0.3",
            "crop_max_seconds=2.0", "bucket_size=8", "log_every=2", "valid_every=4", "valid_batches=2",
            "checkpoint_every=4", "num_workers=0", "seed=5"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def pretrain_command(out: Path, shards: Path, labels: Path, pitch: Path, extra: list[str]) -> list[str]:
    args = ["-m", "progre.cli", "--quiet", "pretrain", "--out", str(out), "--shards", str(shards),
            "--labels", str(labels), "--pitch", str(pitch)]
    for setting in SETTINGS + extra:
        args += ["--set", setting]
    return args


@pytest.fixture(scope="module")
def single(phone_shards, phone_labels, tmp_path_factory) -> Path:
    """A run of one process with 2-fold gradient accumulation."""
    labels, pitch = phone_labels
    out = tmp_path_factory.mktemp("ddp") / "single"
    run = subprocess.run([sys.executable] + pretrain_command(out, phone_shards, labels, pitch, ["grad_accum=2"]),
                         cwd=out.parent, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return out


def assert_same_weights(ddp: Path, single: Path) -> None:
    a = load_file(str(single / "model" / "model.safetensors"))
    b = load_file(str(ddp / "model" / "model.safetensors"))
    params = [name for name in a if "running_" not in name and "num_batches" not in name]
    moved = 0
    for name in params:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)
        moved += 1
    assert moved > 50


@pytest.mark.slow
def test_two_rank_gloo_ddp_matches_one_process_with_the_same_global_batch(single, phone_shards, phone_labels,
                                                                          tmp_path):
    labels, pitch = phone_labels
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
                         + pretrain_command(tmp_path / "ddp", phone_shards, labels, pitch, ["grad_accum=1"]),
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert_same_weights(tmp_path / "ddp", single)


@pytest.mark.slow
def test_nproc_per_node_2_launches_two_ranks_from_the_stage_command(single, phone_shards, phone_labels, tmp_path):
    """`progre pretrain` as dvc.yaml runs it (one process), with pretrain.nproc_per_node: 2 in params.yaml:
    it starts its two gloo ranks itself, and they train what torchrun's do."""
    labels, pitch = phone_labels
    (tmp_path / "params.yaml").write_text("pretrain:\n  nproc_per_node: 2\n  grad_accum: 1\n")
    env = {k: v for k, v in ENV.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    run = subprocess.run([sys.executable] + pretrain_command(tmp_path / "run", phone_shards, labels, pitch, []),
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert_same_weights(tmp_path / "run", single)
    # the run folder holds what one process writes (rank 0 alone writes), and no rank token is left behind
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".progre-output", "curves.png", "metrics.json",
                                                                    "model", "train_state"]


def test_nproc_per_node_says_how_many_processes_the_command_starts(monkeypatch):
    from progre.config import PretrainParams, load_params
    from progre.errors import UserError
    from progre.train.launch import processes_to_start
    from progre.train.loop import DEFAULTS

    assert load_params(PretrainParams, None, overrides=["nproc_per_node=4"]).nproc_per_node == "4"
    for bad in ("0", "many"):
        with pytest.raises(UserError, match=rf"--set nproc_per_node: expected a number of processes \(1 or more\) "
                                            rf"or auto, got '{bad}'"):
            load_params(PretrainParams, None, overrides=[f"nproc_per_node={bad}"])
    assert not {"nproc_per_node", "dist_timeout_minutes"} & set(DEFAULTS)  # not in the resume key
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert processes_to_start("auto") == 1 and processes_to_start("3") == 3  # no GPU: gloo processes
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert processes_to_start("auto") == 2 and processes_to_start("1") == 1
    with pytest.raises(UserError, match="nproc_per_node is 4, but this node shows 2 GPUs"):
        processes_to_start("4")
    monkeypatch.setenv("WORLD_SIZE", "16")  # a rank that torchrun started (several nodes): it trains itself
    assert processes_to_start("auto") == 1 and processes_to_start("4") == 1


def test_a_rank_error_ends_the_launch_with_its_one_line(tmp_path):
    """Both ranks that `progre pretrain` starts stop on a user error: the user sees one line, not two nor
    the launcher's report."""
    missing = tmp_path / "no-labels"
    env = {k: v for k, v in ENV.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    run = subprocess.run([sys.executable, "-m", "progre.cli", "pretrain", "--out", str(tmp_path / "run"), "--labels",
                          str(missing), "--shards", str(tmp_path), "--set", "nproc_per_node=2"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert run.returncode == 2, "\n".join(lines)
    assert len(lines) == 1 and lines[0].startswith("error: rank 0 of 2: ") and str(tmp_path) in lines[0], lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rank(rank: int, port: int, args: list[str], cwd: Path) -> subprocess.Popen:
    """Rank `rank` of 2, joining the process group as torchrun's ranks do (env://), on its own."""
    env = dict(ENV, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def error_lines(process: subprocess.Popen) -> list[str]:
    _, stderr = process.communicate(timeout=300)
    return [line for line in stderr.splitlines() if line.strip()]


def test_ranks_given_different_run_folders_all_stop_with_one_line(phone_shards, phone_labels, tmp_path):
    """As if each node's --out were a folder of its own disk: rank 1 cannot see rank 0's token (nor its
    checkpoints), so every rank stops before training, naming the folder, instead of diverging."""
    labels, pitch = phone_labels
    port = free_port()
    ranks = [start_rank(r, port, pretrain_command(tmp_path / f"node{r}", phone_shards, labels, pitch,
                                                  ["dist_timeout_minutes=0.1"]), tmp_path) for r in (0, 1)]
    for rank, process in enumerate(ranks):
        lines = error_lines(process)
        assert process.returncode == 2, lines
        assert len(lines) == 1, lines
        assert "rank 1 does not see the run folder of rank 0" in lines[0] and str(tmp_path / "node0") in lines[0]
        assert str(tmp_path / "node1") in lines[0] and "storage that all nodes share" in lines[0]
    assert not (tmp_path / "node0" / "train_state" / "checkpoints").exists()  # nothing was trained


def test_a_rank_that_never_joins_a_collective_ends_the_run_with_one_line(phone_shards, phone_labels, tmp_path):
    """Rank 1 joins the process group and then never answers (a stalled or dead node): rank 0's first
    collective gives up after pretrain.dist_timeout_minutes instead of hanging."""
    labels, pitch = phone_labels
    port = free_port()
    rank0 = start_rank(0, port, pretrain_command(tmp_path / "run", phone_shards, labels, pitch,
                                                 ["dist_timeout_minutes=0.05"]), tmp_path)
    rank1 = start_rank(1, port, ["-c", "import time\nfrom progre.train.distributed import init_distributed\n"
                                       "init_distributed(timeout_minutes=0.05)\ntime.sleep(600)"], tmp_path)
    try:
        lines = error_lines(rank0)
    finally:
        rank1.kill()
        rank1.communicate()
    assert rank0.returncode == 2, "\n".join(lines)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: rank 0 of 2: the other ranks did not answer")
    assert "pretrain.dist_timeout_minutes (0.05)" in lines[0]
