"""Which keys of params.yaml a stage reads: the hook behind tests/test_pipeline.py's exact-params check.

With ``WELDNET_PARAMS_HOOK=params_reads:record`` (this folder on ``PYTHONPATH``) and
``WELDNET_PARAMS_LOG`` naming a file, every stage's ``load_checked_params`` returns a
read-only view of its params that notes the dotted path of each key read, and
appends ``{"module": ..., "reads": [...]}`` to that file when the stage exits.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import os
import sys
from pathlib import Path

from weldnet.core.params import Params

LOG_ENV = "WELDNET_PARAMS_LOG"
HOOK = "params_reads:record"


class _View:
    """A read-only stand-in for a params dataclass that notes the dotted path of every key read."""

    __slots__ = ("_obj", "_path", "_reads")

    def __init__(self, obj: object, path: str, reads: set[str]):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_reads", reads)

    def __getattr__(self, name: str):
        obj, path, reads = (object.__getattribute__(self, k) for k in ("_obj", "_path", "_reads"))
        attr = getattr(type(obj), name, None)
        if isinstance(attr, property):
            return attr.fget(self)                     # properties and methods read through the view
        if callable(attr) and not isinstance(attr, type) and name not in obj.__dict__:
            return attr.__get__(self)
        key = f"{path}.{name}" if path else name
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return _view(value, key, reads)
        reads.add(key)
        return value

    def __setattr__(self, name: str, value: object) -> None:
        raise dataclasses.FrozenInstanceError(name)


_VIEWS: dict[type, type] = {}


def _view(obj: object, path: str, reads: set[str]) -> _View:
    cls = type(obj)
    if cls not in _VIEWS:   # dataclasses.asdict, fields() and replace() accept the view, reading every field through it

        def __new__(view_cls: type, *args: object, **changes: object) -> object:
            if changes and not args:           # dataclasses.replace(view, ...): the plain dataclass, changed
                return cls(**changes)
            return object.__new__(view_cls)

        _VIEWS[cls] = type(f"Read{cls.__name__}", (_View,), {"__slots__": (), "__new__": __new__,
                                                              "__dataclass_fields__": cls.__dataclass_fields__})
    return _VIEWS[cls](obj, path, reads)


def record_reads(params: Params, log: Path) -> Params:
    """A view of ``params`` that appends the keys read to ``log`` when the process exits."""
    reads: set[str] = set()
    main = sys.modules.get("__main__")
    module = getattr(getattr(main, "__spec__", None), "name", None) or sys.argv[0]

    def write() -> None:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"module": module, "reads": sorted(reads)}) + "\n")

    atexit.register(write)
    return _view(params, "", reads)  # type: ignore[return-value]


def record(params: Params) -> Params:
    """The hook: :func:`record_reads` into the file ``WELDNET_PARAMS_LOG`` names."""
    return record_reads(params, Path(os.environ[LOG_ENV]))
