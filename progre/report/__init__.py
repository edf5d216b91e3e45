"""`progre report`: one markdown comparison of the evaluated upstreams, with layer-weight plots.

`write_report` writes `out` (markdown, see `render`) and beside it ``<stem>-<task>-layer-weights.png``:
one panel per upstream, bars in the upstream's state order. Image links are relative, so the report
can move with its images. It reads evaluation outputs only (`collect`) and computes nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..downstream.plots import WeightPanel, save_spectrograms, save_weight_grid
from ..downstream import TASKS
from ..io import atomic_path
from ..settings import setting
from .collect import TaskResult, UpstreamResults, collect
from .render import Column, has_weights, render, table_columns, title_of

REPORT = "report.md"
"""The report's file name in its folder."""

TASK_ORDER = TASKS
"""Columns come in this order; tasks outside it follow, sorted."""


@dataclass(frozen=True)
class ReportSettings:
    """The report's own settings (the `report` params section)."""

    title: str = setting("ProgRE demo report", "heading of the report")


def write_report(results: list[Path], settings: ReportSettings, out: Path) -> dict[str, Any]:
    """Write the report of the evaluation folders `results` to `out` (markdown) and its figures beside it;
    returns what it holds."""
    title = settings.title
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
    examples = {task: shown for task in ("se", "vc") if (shown := _examples(upstreams, task, out)) is not None}
    markdown = render(title, upstreams, tasks, columns, images, examples)
    with atomic_path(out) as tmp:
        tmp.write_text(markdown)
    return {"upstreams": [u.name for u in upstreams], "tasks": tasks, "images": {t: str(i) for t, i in images.items()},
            "table": {u.name: {c.header: c.cell(u)[0] for c in columns} for u in upstreams}}


def _examples(upstreams: list[UpstreamResults], task: str, out: Path) -> dict[str, Any] | None:
    """Copy a task's audio examples beside the report (audio/<task>/) and draw the first one's spectrograms:
    {"figure", "columns": input, each upstream's output, reference; "rows": (key, links)}."""
    import soundfile as sf

    made = [(u.name, r.source.parent / "examples", r.record["examples"]) for u in upstreams
            if (r := u.tasks.get(task)) is not None and r.ok and r.record.get("examples") and r.source is not None]
    if not made:
        return None
    folder = out.parent / "audio" / task
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for example in made[0][2]:
        key = example["key"]
        links = [_copy(made[0][1] / example["input"], folder / f"{key}-input.flac")]
        for name, source, written in made:
            mine = next((e for e in written if e["key"] == key), None)
            links.append(None if mine is None else _copy(source / mine["output"], folder / f"{key}-{name}.flac"))
        links.append(_copy(made[0][1] / example["reference"], folder / f"{key}-reference.flac"))
        rows.append((key, [None if link is None else link.relative_to(out.parent).as_posix() for link in links]))
    names = [name for name, _, _ in made]
    figure = out.with_name(f"{out.stem}-{task}-spectrograms.png")
    first_key, first_links = rows[0]
    labels = ["input", *names, "reference"]
    save_spectrograms(figure, [(label, sf.read(out.parent / link)[0]) for label, link in zip(labels, first_links)
                               if link is not None], f"{title_of(upstreams, task)}: {first_key}")
    return {"figure": figure.name, "columns": labels, "rows": rows}


def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


__all__ = ["Column", "TaskResult", "UpstreamResults", "collect", "render", "table_columns", "write_report"]
