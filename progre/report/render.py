"""The report's markdown: a table with upstreams as rows and task metrics as columns (test scores as the
mean and standard deviation over head seeds, the best of each column in bold; a cross-validated task's
cell is the mean over its folds, and a note under the table says so and gives each fold's score),
reference rows (the noisy input for SE, the unconverted WORLD resynthesis for VC), audio examples, the
layer-weight figures and a "how to read this" section."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .collect import UpstreamResults


@dataclass(frozen=True)
class Metric:
    label: str
    higher_is_better: bool
    scale: float = 100.0
    """Cells show value x scale: percent for rates and accuracies, raw for PESQ and dB."""
    digits: int = 1


METRICS = {
    "acc": Metric("acc", True), "per": Metric("PER", False), "wer": Metric("WER", False), "cer": Metric("CER", False),
    "pesq": Metric("PESQ", True, 1.0, 2), "stoi": Metric("STOI", True), "si_sdri": Metric("SI-SDRi dB", True, 1.0),
    "mcd": Metric("MCD dB", False, 1.0, 2), "sim": Metric("SIM", True),
}
REFERENCE_ROWS = {"se": "noisy input (no enhancement)", "vc": "source, WORLD resynthesis (no conversion)"}


def metric_of(name: str) -> Metric:
    return METRICS.get(name, Metric(name, True))


@dataclass
class Column:
    """One metric of one task: the header says its direction, cells are test scores (mean +- std)."""

    task: str
    metric: str
    title: str

    @property
    def higher_is_better(self) -> bool:
        return metric_of(self.metric).higher_is_better

    @property
    def header(self) -> str:
        return f"{self.title} {metric_of(self.metric).label} {'↑' if self.higher_is_better else '↓'}"

    def value(self, upstream: UpstreamResults) -> Optional[float]:
        result = upstream.tasks.get(self.task)
        if result is None or not result.ok:
            return None
        value = result.record.get("test_metrics", {}).get(self.metric)
        return None if value is None or value != value else float(value)

    def cell(self, upstream: UpstreamResults) -> tuple[str, Optional[float]]:
        """(text, value): "72.9 ± 1.3" (or "72.9" with one head seed), "skipped" or "–"."""
        result = upstream.tasks.get(self.task)
        if result is None:
            return "–", None
        if not result.ok:
            return "skipped", None
        value = self.value(upstream)
        if value is None:
            return "–", None
        std = result.record.get("test_metrics_std", {}).get(self.metric)
        return self.format(value, std if len(result.record.get("head_seeds", [])) > 1 else None), value

    def format(self, value: float, std: Optional[float] = None) -> str:
        metric = metric_of(self.metric)
        text = f"{metric.scale * value:.{metric.digits}f}"
        return text if std is None else f"{text} ± {metric.scale * std:.{metric.digits}f}"


def table_columns(upstreams: list[UpstreamResults], tasks: list[str]) -> list[Column]:
    """Per task its main metric, then the other test metrics in the order it reports them (ASR: CER after
    WER; SE: STOI and SI-SDRi after PESQ), leaving out the counts of utterances a metric could not score."""
    columns = []
    for task in tasks:
        records = [u.tasks[task].record for u in upstreams if task in u.tasks]
        main = records[0]["metric"]
        reported = [m for r in records for m in r.get("test_metrics", {}) if not m.endswith("_unscored")]
        extra = [m for m in dict.fromkeys(reported) if m != main]  # in the order the task reports them
        columns += [Column(task, m, records[0].get("title", task.upper())) for m in [main, *extra]]
    return columns


def reference_rows(upstreams: list[UpstreamResults], columns: list[Column]) -> list[str]:
    """The SE and VC reference rows (the same for every upstream: taken from the first that has them)."""
    rows = []
    for task, name in REFERENCE_ROWS.items():
        record = next((r.record for u in upstreams if (r := u.tasks.get(task)) is not None and r.ok
                       and "reference" in r.record), None)
        if record is None:
            continue
        cells = [c.format(record["reference"][c.metric]) if c.task == task and c.metric in record["reference"]
                 and record["reference"][c.metric] == record["reference"][c.metric] else "–" for c in columns]
        rows.append(f"| *{name}* | | " + " | ".join(cells) + " |")
    return rows


def render(title: str, upstreams: list[UpstreamResults], tasks: list[str], columns: list[Column],
           images: dict[str, Path], examples: Optional[dict[str, dict[str, Any]]] = None) -> str:
    seeds = sorted({len(r.record.get("head_seeds", [])) for u in upstreams for r in u.tasks.values() if r.ok} - {0})
    spread = (f"the mean ± standard deviation over {seeds[0]} head seeds; " if seeds == [seeds[0]] and seeds[0] > 1
              else "")
    lines = [f"# {title}", "", f"Test scores: {spread}percent, except PESQ (1 to 4.6) and SI-SDRi and MCD (dB); "
             f"the best of each column in bold.", ""]
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
    lines += reference_rows(upstreams, columns)
    notes = [f"- {u.name}, {r.record.get('title', t)}: skipped ({r.record.get('reason', 'no reason given')})"
             for u in upstreams for t, r in u.tasks.items() if not r.ok]
    notes += _cross_validations(upstreams, columns)
    notes += _provenance(upstreams)
    if notes:
        lines += ["", *notes]
    if examples:
        lines += ["", "## Audio examples", ""]
        for task, shown in examples.items():
            lines += [f"### {title_of(upstreams, task)}", "", f"![{title_of(upstreams, task)} spectrograms]"
                      f"({shown['figure']})", "", "| utterance | " + " | ".join(shown["columns"]) + " |",
                      "|---|" + "---|" * len(shown["columns"])]
            lines += [f"| {key} | " + " | ".join(f"[flac]({link})" if link else "–" for link in links) + " |"
                      for key, links in shown["rows"]]
            lines.append("")
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


def _cross_validations(upstreams: list[UpstreamResults], columns: list[Column]) -> list[str]:
    """One line per cross-validated (upstream, task): k-fold, the column, each fold's test score."""
    lines = []
    for u in upstreams:
        for task, result in u.tasks.items():
            cross = result.record.get("cross_validation") if result.ok else None
            if not cross:
                continue
            column = next((c for c in columns if c.task == task and c.metric == result.record["metric"]),
                          Column(task, result.record["metric"], result.record.get("title", task.upper())))
            folds = ", ".join(f"{fold} {column.format(scores['test'])}" for fold, scores in cross["folds"].items())
            lines.append(f"- {u.name}, {column.title}: {len(cross['folds'])}-fold cross-validation over "
                         f"`{cross['column']}`; the cell is the mean over the folds (each fold tested once, by "
                         f"heads trained on the others): {folds}.")
    return lines


