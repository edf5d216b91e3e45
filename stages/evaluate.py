"""DVC stage `evaluate`: layer weights and task heads on a frozen upstream, every task scored
(`progre.downstream.evaluation`); summary.json holds every task's test metric (or why it was skipped)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from progre.config import EvaluateParams
from progre.data.shards import Shards
from progre.device import resolve_device
from progre.downstream.evaluation import EvaluationSettings, evaluate_upstream
from progre.downstream.upstreams import is_cache_entry, parse_upstream
from progre.features.store import open_pitch_store
from progre.io import write_json
from progre.log import logger
from progre.outputs import check_cache_folder, output_folder


def run(p: EvaluateParams, upstream: str, out: Path, shards: Path, pitch: Optional[Path] = None,
        name: Optional[str] = None, cache: Path = Path(".cache/hidden"), overwrite: bool = False) -> dict:
    """Evaluate `upstream` on every task of `p.tasks`; returns the summary (also in out/summary.json)."""
    up = parse_upstream(upstream, name)
    settings = p.to(EvaluationSettings)
    corpus = Shards(shards)
    contours = None if pitch is None else open_pitch_store(pitch, corpus)
    inputs = [shards, pitch, up.checkpoint, p.se_noisy, None if p.se_noise == "demo" else p.se_noise]
    check_cache_folder(cache, inputs, is_cache_entry)
    inputs.append(cache)
    with output_folder(out, "evaluate", overwrite=overwrite, inputs=inputs) as tmp:
        summary = evaluate_upstream(up, corpus, contours, settings, resolve_device(p.device), cache, tmp)
        write_json(tmp / "summary.json", summary)
    done = ", ".join(f"{name.upper()} {t['metric']} {t['test']:.3f}" if t["status"] == "ok" else
                     f"{name.upper()} skipped" for name, t in summary["tasks"].items())
    logger.info("%s: %s (%.0f s), written to %s", up.name, done, summary["seconds"], out)
    return summary
