"""Fault injection for params.yaml and for paths: a hostile or broken file gets one line and exit code 2.

Names that become parts of paths must be safe names; no stage deletes anything
outside its declared outputs; params.yaml that is not UTF-8, holds a NUL byte,
nests too deeply, expands through aliases or names a key twice is refused with
one line, in bounded time and memory.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import params_yaml

from weldnet.core.config import ParamError, StageError, load_params
from weldnet.core.params import check_params

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def run_module(cwd: Path, *argv: str, memory_mib: int | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python -m argv`` in ``cwd``; with ``memory_mib`` its address space is capped (a bomb then dies)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    limit = None
    if memory_mib is not None:
        import resource

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mib << 20, memory_mib << 20))
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit)


def assert_one_line_exit_2(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 600, done.stderr[:2000]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def check_file(tmp_path: Path, data: bytes, *needles: str, **kw) -> str:
    (tmp_path / "params.yaml").write_bytes(data)
    return assert_one_line_exit_2(run_module(tmp_path, "weldnet.core.params", **kw), *needles)


def with_section(**sections) -> dict:
    return {**PARAMS, **sections}


# ------------------------------------------------------------------ names that become parts of paths

UNSAFE = ["../../somewhere", "a/b", "a\\b", "..", ".hidden", "-rf", "", "a b", "a\nb", "a.b", "x" * 65,
          "caf\u00e9", "a\0b"]


def strategy_named(name: str) -> dict:
    return with_section(strategies={**PARAMS["strategies"], name: {"loss": "focal"}})


def task_named(name: str) -> dict:
    return with_section(tasks={**PARAMS["tasks"], name: PARAMS["tasks"]["clamp_detection"]})


def class_named(name: str) -> dict:
    task = {"rigs": ["bluebox"], "default": "clamp_detected", "classes": {name: ["No Clamp Used"]}}
    return with_section(tasks={**PARAMS["tasks"], "clamp_detection": task})


def default_named(name: str) -> dict:
    task = {"rigs": ["bluebox"], "default": name, "classes": {"no_clamp": ["No Clamp Used"]}}
    return with_section(tasks={**PARAMS["tasks"], "clamp_detection": task})


@pytest.mark.parametrize("make,where", [(strategy_named, "strategies"), (task_named, "tasks"),
                                        (class_named, "tasks.clamp_detection.classes"),
                                        (default_named, "tasks.clamp_detection.default")])
@pytest.mark.parametrize("name", UNSAFE)
def test_names_that_become_paths_must_be_safe_names(make, where, name):
    with pytest.raises(ParamError) as info:
        check_params(make(name))
    message = str(info.value)
    assert where in message and "safe name" in message and "letters, digits" in message, message
    assert "\n" not in message and "\0" not in message and len(message) < 400


@pytest.mark.parametrize("name", ["baseline", "ldam_drw", "Focal-2", "_x", "9", "x" * 64])
def test_safe_names_pass(name):
    assert name in check_params(strategy_named(name)).strategies
    assert name in check_params(task_named(name)).tasks


@pytest.mark.parametrize("key,value", [("data", {"export": "exp\0ort"}), ("data", {"export": "  "}),
                                       ("data", {"export": "a\nb"}), ("audit", {"review_sheet": "r\0.csv"})])
def test_read_only_path_params_may_not_hold_control_characters(key, value):
    section = {**(PARAMS.get(key) or {}), **value}
    with pytest.raises(ParamError, match=f"{key}\\.") as info:
        check_params(with_section(**{key: section}))
    assert "\n" not in str(info.value)


def test_read_only_path_params_may_point_anywhere():
    assert check_params(with_section(data={"export": "/srv/exports/2024 run"})).data.export == "/srv/exports/2024 run"
    assert check_params(with_section(data={"export": "../elsewhere"})).data.export == "../elsewhere"


# ------------------------------------------------------------------ no stage deletes outside its outputs

def write_repo(tmp_path: Path, params: dict) -> Path:
    """A working directory with this params.yaml, beside a folder the stages must never touch."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    victim = tmp_path / "somewhere"
    victim.mkdir()
    for name in ("keep.csv", "keep.png", "keep.npy", "index.csv"):
        (victim / name).write_text("precious")
    return repo