def _provenance(upstreams: list[UpstreamResults]) -> list[str]:
    """One line on the protocol, and one per upstream whose speaker branch learned from labels."""
    records = [r.record for u in upstreams for r in u.tasks.values() if r.ok]
    protocols = sorted({r.get("protocol", "demo") for r in records})
    lines = [f"- Protocol: {', '.join(protocols)} (`evaluate.protocol`, docs/DESIGN.md)."] if records else []
    for u in upstreams:
        labels = next((r.record.get("speaker_labels") for r in u.tasks.values() if r.record.get("speaker_labels")),
                      None)
        if labels:
            what = {"pseudo": "pseudo speakers (`progre pseudo-speakers`: k-means of utterance embeddings, no "
                              "labels beyond the audio)",
                    "corpus": "the corpus's speaker labels (supervised: SID on the same speakers is not "
                              "self-supervised)"}.get(labels, labels)
            lines.append(f"- {u.name}: its speaker branch learned from {what}.")
    return lines

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
        "error rate above 100). SE masks the noisy STFT with a BiLSTM head reading the upstream's states of "
        "noisy speech (noise mixed into clean utterances at 2.5-17.5 dB): wide-band PESQ, STOI and the SI-SDR "
        "improvement over the noisy input, whose own scores are the floor row. VC maps the states of another "
        "speaker's utterance to the target speaker's WORLD features and resynthesises them: mel-cepstral "
        "distortion against the target's rendering of the same sentence, SIM the share of conversions a "
        "speaker classifier hears as the target, and the CER of an ASR judge (both judges trained once on "
        "MFCC of the real recordings, the same for every upstream); the source resynthesised by WORLD "
        "without conversion is the reference row. Read SIM together with CER: a head that outputs the "
        "target's average spectrum for every frame sounds like the target to the speaker judge (high SIM) "
        "while saying nothing (high CER). Every head is trained with several seeds (the learning "
        "rate searched with the first), and a cell is their mean ± standard deviation: a gap smaller than "
        "the spreads is noise. "
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
