"""Every benchmark starts: run as a script from outside the repository, ``--help`` exits 0."""
import subprocess
import sys

import pytest
from conftest import ROOT

BENCHMARKS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


def test_the_benchmarks_are_found():
    assert {"preprocess_speed.py", "train_speed.py", "scale.py", "audit_accuracy.py"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_starts(name, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()


def test_the_gpu_check_starts_and_summarises(tmp_path):
    script = ROOT / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "usage: bash benchmarks/gpu_check.sh" in done.stdout
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the check would run for real (benchmarks/gpu_check.sh)")
    done = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "GPU_CHECK_S": "30"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA GPU visible" in done.stdout
    assert (tmp_path / "out" / "gpu_check.json").exists()


def test_the_scale_benchmark_picks_a_trained_strategy_of_the_study():
    """Its reduced study names stages of dvc.yaml: never the ceiling (``<name>@natural``) nor a reused model."""
    import yaml

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scale

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    best = scale.best_strategy()
    assert best in params["study"] and not (params["strategies"][best] or {}).get("reuse")


def test_stage_times_names_the_ceiling_apart_from_the_strategy_it_retrains():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from stage_times import stage_name

    train = ["-m", "stages.train", "--config", "data/strategies/baseline.json", "--split"]
    assert stage_name([*train, "data/split.csv", "--out", "models/strategies/baseline"]) == "train@baseline"
    assert stage_name([*train, "data/split_natural.csv", "--out", "models/strategies/baseline@natural"]) == \
        "train@baseline@natural"
    assert stage_name(["-m", "stages.evaluate", "--split", "data/split.csv"]) == "evaluate"


@pytest.mark.parametrize("flags, unit", [("fpu avx2 avx512f avx512_bf16 amx_tile", "AMX"),
                                         ("fpu avx2 avx512f avx512_bf16", "AVX512-BF16"),
                                         ("fpu avx2 avx512f", "AVX-512"), ("fpu avx2", "AVX2"), ("fpu", "no AVX2")])
def test_stage_times_names_the_cpu_and_its_widest_unit(tmp_path, flags, unit, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from stage_times import cpu_description

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    assert cpu_description(info) == f"Some CPU, {unit}"
    assert cpu_description(tmp_path / "missing") == "unknown CPU"