def assert_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "somewhere"
    assert sorted(p.name for p in victim.iterdir()) == ["index.csv", "keep.csv", "keep.npy", "keep.png"]


def train_args(config: str, out: str) -> list[str]:
    return ["stages.train", "--config", config, "--split", "data/split.csv", "--shards", "data/processed",
            "--out", out, "--live", out.replace("models", "dvclive"), "--checkpoints", "checkpoints/x"]


def write_config(repo: Path, name: str) -> str:
    """A resolved configuration (as the configure stage writes) of a strategy that reuses the baseline."""
    import json

    path = repo / "threshold.json"
    path.write_text(json.dumps({"name": name, "strategy": {"reuse": "baseline", "decision": "threshold_moving"}}))
    return path.name


def test_a_strategy_named_like_a_path_deletes_nothing(tmp_path):
    name = "../../somewhere"
    params = with_section(strategies={**PARAMS["strategies"], name: {"reuse": "baseline",
                                                                       "decision": "threshold_moving"}},
                          study=[*PARAMS["study"], name])
    repo = write_repo(tmp_path, params)
    done = run_module(repo, "stages.configure", "--pretrained", "models/pretrain/redbox.pt", "--out", "cfg")
    assert_one_line_exit_2(done, "strategies", "safe name")
    done = run_module(repo, *train_args(write_config(repo, name), f"models/{name}"))
    assert_one_line_exit_2(done, "name", "safe name")
    assert_untouched(tmp_path)


def test_the_train_stage_refuses_to_delete_outside_the_working_directory(tmp_path):
    repo = write_repo(tmp_path, PARAMS)
    done = run_module(repo, *train_args(write_config(repo, "threshold"), "../somewhere"))
    assert_one_line_exit_2(done, "refusing to delete", "outside")
    assert_untouched(tmp_path)


def write_manifest(repo: Path) -> None:
    """A one-photo manifest (its photo need not exist: the stages clear their outputs first)."""
    from weldnet.core.flags import FLAGS

    header = ",".join(["image", "rig", "width", "height", "sha256", *(f'"{f}"' for f in FLAGS)])
    (repo / "manifest.csv").write_text(header + "\na.jpg,bluebox,4,4,00," + ",".join("0" * len(FLAGS)) + "\n")


def test_preprocess_refuses_to_empty_a_folder_outside_the_working_directory(tmp_path):
    repo = write_repo(tmp_path, PARAMS)
    write_manifest(repo)
    victim = tmp_path / "somewhere"
    for name in ("keep.csv", "keep.png"):
        (victim / name).unlink()
    done = run_module(repo, "stages.preprocess", "--export", "export", "--manifest", "manifest.csv",
                      "--out", "../somewhere")
    assert done.returncode == 2
    assert (victim / "keep.npy").exists() and (victim / "index.csv").exists()


def test_the_audit_refuses_to_clear_a_folder_outside_the_working_directory(tmp_path):
    repo = write_repo(tmp_path, PARAMS)
    write_manifest(repo)
    done = run_module(repo, "stages.audit", "--manifest", "manifest.csv", "--export", "export", "--metrics",
                      "m/audit.json", "--stats", "m/stats.json", "--out", "../somewhere", "--plots", "../somewhere")
    assert_one_line_exit_2(done, "refusing to delete", "outside")
    assert_untouched(tmp_path)


@pytest.fixture()
def workdir(tmp_path, monkeypatch) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    return repo


def test_guarded_delete_removes_declared_outputs_only(workdir, tmp_path):
    from weldnet.core.paths import remove_output

    (workdir / "models/s/seed-0").mkdir(parents=True)
    (workdir / "models/s/seed-0/model.pt").write_text("w")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/file").write_text("x")
    os.symlink(tmp_path / "outside", workdir / "models/s/link")
    remove_output(Path("models/s/seed-0/model.pt"), within=Path("models/s"))
    assert not (workdir / "models/s/seed-0/model.pt").exists()
    with pytest.raises(StageError, match="refusing to delete .*outside models/s"):
        remove_output(Path("models/s/link/file"), within=Path("models/s"))     # through a symlink
    with pytest.raises(StageError, match="refusing to delete .*outside models/s"):
        remove_output(Path("models/other"), within=Path("models/s"))
    for bad in ("../outside", str(tmp_path / "outside"), ".", "..", "models/s/../.."):
        with pytest.raises(StageError, match="refusing to delete"):
            remove_output(Path(bad))
    remove_output(Path("models/s"))                      # the link goes, never its target
    assert not (workdir / "models/s").exists() and (tmp_path / "outside/file").read_text() == "x"
    remove_output(Path("models/s"))                      # already gone: nothing to do


