"""params.yaml's schema: defaults, registries, and resolution that changes exactly what a param touches."""
import dataclasses

import pytest
import yaml
from conftest import ROOT

from weldnet.core.config import ParamError, build
from weldnet.core.params import (
    ARCH_NAMES,
    AUGMENT_NAMES,
    DECISION_NAMES,
    HEAD_NAMES,
    LOSS_NAMES,
    SAMPLER_NAMES,
    SCHEDULE_NAMES,
    WEIGHTING_NAMES,
    Params,
    check_params,
)
from weldnet.core.resolve import resolve_strategy
from weldnet.strategies.augment import AUGMENTS
from weldnet.strategies.decisions import DECISIONS
from weldnet.strategies.losses import LOSSES, WEIGHTINGS
from weldnet.strategies.models import HEADS, MODELS
from weldnet.strategies.sampling import SAMPLERS
from weldnet.train.schedules import SCHEDULES

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
PARAMS = check_params(RAW)


def test_the_committed_params_yaml_is_valid_and_every_default_is_its_value():
    defaults = Params(task=PARAMS.task, tasks=PARAMS.tasks, strategies=PARAMS.strategies, study=PARAMS.study)
    differ = [f.name for f in dataclasses.fields(Params) if getattr(defaults, f.name) != getattr(PARAMS, f.name)]
    assert not differ, f"defaults in weldnet/core/params.py differ from params.yaml in: {differ}"


def test_each_axis_registry_is_keyed_by_exactly_the_declared_names():
    assert tuple(LOSSES) == LOSS_NAMES
    assert tuple(WEIGHTINGS) == WEIGHTING_NAMES
    assert tuple(SAMPLERS) == SAMPLER_NAMES
    assert tuple(SCHEDULES) == SCHEDULE_NAMES
    assert tuple(DECISIONS) == DECISION_NAMES
    assert tuple(MODELS) == ARCH_NAMES
    assert tuple(HEADS) == HEAD_NAMES
    assert tuple(AUGMENTS) == AUGMENT_NAMES


def test_every_workers_param_means_processes_with_zero_for_one_per_cpu():
    for section in ("generate", "ingest", "audit", "preprocess"):
        assert getattr(check_params({**RAW, section: {**RAW[section], "workers": 0}}), section).workers == 0
        with pytest.raises(ParamError, match=rf"^{section}.workers = -1 must be >= 1, or 0 for one per CPU$"):
            check_params({**RAW, section: {**RAW[section], "workers": -1}})


@pytest.mark.parametrize("raw, message", [
    ({**RAW, "trian": {}}, "params.yaml: unknown key 'trian'"),
    ({**RAW, "study": ["threshold"]}, "study lists 'threshold', which reuses 'baseline'; add 'baseline' to study"),
    ({**RAW, "loss": "bayes"}, "loss: unknown name 'bayes'; valid: cross_entropy"),
    ({**RAW, "train": {**RAW["train"], "lr_schedule": "step"}}, "train.lr_schedule: unknown value 'step'"),
    ({**RAW, "strategies": {**RAW["strategies"], "focal": {"sampler": "balanced"}}},
     "strategies.focal.sampler: unknown name 'balanced'; valid: none, oversample"),
])
def test_a_bad_value_is_one_line_naming_the_key(raw, message):
    with pytest.raises(ParamError, match=message):
        check_params(raw)


def resolved(raw: dict, sha: str = "aa") -> dict[str, dict]:
    params = check_params(raw)
    return {name: resolve_strategy(params, name, "models/pretrain/redbox.pt", sha) for name in params.study}


def changed(raw: dict, sha: str = "aa") -> set[str]:
    before, after = resolved(RAW), resolved(raw, sha)
    return {name for name in before if before[name] != after[name]}


OWN_LOSS = {name for name, s in PARAMS.strategies.items() if s.loss is not None}
TRAINED = {name for name in PARAMS.study if PARAMS.strategies[name].reuse is None}


def test_the_top_level_loss_changes_only_strategies_without_a_loss_of_their_own():
    assert changed({**RAW, "loss": "bayesian"}) == TRAINED - OWN_LOSS
    assert {"baseline", "oversample", "crt"} <= TRAINED - OWN_LOSS and "bayesian" in OWN_LOSS


def test_new_pretrained_weights_change_only_the_strategies_that_start_from_them():
    assert changed(RAW, sha="bb") == {n for n in PARAMS.study if PARAMS.strategies[n].init == "redbox"}
    assert changed(RAW, sha="bb") == {"transfer_conv", "transfer_frozen", "svm"}


