"""The report's markdown: a table with upstreams as rows and task metrics as columns (test scores in
percent, the best of each column in bold), the layer-weight figures and a "how to read this" section."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .collect import UpstreamResults

METRIC_NAMES = {"acc": "acc", "per": "PER", "wer": "WER", "cer": "CER"}
HIGHER_IS_BETTER = {"acc": True, "per": False, "wer": False, "cer": False}


@dataclass
class Column:
    """One metric of one task: the header says its direction, cells are test scores in percent."""

    task: str
    metric: str
    title: str

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER.get(self.metric, True)

    @property
    def header(self) -> str:
        return f"{self.title} {METRIC_NAMES.get(self.metric, self.metric)} {'↑' if self.higher_is_better else '↓'}"

    def value(self, upstream: UpstreamResults) -> Optional[float]:
        result = upstream.tasks.get(self.task)
        if result is None or not result.ok:
            return None
        value = result.record.get("test_metrics", {}).get(self.metric)
        return None if value is None else float(value)

    def cell(self, upstream: UpstreamResults) -> tuple[str, Optional[float]]:
        """(text, value): "87.5", "skipped" or "–"."""
        result = upstream.tasks.get(self.task)
        if result is None:
            return "–", None
        if not result.ok:
            return "skipped", None
        value = self.value(upstream)
        return f"{100 * value:.1f}", value  # type: ignore[operator]


def table_columns(upstreams: list[UpstreamResults], tasks: list[str]) -> list[Column]:
    """Per task its main metric, then any other test metric it reports (ASR: CER after WER)."""
    columns = []
    for task in tasks:
        records = [u.tasks[task].record for u in upstreams if task in u.tasks]
        main = records[0]["metric"]
        extra = sorted({m for r in records for m in r.get("test_metrics", {})} - {main})
        columns += [Column(task, m, records[0].get("title", task.upper())) for m in [main, *extra]]
    return columns


def render(title: str, upstreams: list[UpstreamResults], tasks: list[str], columns: list[Column],
           images: dict[str, Path]) -> str:
    lines = [f"# {title}", "", "Test scores in percent; the best of each column in bold.", ""]
    lines.append("| upstream | states | " + " | ".join(c.header for c in columns) + " |")
    lines.append("|---|---:|" + "---:|" * len(columns))
    best = {c.header: _best([c.value(u) for u in upstreams], c.higher_is_better) for c in columns}
    for u in upstreams:
        cells = []
        for c in columns:
            text, value = c.cell(u)
            cells.append(f"**{text}**" if value is not None and value == best[c.header] and len(upstreams) > 1
                         else text)
        lines.append(f"| {u.name} | {_num_states(u)} | " + " | ".join(cells) + " |")
    notes = [f"- {u.name}, {r.record.get('title', t)}: skipped ({r.record.get('reason', 'no reason given')})"
             for u in upstreams for t, r in u.tasks.items() if not r.ok]
    if notes:
        lines += ["", *notes]
    lines += ["", "## Layer weights", ""]
    single = [u.name for u in upstreams
              if any(r.ok for r in u.tasks.values()) and all(len(r.weights) <= 1 for r in u.tasks.values() if r.ok)]
    if single:
        lines += [f"{_join(single)} {'has' if len(single) == 1 else 'have'} a single hidden state (its weight "
                  f"is 1), so no panel.", ""]
    for task in tasks:
        if task in images:
            lines += [f"### {title_of(upstreams, task)}", "", f"![{title_of(upstreams, task)} layer weights]"
                      f"({images[task].name})", ""]
    lines += ["## How to read this", "", _how_to_read(upstreams, tasks), ""]
    return "\n".join(lines)


def _how_to_read(upstreams: list[UpstreamResults], tasks: list[str]) -> str:
    by_count: dict[int, list[str]] = {}
    for task in tasks:
        counts = {r.record["utterances"]["test"] for u in upstreams
                  if (r := u.tasks.get(task)) is not None and r.ok and "utterances" in r.record}
        if len(counts) == 1:
            by_count.setdefault(counts.pop(), []).append(title_of(upstreams, task))
    accuracies = {title_of(upstreams, t) for t in tasks if _is_classification(upstreams, t)}
    sizes = "; ".join(f"{_join(titles)} on {n} test utterances" +
                      (f" (one is {100 / n:.1f} points of accuracy)" if set(titles) & accuracies else "")
                      for n, titles in by_count.items())
    return (
        "Each upstream is frozen. Per task, a learned softmax-weighted sum of its hidden states (SUPERB's "
        "featurizer) feeds a small head trained on the train split; the epoch with the best valid score "
        "is kept and scored on test. SID (speaker), ER (speaking style), LID (language) and the "
        "classifications of other metadata columns are accuracies of a linear "
        "classifier on the mean over frames (higher is better); PR is the phone error rate of a linear "
        "CTC head and ASR the word and character error rates of a BiLSTM CTC head with greedy decoding "
        "and no language model, on transcripts normalised as the ASR targets are (CER alone where they "
        "are written without spaces between words, as Chinese; lower is better; insertions can push an "
        "error rate above 100). "
        "MFCC is a hand-crafted reference; the randomly initialised model of the same architecture is "
        "the floor that pretraining must clear. "
        + (f"Scored: {sizes}; differences of a few points on small test sets are noise. " if sizes else "")
        + "The plots show each task's learned weights, one bar per hidden state in the model's order "
        "(ProgRE: pitch-branch output, layers up to the speaker branch, the speaker-branch output, that "
        "layer minus it, the deeper layers; HuBERT: the Transformer input and its layers); the dashed "
        "line is the uniform starting point."
        + (" States are standardised before the sum, so a high bar means the task found that state useful, "
           "not that its values are large." if _all_standardized(upstreams) else "")
    )


def _is_classification(upstreams: list[UpstreamResults], task: str) -> bool:
    return any("classes" in r.record for u in upstreams if (r := u.tasks.get(task)) is not None and r.ok)


def _all_standardized(upstreams: list[UpstreamResults]) -> bool:
    records = [r.record for u in upstreams for r in u.tasks.values() if r.ok]
    return bool(records) and all(r.get("standardize") for r in records)


def _join(words: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def has_weights(upstream: UpstreamResults, task: str) -> bool:
    """Whether the upstream has learned weights worth a panel for the task (more than one state)."""
    result = upstream.tasks.get(task)
    return result is not None and result.ok and result.weights is not None and len(result.weights) > 1


def _best(values: list[Optional[float]], higher_is_better: bool) -> Optional[float]:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return max(present) if higher_is_better else min(present)


def _num_states(upstream: UpstreamResults) -> str:
    counts = {r.record.get("num_states") for r in upstream.tasks.values()} - {None}
    return str(counts.pop()) if len(counts) == 1 else "?"


def title_of(upstreams: list[UpstreamResults], task: str) -> str:
    for u in upstreams:
        if task in u.tasks:
            return u.tasks[task].record.get("title", task.upper())
    return task.upper()
