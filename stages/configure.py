"""Stage configure: write each study strategy's fully resolved configuration to its own file.

    python -m stages.configure --pretrained models/pretrain/redbox.pt --out data/strategies

Each train@<strategy> stage depends on data/strategies/<strategy>.json and on no
params, so a change to params.yaml re-runs exactly the strategies whose resolved
configuration it changes (weldnet/core/resolve.py), and DVC's run-cache recognises a
configuration it has trained before.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from weldnet.core.config import DataError, run_stage
from weldnet.core.digests import file_digest
from weldnet.core.files import write_json
from weldnet.core.params import load_checked_params
from weldnet.core.resolve import resolve_strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, type=Path, help="Redbox-pretrained weights (init: redbox)")
    parser.add_argument("--out", required=True, type=Path, help="folder of <strategy>.json files")
    args = parser.parse_args()
    params = load_checked_params()
    digest = file_digest(args.pretrained) if args.pretrained.is_file() else None
    configs = {}
    for name in params.study:
        try:
            configs[name] = resolve_strategy(params, name, args.pretrained.as_posix(), digest)
        except FileNotFoundError:
            raise DataError(f"strategy '{name}' starts from {args.pretrained}, which is missing; "
                            "run the pretrain stage (dvc repro pretrain)") from None
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.json"):
        old.unlink()
    for name, config in configs.items():
        write_json(args.out / f"{name}.json", config, sort_keys=True)
    print(f"configure: {len(configs)} strategies resolved into {args.out}")


if __name__ == "__main__":
    run_stage(main)
