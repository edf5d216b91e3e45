"""Shared by the benchmarks: machine facts and result files under bench/results/."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "gpu": gpu}


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data | {"machine": machine()}, indent=2, sort_keys=True) + "\n")
    return path


def demo_corpus(workdir: Path, preset: str = "demo") -> Path:
    """The built-in corpus (synthesised once into `workdir`)."""
    from progre.config import SynthParams
    from stages import synth as synth_stage

    corpus = workdir / f"corpus-{preset}"
    if not (corpus / "metadata.parquet").is_file():
        synth_stage.run(SynthParams(preset=preset), corpus)
    return corpus
