"""The `progre` command line: every stage is listed and documented; user errors are one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from progre.cli import app

STAGES = ["synth", "shard", "features", "cluster", "pseudo-speakers", "pretrain", "evaluate", "report", "export",
          "import-official", "params"]


def test_help_lists_every_stage():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in STAGES:
        assert name in result.output


@pytest.mark.parametrize("name", STAGES)
def test_each_subcommand_explains_its_options(name):
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--help" in result.output


def test_params_command_lists_a_section():
    result = CliRunner().invoke(app, ["params", "cluster"])
    assert result.exit_code == 0 and "n_clusters: int = 100" in result.output


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "progre.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_bad_parameter_is_one_line_with_exit_status_2(tmp_path):
    result = run_cli("synth", "--out", str(tmp_path / "c"), "--set", "n_speakers=0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --set n_speakers: 0 is below the minimum 1"


def test_unknown_params_section_and_missing_feature_folder(tmp_path):
    assert run_cli("params", "nope").returncode == 2
    (tmp_path / "f").mkdir()
    result = run_cli("cluster", "--features", str(tmp_path / "f"), "--out", str(tmp_path / "k"), cwd=tmp_path)
    assert result.returncode == 2 and "not a feature folder" in result.stderr and "Traceback" not in result.stderr
