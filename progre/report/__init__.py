"""`progre report`: one markdown comparison of the evaluated upstreams, with layer-weight plots.

`write_report` writes `out` (markdown, see `render`) and beside it ``<stem>-<task>-layer-weights.png``:
one panel per upstream, bars in the upstream's state order. Image links are relative, so the report
can move with its images. It reads evaluation outputs only (`collect`) and computes nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..downstream.plots import WeightPanel, save_weight_grid
from ..downstream import TASKS
from ..io import atomic_path
from .collect import TaskResult, UpstreamResults, collect
from .render import Column, has_weights, render, table_columns, title_of

REPORT = "report.md"
"""The report's file name in its folder."""

TASK_ORDER = TASKS
"""Columns come in this order; tasks outside it follow, sorted."""


def write_report(title: str, results: list[Path], out: Path) -> dict[str, Any]:
    """Write the report to `out` (markdown) and its figures beside it; returns what it holds."""
    upstreams = collect(results)
    tasks = [t for t in TASK_ORDER if any(t in u.tasks for u in upstreams)]
    tasks += sorted({t for u in upstreams for t in u.tasks} - set(tasks))
    columns = table_columns(upstreams, tasks)
    images = {}
    for task in tasks:
        panels = [WeightPanel(u.name, [w["state"] for w in u.tasks[task].weights],
                              [float(w["weight"]) for w in u.tasks[task].weights])
                  for u in upstreams if has_weights(u, task)]
        if panels:
            image = out.with_name(f"{out.stem}-{task}-layer-weights.png")
            save_weight_grid(image, panels, f"{title_of(upstreams, task)}: learned layer weights")
            images[task] = image
    markdown = render(title, upstreams, tasks, columns, images)
    with atomic_path(out) as tmp:
        tmp.write_text(markdown)
    return {"upstreams": [u.name for u in upstreams], "tasks": tasks, "images": {t: str(i) for t, i in images.items()},
            "table": {u.name: {c.header: c.cell(u)[0] for c in columns} for u in upstreams}}


__all__ = ["Column", "TaskResult", "UpstreamResults", "collect", "render", "table_columns", "write_report"]
