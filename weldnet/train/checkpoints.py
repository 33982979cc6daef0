"""End-of-epoch checkpoints, fingerprinted, so a killed run resumes exactly where it stopped.

A checkpoint carries the fingerprint of everything that decides its numbers: the
resolved configuration, the seed, the data's digest and the training code's
digest. One written under anything else is ignored, so a code change, even one
that leaves params alone, retrains from scratch.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from weldnet.train.loop import CheckpointIO

LIBRARY = Path(__file__).resolve().parents[1]


def code_digest(*stage_files: Path) -> str:
    """Digest of the training code: the given stage module(s) and every module of the weldnet library."""
    digest = hashlib.sha256()
    for path in [*(Path(p).resolve() for p in stage_files), *sorted(LIBRARY.rglob("*.py"))]:
        digest.update(path.relative_to(LIBRARY).as_posix().encode() if path.is_relative_to(LIBRARY)
                      else path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def checkpoint_io(path: Path, fingerprint_: str) -> CheckpointIO:
    """(save, load) for one run's checkpoint file; load returns None when there is none of this fingerprint."""
    def save(state: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"fingerprint": fingerprint_, **state}, tmp)
        os.replace(tmp, path)

    def load() -> dict | None:
        if not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != fingerprint_:
            print(f"  {path} was written by another configuration; starting afresh")
            return None
        print(f"  resuming from {path} after epoch {state['epoch']}")
        return state

    return save, load
