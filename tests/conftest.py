import sys
from pathlib import Path

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
