"""Typed, validated parameters: every stage loads its section before doing any work.

``build(Section, mapping, "train")`` turns a ``params.yaml`` section into a frozen
dataclass, or raises :class:`ParamError` with one line that names the key and the
fix. Stages run under :func:`run_stage`, which prints that line instead of a
traceback.
"""
from __future__ import annotations

import codecs
import dataclasses
import math
import reprlib
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


# params.yaml is small; these bounds make a hostile one fail fast, in bounded memory.
MAX_PARAMS_BYTES = 1 << 20   # 1 MiB
MAX_DEPTH = 50               # nesting of mappings and lists
MAX_VALUES = 100_000         # values once every alias (*name) is expanded
MAX_INT = 2 ** 53            # any integer param beyond this is a typo (and would overflow numpy or torch)


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """params.yaml as a mapping, or ParamError with one line naming the problem and its line.

    Refused: a file that is not a regular file, over MAX_PARAMS_BYTES, not UTF-8,
    holding a NUL byte, nesting deeper than MAX_DEPTH, expanding through aliases
    to more than MAX_VALUES values (an alias bomb) or to itself, naming a key
    twice in one mapping, or not valid YAML. The checks run on YAML's event
    stream before any value is built, so none of them can blow up.
    """
    path = Path(path)
    try:
        if not path.is_file():
            if not path.exists():
                raise FileNotFoundError
            raise ParamError(f"{path} is not a regular file (a folder, FIFO or device); give a YAML file")
        with path.open("rb") as fh:
            data = fh.read(MAX_PARAMS_BYTES + 1)
    except FileNotFoundError:
        raise ParamError(f"{path} not found: run from the repository root") from None
    except OSError as exc:
        raise ParamError(f"cannot read {path} ({exc.strerror or exc})") from None
    if len(data) > MAX_PARAMS_BYTES:
        raise ParamError(f"{path} is over {MAX_PARAMS_BYTES >> 20} MiB; params.yaml holds settings, not data")
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ParamError(f"{path} is not UTF-8 text (byte {data[exc.start]:#04x} at line {line}); "
                         "save it as UTF-8") from None
    if "\0" in text:
        raise ParamError(f"{path} holds a NUL byte at line {_line_of(text, text.index(chr(0)))}; remove it")
    try:
        _check_events(text, path)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_duplicate_keys(node, path)
            params = loader.construct_document(node) if node is not None else {}
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ParamError(_yaml_problem(exc, text, path)) from None
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParamError(f"{path} must be a mapping of sections, got {type(params).__name__}")
    return params


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _check_events(text: str, path: Path) -> None:
    """Depth and expanded size of the document, from YAML events (iterative: no recursion, no values built)."""
    loader = yaml.SafeLoader(text)
    try:
        open_nodes: list[list[Any]] = []        # [anchor, values so far] of each open mapping or list
        sizes: dict[str, int] = {}              # anchor -> values it expands to
        while loader.check_event():
            event = loader.get_event()
            line = event.start_mark.line + 1
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                if len(open_nodes) >= MAX_DEPTH:
                    raise ParamError(f"{path} nests more than {MAX_DEPTH} levels deep at line {line}; "
                                     "params.yaml sections are a few levels deep")
                open_nodes.append([event.anchor, 1])
                continue
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, count = open_nodes.pop()
                if anchor is not None:
                    sizes[anchor] = count
            elif isinstance(event, yaml.AliasEvent):
                if any(anchor == event.anchor for anchor, _ in open_nodes):
                    raise ParamError(f"{path} line {line}: alias *{_key_text(event.anchor)} refers to a value "
                                     "that holds it (a recursive alias); write the value out")
                count = sizes.get(event.anchor, 1)
            elif isinstance(event, yaml.ScalarEvent):
                count = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            else:
                continue
            if open_nodes:
                open_nodes[-1][1] += count
                count = open_nodes[-1][1]
            if count > MAX_VALUES:
                raise ParamError(f"{path} line {line}: more than {MAX_VALUES:,} values once its aliases (*name) "
                                 "are expanded (an alias bomb?); params.yaml holds settings, write them out")
    finally:
        loader.dispose()


def _check_duplicate_keys(root: yaml.Node, path: Path) -> None:
    """ParamError on the first key (in file order) given twice in one mapping; YAML merge keys (<<) are fine."""
    first: tuple[int, str, int] | None = None
    seen_nodes: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                todo += [key, value]
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                ident = (key.tag, key.value)
                if ident in lines and (first is None or line < first[0]):
                    first = (line, key.value, lines[ident])
                lines.setdefault(ident, line)
        elif isinstance(node, yaml.SequenceNode):
            todo += node.value
    if first is not None:
        line, key, earlier = first
        raise ParamError(f"{path} line {line}: key {shown(key)} is given twice in one mapping "
                         f"(first at line {earlier}); keep one")