def test_dvclive_folders_are_cleared_through_the_guard(workdir, tmp_path):
    from weldnet.train.live import DvcLiveLog

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/keep").write_text("x")
    with pytest.raises(StageError, match="refusing to delete"):
        DvcLiveLog(Path("../outside"))
    assert (tmp_path / "outside/keep").exists()


# ------------------------------------------------------------------ params.yaml itself

VALID = params_yaml().encode()


def test_a_non_utf8_byte_is_one_line(tmp_path):
    last_line = VALID.count(b"\n") + 1
    check_file(tmp_path, VALID + b"# caf\xe9\n", "UTF-8", f"line {last_line}")


def test_a_nul_byte_is_one_line(tmp_path):
    data = VALID.replace(b"strict: false", b"strict: fa\0lse")
    line = VALID[:VALID.index(b"strict: false")].count(b"\n") + 1
    check_file(tmp_path, data, "NUL", f"line {line}")


@pytest.mark.parametrize("style", ["flow", "block"])
def test_nesting_500_levels_deep_is_one_line(tmp_path, style):
    if style == "flow":
        deep = b"deep: " + b"[" * 500 + b"]" * 500 + b"\n"
    else:
        deep = b"deep:\n" + b"".join(b"  " * (k + 1) + b"k:\n" for k in range(500)) + b"  " * 501 + b"x\n"
    check_file(tmp_path, VALID + deep, "nest", "deep")


