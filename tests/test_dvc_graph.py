"""The DVC graph tells the truth: code deps are exactly each stage's imports, and stages are leaves."""
import ast
import subprocess
import sys

import pytest
import yaml
from dvc_deps import ROOT, code_deps, import_closure, stage_modules

STAGES = stage_modules()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_exactly_the_import_closure(stage):
    module, deps = STAGES[stage]
    closure = import_closure(module)
    declared = code_deps(deps)
    assert not closure - declared, f"dvc.yaml stage {stage} misses {sorted(closure - declared)}; " \
                                   "run python tests/dvc_deps.py"
    assert not declared - closure, f"dvc.yaml stage {stage} lists {sorted(declared - closure)}, which it never imports"


def test_the_closure_follows_imports_inside_functions(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "weldnet").mkdir()
    (tmp_path / "stages" / "s.py").write_text("def main():\n    from weldnet.a import f\n")
    (tmp_path / "weldnet" / "a.py").write_text("import weldnet.b\n")
    (tmp_path / "weldnet" / "b.py").write_text("import numpy\n")
    (tmp_path / "weldnet" / "unused.py").write_text("")
    assert import_closure("stages.s", tmp_path) == {"stages/s.py", "weldnet/a.py", "weldnet/b.py"}


def test_no_stage_imports_another_stage():
    offenders = []
    for path in sorted((ROOT / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n == "stages" or n.startswith("stages.")]
    assert not offenders


@pytest.mark.parametrize("module", ["stages.generate", "stages.ingest", "stages.preprocess", "stages.imbalance",
                                    "stages.configure", "weldnet.core.params"])
def test_stages_that_do_not_train_do_not_import_torch(module):
    code = f"import sys, {module}; heavy = [m for m in ('torch', 'cleanlab', 'sklearn') if m in sys.modules]; " \
           "print(','.join(heavy))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_train_stages_depend_on_their_resolved_configuration_not_on_params():
    train = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["do"]
    assert "params" not in train
    assert "data/strategies/${item}.json" in train["deps"]
    assert not any(out.get("persist") for out in train["outs"] if isinstance(out, dict))
    assert not any("checkpoints" in str(out) for out in train["outs"])   # checkpoints would switch off the run-cache


@pytest.mark.parametrize("stage", ["pretrain", "train"])
def test_training_stages_keep_the_run_cache(stage):
    """DVC saves no run-cache entry for a stage with a persistent output, or with an uncached
    output that is not a metric or a plot; training stages must have neither."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    spec = spec.get("do", spec)
    options = [next(iter(out.values())) for out in spec["outs"] if isinstance(out, dict)]
    assert not any(opt.get("persist") or opt.get("cache") is False for opt in options)
