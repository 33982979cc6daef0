"""Stage inputs: every preprocessed photo resized once to the model's input size (``model.input_size``).

    python -m stages.inputs --shards data/processed --out data/inputs

Writes the same shards and ``index.csv`` as preprocess, at the model's size, with
the formula the model's input is resized by (``weldnet.photos.transforms.resize_uint8``),
so the train, pretrain and evaluate stages read photos ready to use instead of
resizing the stored ones in every stage. The triage bundle reads the stored
photos: it resizes them as it will resize an inspector's.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from weldnet.core.config import run_stage
from weldnet.core.params import load_checked_params
from weldnet.core.progress import Progress
from weldnet.photos.inputs import resized_photos
from weldnet.photos.shards import INDEX, empty_output_dir, read_index, write_order, write_shards


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, type=Path, help="the preprocess stage's shards")
    parser.add_argument("--out", required=True, type=Path, help="folder for the resized shards and index.csv")
    args = parser.parse_args(argv)
    size = load_checked_params().model.input_size

    index = read_index(args.shards / INDEX)
    ordered = write_order(index)
    empty_output_dir(args.out)
    with Progress(len(ordered), "inputs", unit="photo", stream=sys.stdout) as bar:
        write_shards(args.out, ordered, resized_photos(ordered, args.shards, size, bar), size)
    shutil.copyfile(args.shards / INDEX, args.out / INDEX)
    print(f"inputs: {len(index)} photos at {size}x{size} in {args.out}")


if __name__ == "__main__":
    run_stage(main)
