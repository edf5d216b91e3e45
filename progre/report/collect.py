"""Reading evaluation outputs for the report: every (upstream, task) record with its layer weights.

Reads `progre evaluate` output folders: a folder with one sub-folder per task
(``<folder>/<task>/metrics.json``), or a single task's folder (``<folder>/metrics.json``). Folders
of the same upstream name are merged, so evaluations that ran one task per folder report like one
evaluation of all tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError
from ..io import read_json


@dataclass
class TaskResult:
    """One upstream's record for one task (metrics.json) and its layer weights, if it ran."""

    record: dict[str, Any]
    weights: Optional[list[dict[str, Any]]] = None
    source: Optional[Path] = None

    @property
    def ok(self) -> bool:
        return self.record.get("status", "ok") == "ok"


@dataclass
class UpstreamResults:
    name: str
    tasks: dict[str, TaskResult] = field(default_factory=dict)


def collect(results: list[Path]) -> list[UpstreamResults]:
    """Every evaluated (upstream, task) in `results`, grouped by upstream name in first-seen order."""
    if not results:
        raise UserError("give at least one evaluation output folder")
    by_name: dict[str, UpstreamResults] = {}
    for folder in results:
        for metrics in _metrics_files(Path(folder)):
            record = read_json(metrics)
            if "task" not in record or "upstream" not in record:
                raise UserError(f"{metrics} is not a metrics file of `progre evaluate` (no task or upstream)")
            upstream = by_name.setdefault(record["upstream"], UpstreamResults(record["upstream"]))
            task = record["task"]
            if task in upstream.tasks:
                raise UserError(f"{record['upstream']} has two {task} results: {upstream.tasks[task].source} and "
                                f"{metrics}; give each upstream a distinct --name")
            weights_file = metrics.with_name("layer_weights.json")
            weights = read_json(weights_file)["layer_weights"] if weights_file.is_file() else None
            upstream.tasks[task] = TaskResult(record, weights, metrics)
    return list(by_name.values())


def _metrics_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"evaluation output {folder} not found")
    if (folder / "metrics.json").is_file():  # one task's folder
        return [folder / "metrics.json"]
    files = sorted(folder.glob("*/metrics.json"))
    if not files:
        raise UserError(f"{folder} holds no <task>/metrics.json; is it a `progre evaluate` output folder?")
    return files
