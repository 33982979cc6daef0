"""The folder tree is the architecture: each sub-package of weldnet imports only from the packages below it."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lowest first: a package may import from itself and from the packages before it, never after.
LAYERS = ("core", "synth", "photos", "strategies", "train", "audit", "scoring", "triage")


def _weldnet_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.startswith("weldnet.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("weldnet"):
            names += [node.module] if node.module != "weldnet" else [f"weldnet.{a.name}" for a in node.names]
    return names


def upward_imports(root: Path = ROOT) -> list[str]:
    """'file imports module' for every import that reaches a higher layer (or a module outside the layers)."""
    bad = []
    for path in sorted((root / "weldnet").rglob("*.py")):
        parts = path.relative_to(root / "weldnet").parts
        if len(parts) == 1:
            if parts[0] != "__init__.py":
                bad.append(f"{path.name} sits outside the sub-packages")
            continue
        mine = LAYERS.index(parts[0])
        for name in _weldnet_imports(path):
            layer = name.split(".")[1]
            if layer not in LAYERS or LAYERS.index(layer) > mine:
                bad.append(f"{path.relative_to(root)} imports {name}")
    return bad


def test_every_package_imports_only_downward():
    assert upward_imports() == []


def test_the_check_catches_an_upward_import(tmp_path):
    (tmp_path / "weldnet" / "core").mkdir(parents=True)
    (tmp_path / "weldnet" / "core" / "a.py").write_text("from weldnet.train.loop import fit\n")
    (tmp_path / "weldnet" / "train").mkdir()
    (tmp_path / "weldnet" / "train" / "loop.py").write_text("import weldnet.core.a\n")
    assert upward_imports(tmp_path) == [f"{Path('weldnet/core/a.py')} imports weldnet.train.loop"]


def test_stages_do_not_import_stages():
    for path in sorted((ROOT / "stages").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("stages"), f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("stages") for a in node.names), path.name
