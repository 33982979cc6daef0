"""Stage generate: synthetic Redbox/Bluebox weld photos with known flags, in the export layout.

    python -m stages.generate --export data/export --truth data/truth.csv

Reads the `generate` section of params.yaml. Writes `<export>/labels.csv` (image,rig,flags:
the *recorded* flags, with Redbox label noise) and `<export>/images/<rig>/<rig>_<NNNNN>.jpg`,
and the true flags to the truth file (image,rig,flags,noisy), which only scoring code reads
(weldnet/synth/export.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from weldnet.core.config import run_stage
from weldnet.core.params import load_checked_params
from weldnet.synth.export import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path, required=True, help="export directory to (re)write")
    parser.add_argument("--truth", type=Path, required=True, help="CSV of the true flags")
    args = parser.parse_args()
    spec = load_checked_params().generate
    generate(spec, args.export, args.truth)
    print(f"generate: wrote {spec.size.redbox} redbox + {spec.size.bluebox} bluebox photos to {args.export}")


if __name__ == "__main__":
    run_stage(main)
