"""2-process gloo DDP under torchrun gives the weights of one process accumulating the same micro-batches.

Rank r takes micro-batches r, r + 2, ... of the same plan, so 2 ranks x 1 micro-batch per update
see exactly what 1 process sees with grad_accum=2, with the same dropout and masks (seeded per
micro-batch). BatchNorm in the pitch branch normalises each micro-batch by its own statistics in
both set-ups (no SyncBatchNorm: statistics are per process). Only the order of float additions
in the all-reduce differs, hence the tolerance of 1e-5.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SETTINGS = ["size=tiny", "max_steps=4", "warmup_steps=1", "lr=1e-3", "batch_seconds=3.0", "crop_min_seconds=0.3",
            "crop_max_seconds=2.0", "bucket_size=8", "log_every=2", "valid_every=4", "valid_batches=2",
            "checkpoint_every=4", "num_workers=0", "seed=5"]


def pretrain_command(out: Path, shards: Path, labels: Path, pitch: Path, extra: list[str]) -> list[str]:
    args = ["-m", "progre.cli", "--quiet", "pretrain", "--out", str(out), "--shards", str(shards),
            "--labels", str(labels), "--pitch", str(pitch)]
    for setting in SETTINGS + extra:
        args += ["--set", setting]
    return args


@pytest.mark.slow
def test_two_rank_gloo_ddp_matches_one_process_with_the_same_global_batch(phone_shards, phone_labels, tmp_path):
    labels, pitch = phone_labels
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable] + pretrain_command(tmp_path / "single", phone_shards, labels, pitch,
                                                                ["grad_accum=2"]),
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
                         + pretrain_command(tmp_path / "ddp", phone_shards, labels, pitch, ["grad_accum=1"]),
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    a = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    params = [name for name in a if "running_" not in name and "num_batches" not in name]
    moved = 0
    for name in params:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)
        moved += 1
    assert moved > 50
