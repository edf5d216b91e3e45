"""DVC stage `report`: one markdown comparison of the evaluated upstreams, with layer-weight plots
(`progre.report`)."""

from __future__ import annotations

from pathlib import Path

from progre.config import ReportParams
from progre.log import logger
from progre.outputs import output_folder
from progre.report import REPORT, ReportSettings, write_report


def run(p: ReportParams, results: list[Path], out: Path, overwrite: bool = False) -> dict:
    """Write out/report.md and its figures."""
    with output_folder(out, "report", overwrite=overwrite, inputs=results) as tmp:
        summary = write_report(results, p.to(ReportSettings), tmp / REPORT)
    logger.info("report on %s (%s) written to %s", ", ".join(summary["upstreams"]),
                ", ".join(t.upper() for t in summary["tasks"]), out / REPORT)
    return summary