def alias_bomb() -> bytes:
    """Nine levels of ten aliases each: 10**9 strings once expanded, 1 KB of text."""
    lines = ["evaluate:", '  bootstrap: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for k in range(1, 9):
        lines.append(f"  x{k}: &a{k} [" + ",".join([f"*a{k - 1}"] * 10) + "]")
    text = "\n".join(lines) + "\ntask: *a8\n"
    assert len(text) < 10_000
    return text.encode()


def test_an_alias_bomb_is_refused_in_bounded_memory_and_time(tmp_path):
    check_file(tmp_path, alias_bomb(), "alias", memory_mib=1024, timeout=60)


def test_a_recursive_alias_is_one_line(tmp_path):
    check_file(tmp_path, b"task: &t [*t]\n", "alias")


def test_error_messages_never_expand_a_value(tmp_path):
    """Even a value big enough to pass the alias check is shown in a few characters."""
    big = {"task": [["x" * 100] * 100] * 100}
    with pytest.raises(ParamError) as info:
        check_params({**PARAMS, **big})
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("text,key,line", [
    ("train:\n  epochs: 1\n  epochs: 2\n", "epochs", 3),
    ("loss: focal\nloss: bayesian\n", "loss", 2),
    ("strategies: {a: {}, a: {loss: focal}}\n", "a", 1),
])
def test_a_duplicate_key_is_refused_naming_key_and_line(tmp_path, text, key, line):
    message = check_file(tmp_path, text.encode(), f"'{key}'", f"line {line}", "twice")
    assert "params.yaml" in message


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    text = "base: &b {epochs: 1, lr: 0.1}\n"
    (tmp_path / "params.yaml").write_text(text + "other:\n  <<: *b\n  epochs: 2\n")
    assert load_params(tmp_path / "params.yaml")["other"] == {"epochs": 2, "lr": 0.1}


def test_a_params_yaml_that_is_a_fifo_is_one_line(tmp_path):
    os.mkfifo(tmp_path / "params.yaml")
    done = run_module(tmp_path, "weldnet.core.params", timeout=30)
    assert_one_line_exit_2(done, "regular file")


@pytest.mark.parametrize("data,needle", [
    (b"task: [unclosed\n", "not valid YAML"),
    (b"task: \x07bell\n", "not valid YAML"),
    (b"---\na: 1\n---\nb: 2\n", "one document"),
    (b"- a\n- b\n", "mapping"),
])
def test_other_broken_files_are_one_line(tmp_path, data, needle):
    check_file(tmp_path, data, needle)


def test_the_committed_params_yaml_still_loads():
    assert check_params(load_params(REPO / "params.yaml")).task == PARAMS["task"]


# ------------------------------------------------------------------ values a run cannot meet
def merged(section: str, **values) -> dict:
    """PARAMS with ``values`` set in ``section`` (dotted keys reach nested mappings)."""
    import copy
    params = copy.deepcopy(PARAMS)
    for key, value in values.items():
        node = params[section]
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return params


@pytest.mark.parametrize("section,key,value,needle", [
    ("train", "seeds", [-1], "from 0 to 4294967295"),
    ("train", "seeds", [2 ** 40], "from 0 to 4294967295"),
    ("train", "seeds", [2 ** 70], "|n| <= 2**53"),
    ("generate", "seed", 2 ** 32, "from 0 to 4294967295"),
    ("imbalance", "seed", -3, "from 0 to 4294967295"),
    ("evaluate", "seed", 2 ** 33, "from 0 to 4294967295"),
    ("audit", "seed", -1, "from 0 to 4294967295"),
    ("pretrain", "seed", 2 ** 32, "from 0 to 4294967295"),
    ("evaluate", "bootstrap", 10 ** 12, "[10, 100000]"),
    ("train", "lr", 1e300, "(0, 10]"),
    ("train", "lr", float("inf"), "not a finite number"),
    ("train", "lr", float("nan"), "not a finite number"),
    ("pretrain", "lr", float("-inf"), "not a finite number"),
    ("train", "epochs", 10 ** 30, "|n| <= 2**53"),
    ("train", "epochs", 10 ** 6, "[1, 10000]"),
    ("train", "batch_size", 10 ** 9, "[1, 65536]"),
    ("generate", "size.redbox", 10 ** 20, "|n| <= 2**53"),
    ("generate", "size.bluebox", 10 ** 8, "[0, 1e+06]"),
    ("preprocess", "size", 100_000, "[8, 4096]"),
    ("preprocess", "shard_size", 10 ** 9, "[1, 1e+06]"),
    ("imbalance", "split", {"train": 0.6, "val": 0.2, "test": 0.3}, "make them sum to 1"),
    ("imbalance", "split", {"train": 0.8, "val": 0.0, "test": 0.2}, "give it a share above 0"),
    ("evaluate", "tau_grid", [], "tau_grid is empty"),
    ("evaluate", "tau_grid", [float("nan")], "not a finite number"),
    ("losses", "focal.gamma", -0.5, "[0, 50]"),
    ("losses", "focal.gamma", float("inf"), "not a finite number"),
    ("loader", "cache_mb", 10 ** 12, "cache_mb"),
    ("ingest", "workers", 10 ** 6, "[0, 1024]"),
])
def test_a_value_no_run_can_meet_is_refused_before_any_work(section, key, value, needle):
    with pytest.raises(ParamError) as info:
        check_params(merged(section, **{key: value}))
    message = str(info.value)
    assert needle in message and key.split(".")[-1] in message and "\n" not in message, message


def test_the_bounds_leave_the_documented_values_legal():
    params = check_params(merged("train", seeds=[0, 2 ** 32 - 1], lr=10.0, epochs=10_000))
    assert params.train.seeds == [0, 2 ** 32 - 1]
    assert check_params(merged("evaluate", bootstrap=100_000)).evaluate.bootstrap == 100_000
    assert check_params(merged("losses", **{"focal.gamma": 0.0})).losses.focal.gamma == 0.0


def test_a_huge_lr_in_params_yaml_is_one_line_from_the_stage_runner(tmp_path):
    text = params_yaml(train={**PARAMS["train"], "lr": 1e300}).replace("1.0e+300", ".inf")
    check_file(tmp_path, text.encode(), "train.lr", "not a finite number")
