import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))   # tests/dvc_deps.py


def params_yaml(**sections) -> str:
    """The repository's params.yaml with the given sections replaced, as YAML text.

    Every stage validates the whole file before any work, so a test's params.yaml
    must be complete; tests change only the sections they exercise.
    """
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(sections)
    return yaml.safe_dump(params, sort_keys=False)


@pytest.fixture(scope="session")
def fresh_exports(tmp_path_factory):
    """Two generated Bluebox exports, read-only: ``own`` (seed 11, 600 photos) to train and certify a bundle on,
    ``fresh`` (seed 22, 400 photos) to check it on, as a user's next batch of photos would."""
    from weldnet.core.params import GenerateSpec, RigCounts
    from weldnet.synth.export import generate

    root = tmp_path_factory.mktemp("exports")
    for name, seed, photos in (("own", 11, 600), ("fresh", 22, 400)):
        generate(GenerateSpec(seed=seed, size=RigCounts(redbox=0, bluebox=photos), workers=2), root / name,
                 root / f"{name}-truth.csv")
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The end-to-end file first, so that under pytest.ini's `-n 2 --dist loadfile` one worker starts
    on it at once (it is about two thirds of the suite's time) while the other runs the rest."""
    items.sort(key=lambda item: item.path.name != "test_pipeline.py")
