"""The CLI's parameters: one params.yaml section per stage, built from the library's settings.

Every setting is declared once, in the library module that uses it (`progre.settings.setting`: type,
default, allowed values, help). A section's class here is those settings classes' fields side by side
(`section`), so `progre params`, the validation of params.yaml and `--set`, and the library agree by
construction. The few parameters a stage hands over apart from a settings object (a device to
resolve) are declared here. A stage that runs in several iterations reads its section and then an
overlay section `<section>_iter<N>` with what differs, so DVC can track each iteration's parameters
separately.

Unknown keys, wrong types and out-of-range values end with a one-line `UserError` that names the key,
e.g. ``params.yaml: pretrain.lr: expected a number, got 'fast'``.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from functools import cache
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from .errors import UserError
from .settings import checked_values, describe, setting

P = TypeVar("P", bound="Params")
S = TypeVar("S")

param = setting  # the declaration of a parameter that no library settings class holds


class Params:
    """Base of every section's parameter class."""

    SECTION: ClassVar[str] = ""
    SETTINGS: ClassVar[tuple[type, ...]] = ()
    """The library settings classes whose fields this section holds."""

    def check(self) -> None:
        """Cross-field validation: each settings class checks its own fields together."""
        for settings in self.SETTINGS:
            self.to(settings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to(self, settings: type[S], **extra: Any) -> S:
        """The library's own settings dataclass, filled from this section's parameters of the same names
        (plus `extra`); its fields that this section lacks keep their defaults."""
        names = {f.name for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
        values = {k: v for k, v in self.to_dict().items() if k in names}
        return settings(**(values | extra))

    @classmethod
    def describe(cls) -> str:
        """One line per parameter: name, type, default and help (for --help texts)."""
        return describe(list(dataclasses.fields(cls)), typing.get_type_hints(cls))  # type: ignore[arg-type]


def section(name: str, *settings: type, extra: type | None = None) -> type[Params]:
    """The params class of section `name`: the fields of the library `settings` classes (and of `extra`,
    parameters a stage uses apart from them), in order, as one flat dataclass. A name may appear in
    one of them only."""
    fields, owner = [], {}
    for cls in (*settings, *([extra] if extra else [])):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in owner:
                raise TypeError(f"section {name}: {f.name} is declared by both {owner[f.name]} and {cls.__name__}")
            owner[f.name] = cls.__name__
            copy = dataclasses.field(default=f.default, default_factory=f.default_factory, metadata=f.metadata)
            fields.append((f.name, hints[f.name], copy))
    title = "".join(part.title() for part in re.split(r"[_-]", name))
    return dataclasses.make_dataclass(f"{title}Params", fields, bases=(Params,),
                                      namespace={"SECTION": name, "SETTINGS": settings})


def build(cls: type[P], values: dict[str, Any], where: str) -> P:
    """Make `cls` from a plain dict, validating every key, type and range.

    `where` prefixes error messages, e.g. "params.yaml: pretrain." or "--set ".
    """
    params = cls(**checked_values(cls, values, where))
    try:
        params.check()
    except UserError as exc:
        raise UserError(f"{where}{exc}") from None
    return params


def read_params_file(path: str | Path | None) -> dict[str, Any]:
    """The whole params.yaml as a dict ({} when path is None)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise UserError(f"params file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    return data


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["lr=1e-3", "tasks=[sid,pr]"]` -> {"lr": "1e-3", "tasks": [...]} (typed later)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        value = yaml.safe_load(raw) if raw.strip() else ""
        out[key.strip()] = value
    return out


def load_params(cls: type[P], params_file: str | Path | None = None, iteration: int | None = None,
                overrides: list[str] | None = None) -> P:
    """Defaults <- params.yaml[SECTION] <- params.yaml[SECTION_iterN] <- --set overrides."""
    data = read_params_file(params_file)
    name = Path(params_file).name if params_file else "defaults"
    merged: dict[str, Any] = {}
    sections = [cls.SECTION] + ([f"{cls.SECTION}_iter{iteration}"] if iteration is not None else [])
    for section in sections:
        values = data.get(section) or {}
        if not isinstance(values, dict):
            raise UserError(f"{name}: section {section} must be a mapping")
        build(cls, values, f"{name}: {section}.")  # validates the section on its own
        merged.update(values)
    cli_values = parse_overrides(overrides or [])
    build(cls, cli_values, "--set ")
    merged.update(cli_values)
    return build(cls, merged, f"{name}: {cls.SECTION}.")


# --------------------------------------------------------------------------- stage sections


@dataclass
class FeaturesParams(Params):
    SECTION: ClassVar[str] = "features"

    sample_fraction: float = param(0.1, "fraction of the sample_split utterances whose features are "
                                        "stored for k-means fitting (HuBERT: 0.1)", min=0.0, max=1.0)
    sample_split: str = param("train", "split the k-means sample is drawn from", choices=("train", "valid", "test"))
    seed: int = param(1234, "random seed of the utterance sample")
    batch_seconds: float = param(120.0, "audio seconds per batch for MFCC and hidden features (and per batch handed to "
                                          "the pitch workers)", min=1.0)
    chunk_seconds: float = param(30.0, "longer utterances are processed in chunks of this length (hidden "
                                       "features)", min=1.0)
    layer: int = param(6, "transformer layer (1-based) for hidden features", min=1)
    hidden_dtype: str = param("float16", "storage type of hidden features", choices=("float16", "float32"))
    precision: str = param("auto", "hidden features: auto is bf16 autocast on CUDA, fp32 on CPU",
                           choices=("auto", "bf16", "fp32"))
    workers: int = param(2, "CPU worker processes for pitch", min=1)
    device: str = param("auto", "auto picks CUDA when present", choices=("auto", "cpu", "cuda"))


@dataclass
class ClusterParams(Params):
    SECTION: ClassVar[str] = "cluster"

    n_clusters: int = param(100, "k of k-means (HuBERT: 100 on MFCC, 500 on layer features)", min=2, max=65535)
    niter: int = param(100, "k-means iterations", min=1)
    nredo: int = param(1, "k-means restarts; the best objective wins", min=1)
    init: str = param("kmeans++", "centroid initialisation", choices=("kmeans++", "random"))
    max_points_per_centroid: int | None = param(None, "FAISS subsamples to this many points per centroid "
                                                      "(null: use every sampled point)", min=1)
    seed: int = param(1234, "random seed of the initialisation")
    batch_seconds: float = param(120.0, "audio seconds per batch when labelling (features of unsampled "
                                        "utterances are computed on the fly)", min=1.0)
    phone_splits: list[str] = param(["valid", "test"], "splits whose frame phone alignments score the labels "
                                                        "(phone purity, cluster purity, PNMI)",
                                    choices=("train", "valid", "test"))
    device: str = param("auto", "auto: CUDA when torch sees it, for the features of unsampled utterances, and "
                                "k-means on the GPU when FAISS sees one too (faiss-gpu); cpu: both on the CPU; "
                                "cuda: both on the GPU", choices=("auto", "cpu", "cuda"))


@dataclass
class SpeakersParams(Params):
    SECTION: ClassVar[str] = "speakers"

    n_speakers: int = param(24, "number of pseudo speakers", min=2)
    embedding: str = param("mfcc_stats", "utterance embedding: mean and std of the static MFCC "
                                         "cepstra, or mean of a layer's hidden states",
                           choices=("mfcc_stats", "layer_mean"))
    layer: int = param(4, "layer for layer_mean embeddings", min=1)
    niter: int = param(50, "k-means iterations", min=1)
    seed: int = param(1234, "random seed")
    device: str = param("auto", "where the utterance embeddings are computed (k-means runs on the CPU); auto "
                                "picks CUDA when present", choices=("auto", "cpu", "cuda"))


@dataclass
class EvaluateParams(Params):
    SECTION: ClassVar[str] = "evaluate"

    TASK_NAMES: ClassVar[tuple[str, ...]] = ("sid", "pr", "asr", "er", "se", "vc", "lid")

    tasks: list[str] = param(["sid", "pr", "asr", "er", "se", "vc"], "downstream tasks: sid (speaker), pr "
                             "(phones), asr (transcripts, any script), er (style), se (speech enhancement), vc "
                             "(voice conversion to one target speaker), lid (language), or cls:COLUMN to classify "
                             "utterances by any categorical metadata column (e.g. [sid,lid,cls:accent]; outputs "
                             "in cls-COLUMN/)")
    protocol: str = param("demo", "heads, schedules and featurizer normalisation: demo (small heads for the built-in "
                                  "corpus on a CPU) or superb (s3prl's downstream settings, for Base-scale upstreams; "
                                  "see docs/DESIGN.md)", choices=("demo", "superb"))
    head_seeds: int = param(3, "every head is fitted with this many seeds (seed, seed+1, ...); the report gives "
                               "the mean and standard deviation of the test scores; the first seed also searches "
                               "the learning rate", min=1)
    lr: list[float] | None = param(None, "learning rates of heads and layer weights; each is tried and the "
                                         "one with the best valid score kept (null: the protocol's per task; demo: "
                                         "SID and ER [1e-2, 1e-3], PR [1e-1, 3e-2], ASR [1e-2]; superb: 1e-1 to "
                                         "1e-5)", above=0.0)
    batch_size: int | None = param(None, "utterances per batch (null: the protocol's; demo 16)", min=1)
    max_epochs: int | None = param(None, "train for this many epochs, validating after each (null: the protocol's; "
                                         "demo: SID and ER 100, PR 80, ASR 20; superb counts updates)", min=1)
    patience: int | None = param(None, "stop after this many validations without a better score (null: the "
                                       "protocol's; demo: SID and ER 10, PR 15, ASR 5; superb: none)", min=1)
    layer_norm: bool | None = param(None, "layer-normalise each hidden state before the weighted sum (null: the "
                                          "protocol's; off in both)")
    standardize: bool | None = param(None, "standardise each hidden state per dimension with the mean and std of "
                                           "its training frames, a fixed affine map so that the layer weights "
                                           "compare states, not their scales (null: the protocol's; demo on, "
                                           "superb off)")
    asr_hidden: int | None = param(None, "hidden units per direction of the ASR BiLSTM (null: the protocol's; demo "
                                         "96, superb 1024)", min=1)
    asr_layers: int | None = param(None, "BiLSTM layers of the ASR head (null: the protocol's; 2)", min=1)
    phonemize_voice: str = param("en-us", "eSpeak NG voice that phonemises transcripts for PR when the corpus "
                                          "has text but no phones, for utterances without a language; an "
                                          "utterance's language (ISO 639 code) picks its own voice")
    batch_seconds: float = param(60.0, "audio seconds per batch when computing hidden states", min=1.0)
    hidden_dtype: str = param("float16", "storage type of cached hidden states", choices=("float16", "float32"))
    max_ram_gb: float = param(8.0, "hidden states of the evaluated utterances are held in memory as float32 up to "
                                   "this size (read once for every task, epoch and seed), else read from the "
                                   "cache per batch", above=0.0)
    se_noise: str = param("demo", "SE mixes noise into clean utterances: demo (white, pink or brown noise) or a "
                                  "folder of noise recordings (wav/flac/ogg)")
    se_snr_db: list[float] = param([2.5, 17.5], "SE: the SNR of each mixture is drawn from this range in dB "
                                                "(VoiceBank-DEMAND's test SNRs: 2.5 to 17.5)")
    se_noisy: str | None = param(None, "SE: a shard folder of noisy recordings with the same keys as --shards "
                                       "(VoiceBank-DEMAND's noisy and clean folders sharded alike) instead of mixing")
    vc_target: str | None = param(None, "VC: the target speaker (null: the first speaker, sorted, with clean "
                                        "training and valid utterances); every other speaker's test utterances are "
                                        "converted")
    seed: int = param(1234, "random seed of head initialisation, batch order, noise mixtures and random-init "
                            "upstreams")
    workers: int = param(2, "head fits run side by side in this many processes, one thread each (1: one after "
                            "another in this process; on CUDA always 1); results do not depend on it", min=1)
    device: str = param("auto", "auto picks CUDA when present", choices=("auto", "cpu", "cuda"))

    def check(self) -> None:
        if len(self.se_snr_db) != 2 or self.se_snr_db[0] > self.se_snr_db[1]:
            raise UserError(f"se_snr_db: expected [low, high] in dB, got {self.se_snr_db}")
        if not self.tasks:
            raise UserError("tasks: give at least one task (sid, pr, asr, er, se, vc, lid, cls:COLUMN)")
        for task in self.tasks:
            if task not in self.TASK_NAMES and not re.fullmatch(r"cls:[A-Za-z0-9_][A-Za-z0-9_-]*", task):
                raise UserError(f"tasks: {task!r} is not a task (sid, pr, asr, er, se, vc, lid, or cls:COLUMN "
                                f"with COLUMN a metadata column of letters, digits, _ and -)")


# --------------------------------------------------------------------------- sections built from the library

LIBRARY_SECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    # class name here: (params.yaml section, the library settings classes it holds)
    "SynthParams": ("synth", ("progre.data.synth:SynthSettings",)),
    "ShardParams": ("shard", ("progre.data.sharding:ShardSettings",)),
    "PretrainParams": ("pretrain", ("progre.train.pretrain:ModelChoice", "progre.train.data:PlanSettings",
                                    "progre.train.loop:TrainRecipe", "progre.train.loop:RunControl")),
    "ReportParams": ("report", ("progre.report:ReportSettings",)),
}
"""Built on first use (`progre --help` need not import the library, and with it torch)."""


@cache
def _library_section(class_name: str) -> type[Params]:
    name, paths = LIBRARY_SECTIONS[class_name]
    classes = []
    for path in paths:
        module, _, attr = path.partition(":")
        classes.append(getattr(importlib.import_module(module), attr))
    return section(name, *classes)


def __getattr__(name: str) -> Any:
    if name in LIBRARY_SECTIONS:
        return _library_section(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def all_sections() -> dict[str, type[Params]]:
    """Every params section by name, in stage order."""
    classes = [_library_section(n) if n in LIBRARY_SECTIONS else globals()[n] for n in SECTION_CLASSES]
    return {cls.SECTION: cls for cls in classes}


SECTION_CLASSES = ("SynthParams", "ShardParams", "FeaturesParams", "ClusterParams", "SpeakersParams",
                   "PretrainParams", "EvaluateParams", "ReportParams")
