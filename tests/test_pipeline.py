"""`dvc repro` of the whole pipeline on the tiny preset, in a temporary copy of the repository.

Checks that every declared output and metric exists, that a second `dvc repro` does nothing,
that `dvc exp run -S` of an evaluation parameter reruns only evaluation and the report, and that a
changed default makes the stages that read it stale.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "synth": {"preset": "tiny"},
    "shard": {"max_shard_mb": 0.2},
    "features": {"sample_fraction": 1.0, "layer": 2},
    "cluster": {"niter": 10},
    "cluster_iter1": {"n_clusters": 20},
    "cluster_iter2": {"n_clusters": 10},
    "pretrain": {"batch_seconds": 4.0, "crop_min_seconds": 0.5, "crop_max_seconds": 2.0, "warmup_steps": 2,
                 "log_every": 2, "valid_every": 4, "valid_batches": 2, "checkpoint_every": 4, "num_workers": 0},
    "pretrain_iter1": {"max_steps": 4},
    "pretrain_iter2": {"max_steps": 4},
    "speakers": {"n_speakers": 4},
    "evaluate": {"max_epochs": 3, "patience": 2, "head_seeds": 2},
}


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OMP_NUM_THREADS="2")
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The tracked files of the repository, as a fresh git + DVC project, with the tiny preset."""
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name == "dvc.lock" or not (REPO / name).is_file():
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in TINY.items():
        params.setdefault(section, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        subprocess.run(cmd, cwd=root, check=True)
    return root


@pytest.mark.slow
def test_repro_produces_every_output_then_does_nothing_then_reruns_only_evaluation(workspace):
    first = run(["dvc", "repro"], workspace)
    stages = yaml.safe_load((workspace / "dvc.yaml").read_text())
    expected_stages = {"synth", "shard", "pitch", "mfcc", "labels_iter1", "pseudo_speakers", "pretrain_iter1",
                       "layer_iter1", "labels_iter2", "pretrain_iter2@progre", "pretrain_iter2@hubert",
                       "evaluate@mfcc", "evaluate@random", "evaluate@hubert", "evaluate@progre", "report"}
    assert ran_stages(first) == expected_stages

    listed = run(["dvc", "stage", "list", "--name-only"], workspace).split()
    assert set(listed) == expected_stages
    for name, stage in stages["stages"].items():
        items = stage["foreach"] if "foreach" in stage else [None]
        for item in items:
            for out in (stage.get("do", stage)).get("outs", []):
                path = next(iter(out)) if isinstance(out, dict) else out
                path = path.replace("${item}", str(item)).replace("${key}", str(item))
                assert (workspace / path).exists(), f"{name}: {path} missing"
    for metric in stages["metrics"]:
        assert (workspace / metric).is_file(), metric
    for plot in stages["plots"]:
        path = plot if isinstance(plot, str) else next(iter(next(iter(plot.values()))["y"]))
        assert (workspace / path).is_file(), path
    report = (workspace / "reports" / "report.md").read_text()
    for upstream in ("mfcc", "random", "hubert", "progre"):
        assert upstream in report

    second = run(["dvc", "repro"], workspace)
    assert ran_stages(second) == set()
    assert "up to date" in second

    run(["git", "add", "-A"], workspace)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "after repro"], workspace)
    experiment = run(["dvc", "exp", "run", "-S", "evaluate.seed=7"], workspace)
    assert ran_stages(experiment) == {"evaluate@mfcc", "evaluate@random", "evaluate@hubert", "evaluate@progre",
                                      "report"}

    # a default is declared once, in the library module whose code uses it (progre/settings.py), and that
    # module is a dependency of every stage it changes: editing synth's seed default makes those stale
    synth = workspace / "progre" / "data" / "synth.py"
    text = synth.read_text()
    assert 'seed: int = setting(1234, "random seed: same seed, same corpus")' in text
    synth.write_text(text.replace('setting(1234, "random seed', 'setting(4321, "random seed'))
    readers = set()
    for name, stage in stages["stages"].items():
        if "progre/data/synth.py" in (stage.get("deps") or stage.get("do", {}).get("deps", [])):
            readers |= {f"{name}@{key}" for key in stage["foreach"]} if "foreach" in stage else {name}
    assert "synth" in readers
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run(["dvc", "status", "--json"], cwd=workspace, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == readers
