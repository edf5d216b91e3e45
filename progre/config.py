"""The CLI's parameters: one params.yaml section per stage, built from the library's settings.

Every setting is declared once, in the library module that uses it (`progre.settings.setting`: type,
default, allowed values, help). A section's class here is those settings classes' fields side by side
(`section`), so `progre params`, the validation of params.yaml and `--set`, and the library agree by
construction. The few parameters a stage hands over apart from a settings object (a device to
resolve) are declared here. A stage that runs in several iterations reads its section and then an
overlay section `<section>_iter<N>` with what differs, so DVC can track each iteration's parameters
separately.

Unknown sections and keys, wrong types and out-of-range values end with a one-line `UserError` that
names them, e.g. ``params.yaml: pretrain.lr: expected a number, got 'fast'`` or ``params.yaml: unknown
section sahrd (did you mean shard?)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
from functools import cache
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from .device import DEVICES
from .errors import UserError
from .io import read_utf8
from .settings import checked_values, describe, setting

P = TypeVar("P", bound="Params")
S = TypeVar("S")

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
    """The whole params.yaml as a dict ({} when path is None); every top-level name must be a section
    (`section_names`)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise UserError(f"params file {path} does not exist")
    text = read_utf8(path, remedy="save it as UTF-8", encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    names = section_names()
    for name in data:
        if not (isinstance(name, str) and re.sub(r"_iter\d+$", "", name) in names):
            close = difflib.get_close_matches(str(name), names, n=1)
            raise UserError(f"{path}: unknown section {name}{f' (did you mean {close[0]}?)' if close else ''}; "
                            f"sections are {', '.join(names)} and their overlays <section>_iter<N>")
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


# The device is resolved in the stage (`device.resolve_device`) and handed to the library as a torch.device:
# its parameter is declared here, once per meaning.

@dataclass(frozen=True)
class AutoDevice:
    device: str = setting("auto", "auto picks CUDA when present", choices=DEVICES)


@dataclass(frozen=True)
class ClusterDevice:
    device: str = setting("auto", "auto: CUDA when torch sees it, for the features of unsampled utterances, and k-means "
                                "on the GPU when FAISS sees one too (faiss-gpu); cpu: both on the CPU; cuda: both on "
                                "the GPU", choices=DEVICES)


@dataclass(frozen=True)
class SpeakersDevice:
    device: str = setting("auto", "where the utterance embeddings are computed (k-means runs on the CPU); auto picks "
                                "CUDA when present", choices=DEVICES)


# --------------------------------------------------------------------------- sections built from the library

LIBRARY_SECTIONS: dict[str, tuple[str, tuple[str, ...], type | None]] = {
    # class name here: (params.yaml section, the library settings classes it holds, its parameters declared here)
    "SynthParams": ("synth", ("progre.data.synth:SynthSettings",), None),
    "ShardParams": ("shard", ("progre.data.sharding:ShardSettings",), None),
    "FeaturesParams": ("features", ("progre.features.writing:FeatureSettings",), AutoDevice),
    "ClusterParams": ("cluster", ("progre.cluster.labelling:ClusterSettings",), ClusterDevice),
    "SpeakersParams": ("speakers", ("progre.cluster.speakers:SpeakerSettings",), SpeakersDevice),
    "PretrainParams": ("pretrain", ("progre.train.run:ModelChoice", "progre.train.batches:PlanSettings",
                                    "progre.train.loop:TrainRecipe", "progre.train.loop:RunControl",
                                    "progre.train.launch:LaunchSettings"), None),
    "EvaluateParams": ("evaluate", ("progre.downstream.evaluation:EvaluationSettings",), AutoDevice),
    "ReportParams": ("report", ("progre.report:ReportSettings",), None),
}
"""Built on first use (`progre --help` need not import the library, and with it torch)."""


@cache
def _library_section(class_name: str) -> type[Params]:
    name, paths, extra = LIBRARY_SECTIONS[class_name]
    classes = []
    for path in paths:
        module, _, attr = path.partition(":")
        classes.append(getattr(importlib.import_module(module), attr))
    return section(name, *classes, extra=extra)


def __getattr__(name: str) -> Any:
    if name in LIBRARY_SECTIONS:
        return _library_section(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def section_names() -> list[str]:
    """The params sections' names, in stage order (without importing the library)."""
    return [name for name, _, _ in LIBRARY_SECTIONS.values()]


def all_sections() -> dict[str, type[Params]]:
    """Every params section by name, in stage order."""
    classes = [_library_section(name) for name in LIBRARY_SECTIONS]
    return {cls.SECTION: cls for cls in classes}