@pytest.mark.parametrize("section, key, value, expected", [
    ("losses", "focal", {"gamma": 1.0}, {"focal"}),
    ("losses", "ldam", {"scale": 10.0}, {"ldam_drw"}),
    ("weightings", "drw", {"start": 0.5}, {"ldam_drw"}),
    ("weightings", "drw", {"beta": 0.999}, {"ldam_drw"}),
    ("weightings", "effective_number", {"beta": 0.99}, {"class_balanced"}),
    ("sampling", "target_ratio", 0.9, {"oversample", "undersample", "selective_undersample"}),
    ("schedules", "crt", {"epochs": 2}, {"crt", "logit_adjusted_crt"}),
    ("schedules", "selective_undersample", {"round_epochs": 1}, {"selective_undersample"}),
])
def test_a_hyperparameter_changes_only_the_strategies_that_read_it(section, key, value, expected):
    assert changed({**RAW, section: {**RAW[section], key: value}}) == expected


def test_training_settings_change_every_trained_strategy_and_no_reuse_pointer():
    assert changed({**RAW, "train": {**RAW["train"], "epochs": 3}}) == TRAINED
    reuse = resolved(RAW)["threshold"]
    assert set(reuse) == {"name", "strategy"}


def test_a_resolved_configuration_builds_back_into_the_typed_one():
    from weldnet.core.params import StrategyConfig
    config = build(StrategyConfig, resolved(RAW)["svm"], "svm.json")
    assert config.loss == "hinge" and config.pretrained.sha256 == "aa" and config.strategy.freeze == 4
    assert config.model.input_size == PARAMS.model.input_size
    with pytest.raises(ParamError, match="init redbox without pretrained weights"):
        build(StrategyConfig, {k: v for k, v in resolved(RAW)["svm"].items() if k != "pretrained"}, "svm.json")


def with_strategy(name: str, **axes) -> dict:
    return {**RAW, "strategies": {**RAW["strategies"], name: axes}}


def test_a_weighting_change_retrains_only_that_strategy():
    assert changed(with_strategy("baseline", weighting="drw")) == {"baseline"}
    config = resolved(with_strategy("baseline", weighting="drw"))["baseline"]
    assert config["weightings"] == {"drw": {"start": 0.8, "beta": 0.9999}} and config["loss"] == "cross_entropy"
    with_weighted = {**RAW, "study": [*RAW["study"], "weighted"]}      # defined, not in the default study
    assert "weightings" not in resolved(with_weighted)["weighted"]     # inverse frequency has no settings
    assert resolved(RAW)["class_balanced"]["weightings"] == {"effective_number": {"beta": 0.9999}}


def test_the_renamed_strategies_are_their_loss_and_weighting():
    axes = {name: (PARAMS.resolved_loss(name), PARAMS.strategies[name].weighting)
            for name in ("weighted", "class_balanced", "ldam_drw", "baseline")}
    assert axes == {"weighted": ("cross_entropy", "inverse_frequency"),
                    "class_balanced": ("cross_entropy", "effective_number"),
                    "ldam_drw": ("ldam", "drw"), "baseline": ("cross_entropy", "none")}


