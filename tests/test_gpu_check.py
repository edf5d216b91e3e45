"""`make gpu-check`'s script runs end to end: its CPU dry run (tiny sizes, a few seconds) in CI; and its
CUDA tests collect on a GPU node whose FAISS has no GPU build (or that has no FAISS), the FAISS GPU test
skipped with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_dry_run_writes_every_section(tmp_path):
    real = REPO / "bench" / "results" / "gpu.json"
    before = real.stat().st_mtime_ns if real.exists() else None
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--dry-run", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and result["machine"]["device"] == "cpu"
    assert out.with_suffix(".log").read_text().count("\n") > 10
    tests = result["tests"]  # the CUDA tests are collected and skipped here, with their reason
    assert tests["returncode"] == 0 and tests["counts"].get("skipped", 0) >= 7 and not tests["counts"].get("failed")
    assert any("needs a CUDA GPU" in reason for reason in tests["skip_reasons"])
    rows = {(r["kind"], r["variant"]): r for r in result["pretraining"]["rows"]}
    for key in (("hubert", "eager"), ("progre", "eager"), ("hubert", "foreach")):
        assert rows[key]["audio_per_gpu_second"] > 0 and rows[key]["model_tflops_per_second"] > 0
        assert rows[key]["mfu"] is None  # no GPU, no datasheet peak
    assert "hubert_goal_met" in result["pretraining"]["goal"] and "progre_over_hubert" in result["pretraining"]["goal"]
    assert result["kmeans"]["cpu_subsample_objective"] > 0 and "skipped" in result["kmeans"]["gpu"]
    assert result["features"]["mfcc_x_real_time"]["cpu"] > 0
    assert set(result["features"]["layer_x_real_time"]) == {"bf16", "fp32"}
    assert [r["workers"] for r in result["loader"]["rows"]] == [0, 1]
    assert all(r["audio_per_second"] > 0 for r in result["loader"]["rows"])
    assert (real.stat().st_mtime_ns if real.exists() else None) == before  # real results untouched


FAKE_GPU_NODE = r"""
import sys

import pytest
import torch

torch.cuda.is_available = lambda: True  # as on a GPU node
if sys.argv[1] == "no-faiss":
    sys.modules["faiss"] = None  # `import faiss` fails, as where no FAISS is installed
sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", "-m", "cuda", "-k", "faiss_gpu_kmeans",
                      "tests/test_cuda.py"]))
"""


def test_on_a_gpu_node_without_faiss_for_gpu_the_cuda_tests_collect_and_the_faiss_one_says_why_it_skips():
    for faiss in ("installed", "no-faiss"):  # (here the installed one is faiss-cpu, or faiss-gpu without a GPU)
        done = subprocess.run([sys.executable, "-c", FAKE_GPU_NODE, faiss], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert done.stdout.count("SKIPPED [1] ") == 1  # (exit 0: no collection error, no failure)
        reason = done.stdout.split("SKIPPED [1] ")[1].splitlines()[0]
        assert "FAISS" in reason and "needs a CUDA GPU" not in reason
        if faiss == "no-faiss":
            assert "FAISS is not usable: UserError: FAISS is not installed" in reason
