"""DVC stage `report`: one markdown comparison of the evaluated upstreams, with layer-weight plots
(`progre.report`)."""

from __future__ import annotations

from pathlib import Path

from progre.config import ReportParams
from progre.report import write_report


def run(p: ReportParams, results: list[Path], out: Path) -> dict:
    return write_report(p.title, results, out)