@pytest.mark.parametrize("raw, message", [
    (with_strategy("x", loss="weighted"),
     "strategies.x.loss: 'weighted' is a weighting now; write loss: cross_entropy and weighting: inverse_frequency"),
    ({**RAW, "loss": "class_balanced"}, "loss: 'class_balanced' is a weighting now; write loss: cross_entropy and "
                                        "weighting: effective_number"),
    ({**RAW, "losses": {**RAW["losses"], "class_balanced": {"beta": 0.99}}},
     "losses.class_balanced.beta moved to the weighting axis; set weightings.effective_number.beta"),
    ({**RAW, "losses": {**RAW["losses"], "ldam": {"drw_start": 0.5}}},
     "losses.ldam.drw_start moved to the weighting axis; set weightings.drw.start"),
    (with_strategy("x", weighting="balanced"), "strategies.x.weighting: unknown name 'balanced'; valid: none, "
                                               "inverse_frequency, effective_number, drw"),
    (with_strategy("x", weighting="drw", schedule="selective_undersample"),
     "weighting drw switches at a fraction of the schedule's epochs"),
    (with_strategy("x", reuse="baseline", weighting="inverse_frequency"), "reuse trains nothing, so weighting"),
    ({**RAW, "ceiling": ["crt", "crt"]}, "ceiling lists a strategy twice"),
    ({**RAW, "ceiling": ["transfer_imagenet"]}, "ceiling lists 'transfer_imagenet', which is not in study"),
    ({**RAW, "ceiling": ["threshold"]}, "ceiling lists 'threshold', which reuses 'baseline'; add 'baseline'"),
    ({**RAW, "evaluate": {**RAW["evaluate"], "baseline": "basline"}}, "evaluate.baseline: unknown name 'basline'"),
    ({**RAW, "evaluate": {**RAW["evaluate"], "alpha": 0.5}}, "evaluate.alpha = 0.5 is out of range"),
])
def test_weighting_ceiling_and_comparison_errors_are_one_line_naming_the_fix(raw, message):
    with pytest.raises(ParamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_params(raw)


def test_the_params_read_log_notes_each_key_and_lets_stages_copy_sections(tmp_path):
    """The recording view (tests/params_reads.py) behind the exact-params test: reads, asdict and replace."""
    from params_reads import record_reads

    from weldnet.core.params import load_checked_params

    plain = load_checked_params(ROOT / "params.yaml")
    params = record_reads(plain, tmp_path / "reads.jsonl")
    spec = params.imbalance
    natural = dataclasses.replace(spec, ratio=None)         # what the imbalance stage does for the natural split
    assert natural.ratio is None and natural.seed == plain.imbalance.seed
    assert dataclasses.asdict(params.sampling) == dataclasses.asdict(plain.sampling)
    reads = params._reads
    assert {"imbalance.seed", "sampling.target_ratio"} <= reads and "imbalance.ratio" not in reads   # replaced, not read
    assert not any(key.startswith("train.") for key in reads)


def test_the_params_hook_reaches_a_stage_process(tmp_path):
    """WELDNET_PARAMS_HOOK is how tests/test_pipeline.py records each stage's reads; a bad one is one line."""
    import json
    import os
    import subprocess
    import sys

    import params_reads

    log = tmp_path / "reads.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "WELDNET_PARAMS_HOOK": params_reads.HOOK, "WELDNET_PARAMS_LOG": str(log)}
    done = subprocess.run([sys.executable, "-m", "weldnet.core.params"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(log.read_text()) == {"module": "weldnet.core.params", "reads": []}
    env["WELDNET_PARAMS_HOOK"] = "params_reads:nothing"
    done = subprocess.run([sys.executable, "-m", "weldnet.core.params"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: WELDNET_PARAMS_HOOK='params_reads:nothing' names no function to import (module 'params_reads' has "
        "no attribute 'nothing'); set it to module:function or unset it"]


RECIPES = ["baseline", "mixup", "cutmix", "remix", "mislas", "logit_adjusted_crt", "weight_balancing", "sam"]


@pytest.mark.parametrize("raw, message", [
    (with_strategy("baseline", augment="mixupp"), "strategies.baseline.augment: unknown name 'mixupp'; valid: flip, "
                                                  "mixup, cutmix, remix"),
    (with_strategy("baseline", crt={"label_smoothing": True}),
     "strategies.baseline.crt sets the re-training phase of schedule crt, but the schedule is standard; "
     "set schedule: crt or drop crt"),
    (with_strategy("threshold", reuse="baseline", augment="mixup"), "reuse trains nothing, so augment"),
    (with_strategy("baseline", max_norm=0.0), "strategies.baseline.max_norm"),
    (with_strategy("baseline", sam=-0.05), r"strategies.baseline.sam = -0.05 is out of range; it must lie in \(0, 10\]"),
    (with_strategy("threshold", reuse="baseline", sam=0.05), "augment, weight_decay, max_norm and sam have no effect"),
    (with_strategy("crt", schedule="crt", crt={"weighting": "balanced"}), "strategies.crt.crt.weighting: unknown"),
    (with_strategy("crt", schedule="crt", crt={"sampler": "uniform"}), "strategies.crt.crt.sampler: unknown"),
    ({**RAW, "augmentations": {"remix": {"kappa": 0.5}}}, "augmentations.remix.kappa"),
    (with_strategy("ldam_drw", loss="ldam", head="normed", max_norm=1.0), "head normed already fixes every class's"),
])
def test_recipe_settings_are_checked_in_one_line_naming_the_fix(raw, message):
    with pytest.raises(ParamError, match=message):
        check_params(raw)


def test_a_recipe_reads_its_own_constants_and_the_default_study_has_the_strongest_on_validation_alone():
    assert set(RECIPES[1:]) & set(PARAMS.study) == {"logit_adjusted_crt"}
    study = {**RAW, "study": RECIPES}
    before = resolved(study)
    assert before["mixup"]["augmentations"] == {"mixup": {"alpha": 1.0}} and "augmentations" not in before["baseline"]
    after = resolved({**study, "augmentations": {**RAW["augmentations"], "mixup": {"alpha": 0.2}}})
    assert {n for n in before if before[n] != after[n]} == {"mixup", "mislas"}
    smoothing = resolved({**study, "losses": {**RAW["losses"], "label_smoothing": {"head": 0.1, "tail": 0.0}}})
    assert {n for n in before if before[n] != smoothing[n]} == {"mislas"}
    wb = before["weight_balancing"]
    assert wb["train"]["weight_decay"] == 0.005 and before["baseline"]["train"]["weight_decay"] == 0.0005
    assert wb["weightings"] == {"effective_number": {"beta": 0.9999}} and wb["strategy"]["crt"]["max_norm"] == 1.0
    assert set(before["logit_adjusted_crt"]["losses"]) == {"logit_adjusted"}
    from weldnet.core.params import StrategyConfig
    config = build(StrategyConfig, before["mislas"], "mislas.json")
    assert config.strategy.crt.label_smoothing and config.losses.label_smoothing.head == 0.3
