"""The schedule axis of the training strategies: how a seed's training run is laid out in phases.

- ``standard``: one ``fit`` over ``train.epochs`` with the strategy's sampler.
- ``selective_undersample``: the report's section 6.4.5 (Zhou & Liu 2005): train on
  an under-sampled set, then rounds that bring in set-aside default-class photos
  and drop them by the redundant, boundary and random rules
  (``weldnet.strategies.selective``), each round followed by ``round_epochs`` more epochs.
- ``crt``: classifier re-training (Kang et al. 2020): a standard run learns the
  representation, then the output layer is re-initialised and trained alone, with
  class-balanced sampling, on the frozen network. The re-training phase takes its
  own loss, weighting, label smoothing, MaxNorm cap and sampler (``strategy.crt``,
  built by the stage into ``Run.make_classifier_loss``, ``Run.classifier_max_norm``
  and ``Run.classifier_sampler``);
  it never mixes photos (MiSLAS's second stage does not).

A loss whose class weights change with the epoch (``weighting: drw``) sees the
epoch counted over the whole schedule and its total length (``crt``: both phases);
``selective_undersample``, whose length is not known in advance, does not take drw.

Every phase checkpoints under its own name, so an interrupted run resumes at the
epoch it reached. The model is selected by validation per-class accuracy across
all phases (``train.select: best_val``), except that ``crt`` selects within its
re-training phase, the classifier it exists to produce.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from weldnet.core.distributed import current
from weldnet.core.params import SamplingParams, ScheduleParams, TrainParams
from weldnet.photos.dataset import PhotoDataset
from weldnet.strategies.augment import Mix
from weldnet.strategies.sampling import build_loader, draw_generator
from weldnet.strategies.selective import initial_set, selection_round
from weldnet.strategies.transfer import retrain_output_layer
from weldnet.train.loop import WHOLE, CheckpointIO, FitResult, FitSettings, Phase, fit
from weldnet.train.memo import FitMemo, loss_signature
from weldnet.train.predict import predict_features, predict_logits

# seeds the selective under-sampling draws apart from the training randomness
_SELECT_STREAM = 0x5E1E


Checkpoints = Callable[[str], CheckpointIO]


@dataclass
class Run:
    """One seed's training inputs, shared by every schedule."""

    train: PhotoDataset                             # the training split: uint8 photos, class-index targets
    train_y: np.ndarray                             # their class labels, for the samplers and class counts
    loop: FitSettings                               # device, input, validation, log, seed: what every fit shares
    params: TrainParams
    sampler: str
    sampling: SamplingParams
    input_size: int
    n_classes: int
    make_loss: Callable[[list[int]], nn.Module]     # class counts of the rows trained on -> loss
    checkpoints: Checkpoints                        # phase name ('' for the only one) -> (save, load)
    workers: int = 1                                # loader processes reading photos not held in memory
    memo: FitMemo | None = None                     # finished fits to reuse instead of repeating them
    make_mix: Callable[[list[int]], Mix | None] = lambda counts: None   # class counts -> the augment axis's mixer
    max_norm: float | None = None                   # MaxNorm cap of every fit but crt's re-training
    sam: float | None = None                        # SAM's radius in every fit but crt's re-training
    make_classifier_loss: Callable[[list[int]], nn.Module] | None = None   # crt's re-training loss (None: make_loss)
    classifier_max_norm: float | None = None        # crt's re-training MaxNorm cap
    classifier_sampler: str | None = None           # crt's re-training sampler (None: schedules.crt.sampler)

    @property
    def seed(self) -> int:
        return self.loop.seed

    def counts(self, rows: np.ndarray | None = None) -> list[int]:
        labels = self.train_y if rows is None else self.train_y[rows]
        return np.bincount(labels, minlength=self.n_classes).tolist()

    def fit(self, model: nn.Module, name: str, *, rows: np.ndarray | None = None, params: TrainParams | None = None,
            sampler: str | None = None, phase: Phase = WHOLE, classifier: bool = False) -> FitResult:
        """``fit`` on the training rows ``rows`` (all by default), checkpointed under ``name``.

        ``phase``: the steps and epochs of the schedule before this fit, and the schedule's
        length over all its phases, for an epoch-dependent weighting (DRW). ``classifier``:
        crt's re-training phase, with its own loss and MaxNorm cap and no mixing.
        """
        params = params or self.params
        counts = self.counts(rows)
        make_loss = self.make_classifier_loss if classifier and self.make_classifier_loss else self.make_loss
        loss = make_loss(counts)
        loop = replace(self.loop, mix=None if classifier else self.make_mix(counts),
                       max_norm=self.classifier_max_norm if classifier else self.max_norm,
                       sam=None if classifier else self.sam)
        key = None
        if self.memo is not None:
            settings = {k: v for k, v in asdict(params).items() if k != "seeds"}
            weighting = getattr(loss, "weighting", None)
            schedule_length = ((phase.total_epochs or phase.epochs_before + params.epochs)
                               if getattr(weighting, "depends_on_epoch", False) else None)
            key = self.memo.key(model, rows=None if rows is None else np.asarray(rows).tolist(), params=settings,
                                sampler=sampler or self.sampler, sampling=asdict(self.sampling), seed=self.seed,
                                offsets=[phase.steps_before, phase.epochs_before], loss=loss_signature(loss),
                                schedule_length=schedule_length, mix=repr(loop.mix), max_norm=loop.max_norm,
                                **({"sam": loop.sam} if loop.sam is not None else {}))
            done = self.memo.load(key)
            if done is not None:
                return self._reuse(model, done, name)
        dataset = self.train if rows is None else self.train.subset(rows)
        labels = self.train_y if rows is None else self.train_y[rows]
        group = current()
        loader = build_loader(dataset, labels, params.batch_size, sampler or self.sampler, self.seed, self.sampling,
                              workers=self.workers, pin_memory=self.loop.device.type == "cuda", rank=group.rank,
                              world=group.world)
        result = fit(model, loss, loader, loop, params, self.checkpoints(name), phase)
        if key is not None and current().main:
            self.memo.save(key, result, model.state_dict())
        return result

    def _reuse(self, model: nn.Module, done: dict, name: str) -> FitResult:
        """An identical fit's outcome: its last weights in ``model``, its log replayed, its selection returned."""
        model.load_state_dict(done["final"])
        if current().main:
            for step, key, value in done["history"]:
                self.loop.log(step, key, value)
        print(f"  {name or 'training'}: the same fit (settings, data and starting weights) ran before; "
              f"its result is reused")
        return FitResult(state=done["state"], best_epoch=done["best_epoch"], epochs_run=done["epochs_run"],
                         history=done["history"], steps=done["steps"], best_score=tuple(done["best_score"]),
                         scores=done["scores"])

    def predict(self, model: nn.Module, rows: np.ndarray, embed: bool = False) -> np.ndarray:
        """Logits (or, with ``embed``, output-layer features) of the training rows ``rows``, in order."""
        forward = predict_features if embed else predict_logits
        return forward(model, self.train.subset(rows), self.loop.device, self.input_size,
                       self.params.eval_batch_size, workers=self.workers, precision=self.loop.precision)


