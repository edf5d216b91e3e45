"""DVC stage `shard`: any corpus -> WebDataset shards + index.parquet + rejects.parquet + summary.json."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from progre.config import ShardParams
from progre.data.sharding import ShardSettings, shard_corpus
from progre.io import write_json
from progre.log import console, is_quiet, logger
from progre.outputs import output_folder


def run(p: ShardParams, corpus: Path, out: Path, metadata: Path | None = None, overwrite: bool = False) -> dict:
    lexicons = [Path(file) for file in p.lexicon]
    with output_folder(out, "shard", overwrite=overwrite, inputs=[corpus, metadata, *lexicons]) as tmp:
        summary = shard_corpus(corpus, metadata, p.to(ShardSettings), tmp)
        write_json(tmp / "summary.json", summary)
    _print_summary(summary, out)
    return summary


def _print_summary(summary: dict, out: Path) -> None:
    if not is_quiet():
        table = Table(title=f"shards in {out}")
        for col in ("split", "utterances", "minutes", "speakers", "shards"):
            table.add_column(col, justify="right" if col != "split" else "left")
        for split, s in summary["splits"].items():
            table.add_row(split, str(s["utterances"]), f"{s['minutes']:.1f}", str(s["speakers"]), str(s["shards"]))
        console.print(table)
    if summary["rejected"]:
        reasons = ", ".join(f"{n} {reason}" for reason, n in summary["rejects_by_reason"].items())
        logger.warning("rejected %d inputs (%s); see %s", summary["rejected"], reasons, out / "rejects.parquet")
    else:
        logger.info("no inputs rejected")
