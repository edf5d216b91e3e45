"""Every stage's GPU path on tiny data: MFCC, FAISS k-means, layer features, bf16 pretraining with
kill and resume, a downstream task. Marked `cuda`; skipped, with the reason, without a CUDA GPU.
`make gpu-check` runs them (`pytest -m cuda`) and records the outcome in bench/results/gpu.json.

Tolerances, and why:

- MFCC on GPU vs CPU: at most 1e-4 absolute (float32 FFT and mel products; matmuls stay float32,
  torch does not use TF32 for them by default).
- FAISS k-means on GPU vs CPU from the same seed: objective within 1% (the GPU's distance kernels
  round differently, so the iterations can part ways).
- Layer features: GPU float32 vs CPU float32 within 1% relative L2 (cuDNN convolutions use TF32 by
  default); GPU bf16 vs CPU float32 within `BF16_LAYER_RTOL` (5%).
- Pretraining: CUDA kernels that accumulate with atomics (index backward, attention backward) can
  make two identical runs differ. With deterministic algorithms on (a subprocess:
  CUBLAS_WORKSPACE_CONFIG must be set before CUDA starts) a killed-and-resumed run must equal the
  uninterrupted one bit for bit; in the default (fast) mode it may differ from it by at most 10x
  what a second uninterrupted run differs by, and both by little.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from progre.config import ClusterParams, EvaluateParams, FeaturesParams
from progre.data.shards import Shards

from .conftest import BF16_LAYER_RTOL

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU: torch sees none (`make gpu-check` runs these on one)"),
]


def faiss_gpus() -> int:
    from progre.cluster.kmeans import faiss_gpus as count

    return count()


def why_no_faiss_gpu() -> str | None:
    """Why FAISS cannot run on the GPU here, or None when it can. Never raises: it decides a skip while
    the tests are collected, and collection must not fail (an offline node brings faiss-cpu, since no
    faiss-gpu build runs on its CUDA 13; see bench/gpu-wheels.txt)."""
    try:
        from progre.cluster.kmeans import faiss_installation

        faiss = faiss_installation()
    except Exception as exc:  # FAISS not installed, or broken
        return f"FAISS is not usable: {type(exc).__name__}: {exc}"
    if faiss["build"] != "gpu":
        return (f"FAISS has no GPU build ({', '.join(faiss['packages']) or 'faiss ' + faiss['version']}): "
                "the GPU k-means runs where faiss-gpu is installed (`make venv-gpu`, CUDA 12)")
    if faiss["gpus"] == 0:
        return "FAISS for GPU sees no GPU"
    return None


# --------------------------------------------------------------------------- MFCC


def test_mfcc_on_gpu_equals_cpu(phone_shards):
    from progre.features.mfcc_features import MfccComputer
    from progre.dsp.mfcc import mfcc_batch
    from progre.dsp.padding import pad_batch

    utts = sorted(Shards(phone_shards).stream(), key=lambda u: u.key)
    cpu = MfccComputer(torch.device("cpu"))(utts)
    gpu = MfccComputer(torch.device("cuda"))(utts)
    for a, b in zip(cpu, gpu):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)
    # a longer batch than the CPU's cache-sized chunks, with padding
    rng = np.random.default_rng(0)
    wavs = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000 * 30, 16000 * 7 + 123, 401)]
    x, lengths = pad_batch(wavs)
    a, frames_a = mfcc_batch(x, lengths)
    b, frames_b = mfcc_batch(x.cuda(), lengths.cuda())
    assert frames_a.tolist() == frames_b.cpu().tolist()
    torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- FAISS


NO_FAISS_GPU = why_no_faiss_gpu() if torch.cuda.is_available() else None  # (without CUDA all of these skip)


@pytest.mark.skipif(NO_FAISS_GPU is not None, reason=str(NO_FAISS_GPU))
def test_faiss_gpu_kmeans_objective_within_one_percent_of_cpu():
    from progre.cluster.kmeans import KMeansModel, faiss_installation, fit_kmeans

    assert faiss_installation()["build"] == "gpu"
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((64, 32)).astype(np.float32) * 3
    x = centres[rng.integers(0, 64, 40000)] + rng.standard_normal((40000, 32)).astype(np.float32)
    settings = dict(niter=25, nredo=1, init="kmeans++", seed=1234, max_points_per_centroid=None)
    cpu_centroids, cpu_objective = fit_kmeans(x, 64, gpu=False, **settings)
    gpu_centroids, gpu_objective = fit_kmeans(x, 64, gpu=True, **settings)
    assert abs(gpu_objective / cpu_objective - 1) <= 0.01
    # assignment on the GPU index equals the CPU's (up to exact ties)
    cpu_labels, _ = KMeansModel(gpu_centroids).assign(x)
    gpu_labels, _ = KMeansModel(gpu_centroids, gpu=True).assign(x)
    assert np.mean(cpu_labels == gpu_labels) >= 0.999


def test_cluster_stage_on_gpu_records_what_it_used(phone_shards, tmp_path):
    from stages import cluster as cluster_stage
    from stages import mfcc as mfcc_stage

    mfcc_stage.run(FeaturesParams(sample_fraction=1.0, device="cuda"), phone_shards, tmp_path / "mfcc")
    metrics = cluster_stage.run(ClusterParams(n_clusters=8, niter=20), tmp_path / "mfcc", phone_shards, tmp_path / "k")
    assert metrics["kmeans_device"] == ("cuda" if faiss_gpus() else "cpu")
    assert metrics["faiss_build"] == ("gpu" if faiss_gpus() else metrics["faiss_build"])
    assert metrics["pnmi"] > 0.3


# --------------------------------------------------------------------------- layer features


def test_layer_features_on_gpu_in_fp32_and_bf16(phone_shards, tmp_path):
    from progre.features.layer_features import LayerComputer
    from progre.model import build_encoder, model_config, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "progre", build_encoder(model_config("tiny", "progre")))
    utts = sorted(Shards(phone_shards).stream("train"), key=lambda u: u.key)
    reference = LayerComputer(tmp_path / "progre", 3, torch.device("cpu"))(utts)
    fp32 = LayerComputer(tmp_path / "progre", 3, torch.device("cuda"), precision="fp32")
    bf16 = LayerComputer(tmp_path / "progre", 3, torch.device("cuda"))  # auto: bf16 on CUDA
    assert bf16.describe()["precision"] == "bf16"
    for ref, a, b in zip(reference, fp32(utts), bf16(utts)):
        assert ref.shape == a.shape == b.shape and b.dtype == np.float32
        assert np.linalg.norm(a - ref) / np.linalg.norm(ref) <= 0.01
        assert np.linalg.norm(b - ref) / np.linalg.norm(ref) <= BF16_LAYER_RTOL


# --------------------------------------------------------------------------- pretraining


RESUME_SCRIPT = r"""
import json, sys, torch
from pathlib import Path
from safetensors.torch import load_file
from progre.config import PretrainParams
from progre.log import setup_logging
from progre.train.loop import Trainer
from stages import pretrain as pretrain_stage

