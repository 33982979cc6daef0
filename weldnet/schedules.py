"""The schedule axis of the training strategies: how a seed's training run is laid out in phases.

- ``standard``: one ``fit`` over ``train.epochs`` with the strategy's sampler.
- ``selective_undersample``: the report's section 6.4.5 (Zhou & Liu 2005): train on
  an under-sampled set, then rounds that bring in set-aside default-class photos
  and drop them by the redundant, boundary and random rules
  (``weldnet.selective``), each round followed by ``round_epochs`` more epochs.
- ``crt``: classifier re-training (Kang et al. 2020): a standard run learns the
  representation, then the output layer is re-initialised and trained alone, with
  class-balanced sampling, on the frozen network.

A loss whose class weights change with the epoch (``weighting: drw``) sees the
epoch counted over the whole schedule and its total length (``crt``: both phases);
``selective_undersample``, whose length is not known in advance, does not take drw.

Every phase checkpoints under its own name, so an interrupted run resumes at the
epoch it reached. The model is selected by validation per-class accuracy across
all phases (``train.select: best_val``), except that ``crt`` selects within its
re-training phase, the classifier it exists to produce.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from weldnet.data import PhotoDataset, build_loader
from weldnet.params import SamplingParams, ScheduleParams, TrainParams
from weldnet.sampling import draw_generator
from weldnet.selective import initial_set, selection_round
from weldnet.training import FitResult, Logger, Prepare, fit, predict_features, predict_logits
from weldnet.transfer import retrain_output_layer

# seeds the selective under-sampling draws apart from the training randomness
_SELECT_STREAM = 0x5E1E


Checkpoints = Callable[[str], tuple[Callable[[dict], None], Callable[[], dict | None]]]


@dataclass
class Run:
    """One seed's training inputs, shared by every schedule."""

    train: PhotoDataset                             # the training split: uint8 photos, class-index targets
    train_y: np.ndarray                             # their class labels, for the samplers and class counts
    validate: Callable[[nn.Module], dict[str, float]]   # validation scores of a model (weldnet.training)
    params: TrainParams
    sampler: str
    sampling: SamplingParams
    seed: int
    prepare: Prepare                                # uint8 batch -> model input (weldnet.training.task_input)
    input_size: int
    class_names: Sequence[str]
    device: torch.device
    name: str
    log: Logger
    make_loss: Callable[[list[int]], nn.Module]     # class counts of the rows trained on -> loss
    checkpoints: Checkpoints                        # phase name ('' for the only one) -> (save, load)

    def counts(self, rows: np.ndarray | None = None) -> list[int]:
        labels = self.train_y if rows is None else self.train_y[rows]
        return np.bincount(labels, minlength=len(self.class_names)).tolist()

    def fit(self, model: nn.Module, phase: str, *, rows: np.ndarray | None = None, params: TrainParams | None = None,
            sampler: str | None = None, step_offset: int = 0, epoch_offset: int = 0,
            total_epochs: int | None = None) -> FitResult:
        """``fit`` on the training rows ``rows`` (all by default), checkpointed under ``phase``.

        ``total_epochs``: the schedule's length over all its phases, for an epoch-dependent
        weighting (DRW); default: this phase's end.
        """
        params = params or self.params
        dataset = self.train if rows is None else self.train.subset(rows)
        labels = self.train_y if rows is None else self.train_y[rows]
        loader = build_loader(dataset, labels, params.batch_size, sampler or self.sampler, self.seed, self.sampling)
        save, load = self.checkpoints(phase)
        return fit(model, self.make_loss(self.counts(rows)), loader, self.validate, params=params, seed=self.seed,
                   prepare=self.prepare, device=self.device, name=self.name, log=self.log,
                   save_checkpoint=save, checkpoint=load(), step_offset=step_offset, epoch_offset=epoch_offset,
                   total_epochs=total_epochs)


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

    def predict(rows: np.ndarray, embed: bool = False) -> np.ndarray:
        forward = predict_features if embed else predict_logits
        return forward(model, run.train.images[torch.from_numpy(rows)], run.device, run.input_size,
                       run.params.eval_batch_size)

    number = 1
    while len(pool) and (s.max_rounds is None or number <= s.max_rounds):
        done = selection_round(train, pool, run.train_y, growth=s.growth, target_ratio=target,
                               rng=np.random.default_rng([run.seed, _SELECT_STREAM, number]),
                               classify=lambda rows: predict(rows).argmax(axis=1),
                               embed=lambda rows: predict(rows, embed=True))
        train, pool = done.train, done.pool
        rounds.append({"round": number, "arrived": done.arrived, "dropped_correct": done.dropped_correct,
                       "dropped_boundary": done.dropped_boundary, "dropped_random": done.dropped_random,
                       "counts": run.counts(train), "set_aside": len(pool)})
        print(f"  round {number}: {done.arrived} arrived, dropped {done.dropped_correct} correctly classified, "
              f"{done.dropped_boundary} boundary, {done.dropped_random} random; {len(train)} photos, "
              f"{len(pool)} set aside")
        results.append(run.fit(model, f"round-{number}", rows=train, params=round_params,
                               step_offset=steps, epoch_offset=epochs))
        steps, epochs = steps + results[-1].steps, epochs + s.round_epochs
        number += 1
    chosen = max(results, key=lambda r: r.best_score) if run.params.select == "best_val" else results[-1]
    history = [entry for r in results for entry in r.history]
    return FitResult(state=chosen.state, best_epoch=chosen.best_epoch, epochs_run=epochs, history=history,
                     steps=steps, best_score=chosen.best_score, details={"rounds": rounds})


def crt(model: nn.Module, run: Run, spec: ScheduleParams) -> FitResult:
    """Learn the representation with the strategy's own sampler, then re-train the output layer alone."""
    c = spec.crt
    total = run.params.epochs + c.epochs          # DRW switches at a fraction of both phases together
    first = run.fit(model, "representation", total_epochs=total)
    model.load_state_dict(first.state)
    torch.manual_seed(run.seed)
    reset = retrain_output_layer(model)
    print(f"  classifier re-training: {reset} re-initialised, the rest frozen; {c.epochs} epochs, sampler {c.sampler}")
    second = run.fit(model, "classifier", params=replace(run.params, epochs=c.epochs, lr=c.lr or run.params.lr),
                     sampler=c.sampler, step_offset=first.steps, epoch_offset=run.params.epochs, total_epochs=total)
    return FitResult(state=second.state, best_epoch=second.best_epoch, epochs_run=run.params.epochs + c.epochs,
                     history=first.history + second.history, steps=first.steps + second.steps,
                     best_score=second.best_score,
                     details={"representation_epoch": first.best_epoch})


SCHEDULES: dict[str, Callable[[nn.Module, Run, ScheduleParams], FitResult]] = {
    "standard": standard,
    "selective_undersample": selective_undersample,
    "crt": crt,
}