def _yaml_problem(exc: yaml.YAMLError, text: str, path: Path) -> str:
    """One line for a YAML error: what is wrong and at which line."""
    if isinstance(exc, yaml.reader.ReaderError):
        return (f"{path} is not valid YAML at line {_line_of(text, exc.position)}: "
                f"character {shown(chr(exc.character) if isinstance(exc.character, int) else exc.character)} "
                "is not allowed; remove it")
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    if getattr(exc, "context", None) == "expected a single document in the stream":
        return f"{path} holds more than one YAML document (another starts{where}); keep one document"
    problem = getattr(exc, "problem", None) or str(exc)
    return _one_line(f"{path} is not valid YAML{where}: {problem}")


# ------------------------------------------------------------------ one-line messages about any value
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 60, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


SHOWN_CHARS = 80


def shown(value: Any) -> str:
    """``repr(value)`` cut to at most SHOWN_CHARS characters on one line, however large or nested the value is."""
    text = _REPR.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def _key_text(key: Any) -> str:
    """A key as it appears in a 'section.key' path: itself when short and printable, else shown()."""
    text = str(key) if isinstance(key, (str, int, float, bool)) or key is None else shown(key)
    return text if len(text) <= 64 and text.isprintable() else shown(text)


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def section(params: Mapping[str, Any], key: str) -> Any:
    if key not in params:
        raise ParamError(f"params.yaml has no '{key}' section; add it (see docs/parameters.md)")
    return params[key]


def check_choice(value: str, valid: Iterable[str], where: str) -> str:
    valid = list(valid)
    if value not in valid:
        raise ParamError(f"{where}: unknown name {shown(value)}; valid: {', '.join(valid)}")
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
        raise ParamError(f"{where} = {shown(value)} is out of range; it must lie in {left}{lo}, {hi}{right}")
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
            raise ParamError(f"{where}: unknown value {shown(value)}; valid: {', '.join(map(str, args))}")
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
        raise ParamError(f"{where} = {shown(value)} must be {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamError(f"{where} = {shown(value)} must be {_type_name(tp)}")
        items = [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParamError(f"{where} must be {_type_name(tp)}, got {shown(value)}")
        return {str(k): _convert(v, args[1], f"{where}.{_key_text(k)}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamError(f"{where} = {shown(value)} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"{where} = {shown(value)} must be an integer")
        if not -MAX_INT <= value <= MAX_INT:
            raise ParamError(f"{where} = {shown(value)} is beyond any value a run can use (|n| <= 2**53); "
                             "give a realistic value")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"{where} = {shown(value)} must be a number")
        if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
            raise ParamError(f"{where} = {shown(value)} is beyond any value a run can use; give a realistic value")
        if not math.isfinite(value):
            raise ParamError(f"{where} = {shown(value)} is not a finite number (NaN or inf); give a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamError(f"{where} = {shown(value)} must be a string")
        return value
    raise TypeError(f"unsupported parameter type {tp!r} at {where}")


def build(cls: type[T], mapping: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown keys, missing keys and wrong types raise ParamError."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ParamError(f"{where} must be a mapping of keys, got {shown(mapping)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in mapping if k not in fields]
    if unknown:
        raise ParamError(f"{where or 'params.yaml'}: unknown key {shown(unknown[0])}; valid keys: {', '.join(fields)}")
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
    """Run a stage's main(); a ParamError, StageError, OSError or MemoryError ends it with one line and exit code 2.

    A stage killed from outside (SIGKILL, the kernel's out-of-memory killer) cannot print
    anything: DVC reports it as ``exited with -9``. A killed worker process is reported by
    weldnet.core.pool as a StageError, in one line. Its outputs are never half-written, since
    every writer renames a complete temporary file into place (weldnet.core.files).
    """
    from weldnet.core.threads import thread_budget

    try:
        try:
            thread_budget()
        except ValueError as exc:
            raise StageError(str(exc)) from None
        main()
    except ParamError as exc:
        print(f"error in params.yaml: {_one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except StageError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:           # a full disk, a file-size limit, an I/O error outside the shared writers
        print(f"error: {_one_line(os_error_line(exc))}", file=sys.stderr)
        sys.exit(2)
    except MemoryError:
        print("error: out of memory (MemoryError); free memory, run fewer stages at once (dvc queue --jobs) "
              "or lower loader.cache_mb and the batch sizes", file=sys.stderr)
        sys.exit(2)


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: the file it names (if any) and the cause."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    name = exc.filename
    if isinstance(name, bytes):
        name = name.decode("utf-8", "backslashreplace")
    where = "" if name is None else " " + str(name).encode("utf-8", "backslashreplace").decode("utf-8")
    return f"I/O error on{where}: {cause}" if where else f"I/O error: {cause}"
