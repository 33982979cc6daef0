"""The trained-model folder: what the train stage writes is what evaluate, the bundle and the plots read."""
import json

import pytest
import torch

from weldnet.core.config import DataError
from weldnet.core.params import ModelParams
from weldnet.strategies.models import build_model
from weldnet.train import store

MODEL = {"arch": "small_cnn", "input_size": 16, "width": 2, "dropout": 0.0}


def _train(models, name, seeds=(0, 1)):
    folder = models / name
    folder.mkdir(parents=True)
    states = {}
    for seed in seeds:
        torch.manual_seed(seed)
        states[seed] = build_model(ModelParams(**MODEL), 2).state_dict()
        store.save_weights(folder, seed, states[seed])
    store.write_record(folder, {"strategy": name, "decision": "argmax", "model": MODEL, "classes": ["ok", "flaw"],
                                "train_counts": [90, 10],
                                "seeds": {store.seed_name(s): {"best_epoch": s + 3} for s in seeds}})
    return states


def test_a_trained_strategy_reads_back_as_written(tmp_path):
    states = _train(tmp_path, "baseline")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "baseline/config.json", "baseline/seed-0/model.pt", "baseline/seed-1/model.pt"]
    trained = store.read_trained(tmp_path, "baseline")
    assert (trained.source, trained.reuse, trained.decision) == ("baseline", None, "argmax")
    assert trained.seeds == ["seed-0", "seed-1"] and trained.best_epoch("seed-1") == 4
    assert trained.classes == ["ok", "flaw"] and trained.train_counts == [90, 10]
    model = trained.load_model("seed-1")
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, states[1][key]), key


def test_reuse_is_resolved_once_with_the_strategys_own_decision(tmp_path):
    _train(tmp_path, "baseline")
    _train(tmp_path, "baseline@natural", seeds=(0,))
    for name in ("threshold", "threshold@natural"):
        (tmp_path / name).mkdir()
        store.write_pointer(tmp_path / name, "threshold", "baseline", "threshold_moving")
    assert json.loads((tmp_path / "threshold/config.json").read_text()) == {
        "strategy": "threshold", "reuse": "baseline", "decision": "threshold_moving"}
    trained = store.read_trained(tmp_path, "threshold")
    assert (trained.source, trained.reuse, trained.decision) == ("baseline", "baseline", "threshold_moving")
    assert trained.seeds == ["seed-0", "seed-1"] and trained.weights("seed-0") == tmp_path / "baseline/seed-0/model.pt"
    ceiling = store.read_trained(tmp_path, "threshold@natural")       # the ceiling reuses the ceiling's model
    assert ceiling.source == "baseline@natural" and ceiling.seeds == ["seed-0"]


def test_missing_models_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="no trained model for strategy 'baseline' at .*; run dvc repro"):
        store.read_trained(tmp_path, "baseline")
    (tmp_path / "threshold").mkdir()
    store.write_pointer(tmp_path / "threshold", "threshold", "baseline", "threshold_moving")
    with pytest.raises(DataError, match="no trained model for strategy 'baseline'"):
        store.read_trained(tmp_path, "threshold")
    _train(tmp_path, "baseline", seeds=(0,))
    (tmp_path / "baseline/seed-0/model.pt").unlink()
    with pytest.raises(DataError, match="lists seed-0 but has no weights"):
        store.read_trained(tmp_path, "baseline").load_model("seed-0")
