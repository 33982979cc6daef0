"""Finished fits, stored under the digest of everything that decides them, so that none is trained twice."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from weldnet.core.digests import fingerprint
from weldnet.train.loop import FitResult


def state_digest(model: nn.Module) -> str:
    """Digest of a model's every tensor (buffers included) and of which parameters it trains."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(bytes(p.requires_grad for p in model.parameters()))
    return digest.hexdigest()


def loss_signature(loss: nn.Module) -> list:
    """What decides a loss's values: its class, its weighting and its settings, its buffers (weights, margins)."""
    weighting = getattr(loss, "weighting", None)
    settings = {k: v for k, v in vars(loss).items()
                if not k.startswith("_") and isinstance(v, (int, float, str, bool, tuple, type(None)))}
    return [type(loss).__name__, None if weighting is None else [type(weighting).__name__, vars(weighting)],
            settings, {k: v.tolist() for k, v in loss.state_dict().items()}]


class FitMemo:
    """Finished fits, stored under the digest of everything that decides them, so none is trained twice.

    Two strategies can share a fit exactly: classifier re-training's first phase is
    the baseline's run, and with ``small_cnn`` ``transfer: full`` copies the same
    layers as ``conv``. The key is the fingerprint of the run's ``context`` (the
    stage's: code, photos, loss, model, device, ...), the fit's own settings (rows,
    optimiser settings, sampler, seed, offsets) and the model's starting weights;
    a fit with the same key would repeat, bit for bit, the one stored. The folder
    keeps at most ``limit_mb`` MiB, the oldest fits dropped first, and fits larger
    than that are not kept.
    """

    def __init__(self, folder: Path, context: str, limit_mb: int = 256, write: bool = True):
        self.folder, self.context, self.limit, self.write = Path(folder), context, limit_mb * 2**20, write

    def key(self, model: nn.Module, **settings: object) -> str:
        return fingerprint(self.context, settings, state_digest(model))

    def load(self, key: str) -> dict | None:
        path = self.folder / f"{key}.fit"
        if not path.is_file():
            return None
        try:
            done = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged entry is a miss, never an error
            return None
        os.utime(path)                                 # a fit used again is kept longer
        return done

    def save(self, key: str, result: FitResult, final: dict[str, torch.Tensor]) -> None:
        if not self.write:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = {"final": {k: v.detach().cpu() for k, v in final.items()}, "state": result.state,
                 "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "history": result.history,
                 "steps": result.steps, "best_score": list(result.best_score), "scores": result.scores}
        tmp = self.folder / f"{key}.{os.getpid()}.tmp"     # queued experiments may write the same fit at once
        torch.save(entry, tmp)
        if tmp.stat().st_size > self.limit:
            tmp.unlink()
            return
        os.replace(tmp, self.folder / f"{key}.fit")
        kept = sorted(self.folder.glob("*.fit"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for path in kept:
            total += path.stat().st_size
            if total > self.limit:
                path.unlink(missing_ok=True)
