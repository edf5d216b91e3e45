"""The one declaration of every setting: library settings dataclasses whose fields carry their help
text and allowed values, and the reading of such a dataclass from plain values with one-line errors.

A library module declares what it needs as a frozen dataclass whose fields are made by `setting`:

    @dataclass(frozen=True)
    class ShardSettings:
        max_shard_mb: float = setting(64.0, "upper bound of one tar shard in MB", min=0.01)

The CLI's params sections (`progre.config`) are built from these classes, so a default, a range
or a help text exists in one place. `from_values` reads a dataclass from a mapping (params.yaml,
`--set`), converting and checking every value against its field. Cross-field rules live in the
dataclass's own `__post_init__` and raise `UserError`.

Nothing here knows about params.yaml, sections or the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field
from typing import Any, TypeVar

import yaml

from .errors import UserError

S = TypeVar("S")


def setting(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
            max: float | None = None, above: float | None = None) -> Any:
    """A settings field: its default, help text and allowed values (`choices`, or a range: `min`/`max`
    inclusive, `above` exclusive; numbers must be finite). A list default is copied for every instance."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "above": above}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def default_of(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def type_name(tp: Any) -> str:
    """A type annotation in words: "float", "int or null", "list of str"."""
    if tp in (int, float, str, bool):
        return tp.__name__
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return f"{type_name(inner[0])} or null"
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}"
    return str(tp)


def describe(fields: list[dataclasses.Field], hints: dict[str, Any]) -> str:
    """One line per setting: name, type, default and help (for --help texts and `progre params`)."""
    lines = []
    for f in fields:
        default = default_of(f)
        if isinstance(default, tuple):
            default = list(default)
        choices = f.metadata.get("choices")
        extra = f" (one of {', '.join(map(str, choices))})" if choices else ""
        lines.append(f"{f.name}: {type_name(hints[f.name])} = {default!r}. {f.metadata.get('help', '')}{extra}")
    return "\n".join(lines)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert `value` to the annotated type `tp` or raise a UserError naming `where`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        fixed = origin is tuple and args and args[-1] is not Ellipsis
        if fixed and len(value) != len(args):
            raise UserError(f"{where}: expected a list of {len(args)} values, got {list(value)!r}")
        items = [coerce(v, args[i] if fixed else args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise UserError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise UserError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported setting type {tp} at {where}")


def check_value(f: dataclasses.Field, value: Any, where: str) -> None:
    """A UserError naming `where` if `value` is not one of the field's choices or outside its range."""
    if value is None:
        return
    choices = f.metadata.get("choices")
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if choices and v not in choices:
            raise UserError(f"{where}: {v!r} is not one of {', '.join(map(str, choices))}")
        lo, hi, above = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("above")
        if lo is not None and v < lo:
            raise UserError(f"{where}: {v!r} is below the minimum {lo}")
        if above is not None and v <= above:
            raise UserError(f"{where}: {v!r} must be above {above}")
        if hi is not None and v > hi:
            raise UserError(f"{where}: {v!r} is above the maximum {hi}")


def checked_values(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """`values` converted to the types of `cls`'s fields and checked against them; an unknown key is a
    UserError with a "did you mean" hint. `where` prefixes messages, e.g. "params.yaml: pretrain."."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            raise UserError(f"{where}{key}: unknown key{f' (did you mean {close[0]}?)' if close else ''}")
        out[key] = coerce(value, hints[key], f"{where}{key}")
        check_value(fields[key], out[key], f"{where}{key}")
    return out


def from_values(cls: type[S], values: dict[str, Any], where: str = "") -> S:
    """`cls` made from plain values (unknown keys, wrong types and out-of-range values are one-line
    UserErrors; fields not given keep their defaults)."""
    return cls(**checked_values(cls, values, where))
