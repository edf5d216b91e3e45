"""DVC stage `synth`: the built-in demo corpus -> audio/*.flac + metadata.parquet + summary.json."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from progre.config import SynthParams
from progre.data.synth import SynthSettings, synthesize_corpus
from progre.io import write_json
from progre.log import console, is_quiet
from progre.outputs import output_folder


def run(p: SynthParams, out: Path, overwrite: bool = False) -> dict:
    """Synthesise the corpus into `out` and print a summary table."""
    with output_folder(out, "synth", overwrite=overwrite) as tmp:
        summary = synthesize_corpus(p.to(SynthSettings), tmp)
        write_json(tmp / "summary.json", summary)
    if not is_quiet():
        _print_summary(summary, out)
    return summary


def _print_summary(summary: dict, out: Path) -> None:
    """Utterances and minutes per split, then speakers, styles and phone inventory size."""
    table = Table(title=f"corpus in {out}")
    for col in ("split", "utterances", "minutes", "noisy"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, s in summary["splits"].items():
        table.add_row(split, str(s["utterances"]), f"{s['minutes']:.1f}", str(s["noisy"]))
    table.add_row("total", str(summary["utterances"]), f"{summary['total_seconds'] / 60:.1f}",
                  str(sum(s["noisy"] for s in summary["splits"].values())), style="bold")
    console.print(table)
    console.print(f"{len(summary['speakers'])} speakers, styles: {', '.join(summary['styles'])}, "
                  f"{summary['phone_inventory_size']} phones", highlight=False)