setup_logging(quiet=True)
deterministic = sys.argv[1] == "deterministic"
if deterministic:
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
shards, labels, pitch, out = (Path(a) for a in sys.argv[2:6])
params = PretrainParams(**json.loads(sys.argv[6]))
kill_at = int(sys.argv[7])
if kill_at:
    real_step = Trainer.train_step

    def dies(self, batches):
        if self.step == kill_at:
            raise KeyboardInterrupt
        return real_step(self, batches)

    Trainer.train_step = dies
    try:
        pretrain_stage.run(params, out, shards, labels, pitch)
    except KeyboardInterrupt:
        pass
    Trainer.train_step = real_step
pretrain_stage.run(params, out, shards, labels, pitch)
"""

TINY_RUN = dict(model="progre", size="tiny", max_steps=20, warmup_steps=4, lr=1e-3, batch_seconds=3.0,
                crop_min_seconds=0.3, crop_max_seconds=2.0, bucket_size=8, log_every=2, valid_every=10,
                valid_batches=2, checkpoint_every=5, keep_last=2, num_workers=1, seed=3, precision="bf16")


def _train(phone_shards, phone_labels, out: Path, mode: str, kill_at: int = 0) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    labels, pitch = phone_labels
    # the repository first, then the caller's PYTHONPATH (the offline route's brought packages live there)
    path = os.pathsep.join([str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8", PYTHONPATH=path)
    result = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, mode, str(phone_shards), str(labels), str(pitch),
                             str(out), json.dumps(TINY_RUN), str(kill_at)],
                            cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["bad_steps"] == 0
    return load_file(str(out / "model" / "model.safetensors"))


def _largest_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).norm() / a[k].float().norm().clamp_min(1e-12)) for k in a)


def test_bf16_pretraining_killed_and_resumed_equals_uninterrupted_in_deterministic_mode(phone_shards, phone_labels,
                                                                                      tmp_path):
    straight = _train(phone_shards, phone_labels, tmp_path / "straight", "deterministic")
    resumed = _train(phone_shards, phone_labels, tmp_path / "killed", "deterministic", kill_at=12)
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0, msg=name)


def test_bf16_pretraining_resume_adds_no_more_difference_than_gpu_nondeterminism(phone_shards, phone_labels, tmp_path):
    first = _train(phone_shards, phone_labels, tmp_path / "a", "default")
    second = _train(phone_shards, phone_labels, tmp_path / "b", "default")
    resumed = _train(phone_shards, phone_labels, tmp_path / "killed", "default", kill_at=12)
    run_to_run = _largest_relative_difference(first, second)
    resume = _largest_relative_difference(first, resumed)
    print(f"largest relative weight difference after 20 bf16 updates: run to run {run_to_run:.2e}, "
          f"resumed vs uninterrupted {resume:.2e}")
    assert run_to_run <= 0.05  # the GPU's non-determinism stays small over 20 updates
    assert resume <= 10 * run_to_run  # (0 when the kernels happened to be deterministic: then bit for bit)


# --------------------------------------------------------------------------- evaluation


def test_a_downstream_task_on_gpu(phone_shards, tmp_path):
    from progre.model import build_encoder, model_config, save_checkpoint
    from stages import evaluate

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "progre", build_encoder(model_config("tiny", "progre")))
    evaluate.run(EvaluateParams(tasks=["sid"], max_epochs=3, patience=3, batch_size=4, device="cuda"),
                 upstream=str(tmp_path / "progre"), out=tmp_path / "eval", shards=phone_shards, cache=tmp_path / "cache")
    metrics = json.loads((tmp_path / "eval" / "sid" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["test"] >= 0 and all(1 <= r["epochs"] <= 3 for r in metrics["runs"])
