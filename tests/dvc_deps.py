"""The code each DVC stage runs: the import closure of its ``python -m`` module within this repository.

    python tests/dvc_deps.py          # prints, per stage, the code deps dvc.yaml should list
    python tests/dvc_deps.py --write  # rewrites those deps in dvc.yaml, leaving every other line as it is

tests/test_dvc_graph.py fails when a stage's deps in dvc.yaml miss a file of that
closure, or list a Python file outside it, so invalidation stays exact: editing a
module re-runs precisely the stages that import it.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stages", "weldnet")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The repository file of a dotted module name, or None for one from outside (torch, numpy, ...)."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _trivial(path: Path) -> bool:
    """A package __init__ with nothing but a docstring: importing it cannot change a result."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return path.name == "__init__.py" and all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                                              for n in body)


def import_closure(module: str, root: Path = ROOT) -> set[str]:
    """Repository-relative POSIX paths of every file ``python -m module`` can import (lazy imports included)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop(), root)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += _imported(path)
    return {p.relative_to(root).as_posix() for p in seen if not _trivial(p)}


def stage_modules(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, tuple[str, list[str]]]:
    """stage name -> (the module its cmd runs, its declared deps)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        match = re.search(r"python -m ([\w.]+)", str(body["cmd"]))
        if match:
            out[name] = (match.group(1), [str(d) for d in body.get("deps", [])])
    return out


def code_deps(deps: list[str]) -> set[str]:
    return {d for d in deps if d.endswith(".py") and d.split("/")[0] in PACKAGES}


def rewrite_code_deps(text: str, stages: dict[str, tuple[str, list[str]]]) -> str:
    """dvc.yaml text with each stage's code deps replaced by its import closure, in sorted order."""
    lines, out, current, i = text.split("\n"), [], None, 0
    while i < len(lines):
        line = lines[i]
        name = re.match(r"^  (\w+):\s*$", line)
        if name:
            current = name.group(1)
        deps = re.match(r"^(\s+)deps:\s*$", line)
        if deps and current in stages:
            indent = deps.group(1)
            out.append(line)
            i += 1
            while i < len(lines) and re.match(rf"^{indent}  - ", lines[i]):
                if not re.search(r"- (stages|weldnet)/.*\.py\s*$", lines[i]):
                    out.append(lines[i])
                i += 1
            out += [f"{indent}  - {path}" for path in sorted(import_closure(stages[current][0]))]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    if "--write" in sys.argv:
        path = ROOT / "dvc.yaml"
        path.write_text(rewrite_code_deps(path.read_text(), stage_modules(path)))
    for stage, (module, deps) in stage_modules().items():
        print(f"{stage}:")
        for path in sorted(import_closure(module)):
            print(f"  - {path}")