def standard(model: nn.Module, run: Run, spec: ScheduleParams) -> FitResult:
    return run.fit(model, "")


def selective_undersample(model: nn.Module, run: Run, spec: ScheduleParams) -> FitResult:
    """Zhou & Liu's rounds; the selected weights are the best of every epoch of every round."""
    s, target = spec.selective_undersample, run.sampling.target_ratio
    train, pool = initial_set(run.train_y, target, draw_generator(run.seed),
                              np.random.default_rng([run.seed, _SELECT_STREAM]))
    print(f"  round 0: {len(train)} photos ({run.counts(train)}), {len(pool)} set aside")
    results = [run.fit(model, "round-0", rows=train)]
    steps, epochs = results[0].steps, run.params.epochs
    rounds: list[dict] = [{"round": 0, "counts": run.counts(train), "set_aside": len(pool)}]
    round_params = replace(run.params, epochs=s.round_epochs)

    number = 1
    while len(pool) and (s.max_rounds is None or number <= s.max_rounds):
        done = selection_round(train, pool, run.train_y, growth=s.growth, target_ratio=target,
                               rng=np.random.default_rng([run.seed, _SELECT_STREAM, number]),
                               classify=lambda rows: run.predict(model, rows).argmax(axis=1),
                               embed=lambda rows: run.predict(model, rows, embed=True))
        train, pool = done.train, done.pool
        rounds.append({"round": number, "arrived": done.arrived, "dropped_correct": done.dropped_correct,
                       "dropped_boundary": done.dropped_boundary, "dropped_random": done.dropped_random,
                       "counts": run.counts(train), "set_aside": len(pool)})
        print(f"  round {number}: {done.arrived} arrived, dropped {done.dropped_correct} correctly classified, "
              f"{done.dropped_boundary} boundary, {done.dropped_random} random; {len(train)} photos, "
              f"{len(pool)} set aside")
        results.append(run.fit(model, f"round-{number}", rows=train, params=round_params,
                               phase=Phase(steps_before=steps, epochs_before=epochs)))
        steps, epochs = steps + results[-1].steps, epochs + s.round_epochs
        number += 1
    chosen = max(results, key=lambda r: r.best_score) if run.params.select == "best_val" else results[-1]
    history = [entry for r in results for entry in r.history]
    return FitResult(state=chosen.state, best_epoch=chosen.best_epoch, epochs_run=epochs, history=history,
                     steps=steps, best_score=chosen.best_score, details={"rounds": rounds})


def crt(model: nn.Module, run: Run, spec: ScheduleParams) -> FitResult:
    """Learn the representation with the strategy's own sampler, then re-train the output layer alone."""
    c = spec.crt
    sampler = run.classifier_sampler or c.sampler
    total = run.params.epochs + c.epochs          # DRW switches at a fraction of both phases together
    first = run.fit(model, "representation", phase=Phase(total_epochs=total))
    model.load_state_dict(first.state)
    torch.manual_seed(run.seed)
    reset = retrain_output_layer(model)
    print(f"  classifier re-training: {reset} re-initialised, the rest frozen; {c.epochs} epochs, sampler {sampler}")
    second = run.fit(model, "classifier", params=replace(run.params, epochs=c.epochs, lr=c.lr or run.params.lr),
                     sampler=sampler, phase=Phase(first.steps, run.params.epochs, total), classifier=True)
    return FitResult(state=second.state, best_epoch=second.best_epoch, epochs_run=run.params.epochs + c.epochs,
                     history=first.history + second.history, steps=first.steps + second.steps,
                     best_score=second.best_score,
                     details={"representation_epoch": first.best_epoch})


SCHEDULES: dict[str, Callable[[nn.Module, Run, ScheduleParams], FitResult]] = {
    "standard": standard,
    "selective_undersample": selective_undersample,
    "crt": crt,
}
