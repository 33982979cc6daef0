"""Typed, validated parameters: every stage loads its section before doing any work.

``build(Section, mapping, "train")`` turns a ``params.yaml`` section into a frozen
dataclass, or raises :class:`ParamError` with one line that names the key and the
fix. Stages run under :func:`run_stage`, which prints that line instead of a
traceback.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ParamError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


class StageError(RuntimeError):
    """A stage cannot go on; the message says why and what to do, in one line."""


class DataError(StageError):
    """The input data cannot be used as it is."""


class TrainingError(StageError):
    """Training went wrong (a NaN or inf loss, a checkpoint that cannot be used)."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            params = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ParamError(f"{path} not found: run from the repository root") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(params, dict):
        raise ParamError(f"{path} must be a mapping of sections, got {type(params).__name__}")
    return params


def section(params: Mapping[str, Any], key: str) -> Any:
    if key not in params:
        raise ParamError(f"params.yaml has no '{key}' section; add it (see README, Parameters)")
    return params[key]


def check_choice(value: str, valid: Iterable[str], where: str) -> str:
    valid = list(valid)
    if value not in valid:
        raise ParamError(f"{where}: unknown name '{value}'; valid: {', '.join(valid)}")
    return value


def check_range(value: float, where: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ParamError(f"{where} = {value!r} is out of range; it must lie in {left}{lo}, {hi}{right}")
    return value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping to {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ParamError(f"{where}: unknown value {value!r}; valid: {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ParamError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ParamError(f"{where} = {value!r} must be {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamError(f"{where} = {value!r} must be {_type_name(tp)}")
        items = [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParamError(f"{where} must be {_type_name(tp)}, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamError(f"{where} = {value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"{where} = {value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"{where} = {value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamError(f"{where} = {value!r} must be a string")
        return value
    raise TypeError(f"unsupported parameter type {tp!r} at {where}")


def build(cls: type[T], mapping: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown keys, missing keys and wrong types raise ParamError."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ParamError(f"{where} must be a mapping of keys, got {mapping!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in mapping if k not in fields]
    if unknown:
        raise ParamError(f"{where or 'params.yaml'}: unknown key '{unknown[0]}'; valid keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name in mapping:
            values[name] = _convert(mapping[name], hints[name], f"{where}.{name}" if where else name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ParamError(f"{where or 'params.yaml'}: missing key '{name}' ({_type_name(hints[name])})")
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(where)
    return obj


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a ParamError or StageError ends it with one line on stderr and exit code 2."""
    try:
        main()
    except ParamError as exc:
        print(f"error in params.yaml: {exc}", file=sys.stderr)
        sys.exit(2)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
