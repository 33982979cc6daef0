"""The schema of params.yaml: one frozen dataclass per section, and the check of the whole file.

Every stage calls :func:`load_checked_params` before any work. It returns a typed
:class:`Params` or stops with one line naming the key and the fix, so a typo in
``train`` stops ``dvc repro`` at its first stage, not after the data has been
generated and preprocessed::

    python -m weldnet.core.params      # prints "params.yaml is valid" or the first problem, in one line

This module imports neither torch nor any other heavy library, so a stage that
only decodes photos does not pay for them. The names of each strategy axis are
declared here; each axis's registry (``LOSSES``, ``SAMPLERS``, ...) is keyed by
exactly these names (tests/test_params.py checks it).

Every default below is the value the committed params.yaml sets (also tested).
"""
from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from weldnet.core.config import ParamError, StageError, build, check_choice, check_range, load_params, run_stage, shown
from weldnet.core.flags import RIGS, canonical_flag

# ------------------------------------------------------------------ the names of each strategy axis
LOSS_NAMES: tuple[str, ...] = ("cross_entropy", "bayesian", "focal", "ldam", "logit_adjusted", "hinge")
WEIGHTING_NAMES: tuple[str, ...] = ("none", "inverse_frequency", "effective_number", "drw")
SAMPLER_NAMES: tuple[str, ...] = ("none", "oversample", "undersample", "stratified", "class_balanced")
SCHEDULE_NAMES: tuple[str, ...] = ("standard", "selective_undersample", "crt")
AUGMENT_NAMES: tuple[str, ...] = ("flip", "mixup", "cutmix", "remix")
DECISION_NAMES: tuple[str, ...] = ("argmax", "threshold_moving", "posthoc_logit")
ARCH_NAMES: tuple[str, ...] = ("small_cnn", "alexnet")
HEAD_NAMES: tuple[str, ...] = ("linear", "normed")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
MULTILABEL_LOSS_NAMES: tuple[str, ...] = ("bce", "logit_adjusted", "asymmetric")   # the inspection model's losses
INSPECT_SPLITS: tuple[str, ...] = ("train", "val", "calibration", "test")
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Losses that became weightings: the one-line hint for a params.yaml written before the weighting axis.
MOVED_LOSSES: dict[str, str] = {"weighted": "inverse_frequency", "class_balanced": "effective_number"}


def check_loss(value: str, where: str) -> str:
    """A loss name; the two losses that became weightings get a hint naming what to write instead."""
    if value in MOVED_LOSSES:
        raise ParamError(f"{where}: '{value}' is a weighting now; write loss: cross_entropy and "
                         f"weighting: {MOVED_LOSSES[value]} (docs/strategies.md)")
    return check_choice(value, LOSS_NAMES, where)


def check_workers(value: int, where: str) -> int:
    """Every ``workers`` param means the same: the number of worker processes, 0 for one per CPU."""
    if value < 0:
        raise ParamError(f"{where} = {value} must be >= 1, or 0 for one per CPU")
    check_range(value, where, 0, MAX_WORKERS)
    return value


# Bounds a real run can meet; a value outside is a typo, and would fail deep inside a stage
# (numpy seeds are 32-bit, a bootstrap of 10**12 resamples never ends).
SEED_LIMIT = 2 ** 32          # numpy and torch seeds: 0 <= seed < 2**32
MAX_WORKERS = 1024
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_LR = 10.0                 # SGD or Adam above this diverges at once
MAX_PHOTOS = 1_000_000        # per rig in generate (the report's data: 113,865 photos)
MAX_BOOTSTRAP = 100_000       # resamples; each is a pass over the test predictions
MAX_TAU = 100.0


def check_seed(value: int, where: str) -> int:
    """A random seed numpy and torch accept: an integer in [0, 2**32)."""
    if not 0 <= value < SEED_LIMIT:
        raise ParamError(f"{where} = {shown(value)} is not a seed numpy and torch accept; "
                         "use an integer from 0 to 4294967295 (2**32 - 1)")
    return value


# Names that become parts of paths (strategies: models/<name>, dvclive/<name>; tasks: plots/audit/...;
# classes: dvclive metric files) are safe names: no '/', '\\', '..', leading '-' or '.', no spaces
# or control characters. No dots at all: DVC reads `strategies.<name>` as a dotted key path.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
SAFE_NAME_RULE = "1 to 64 ASCII letters, digits, '_' or '-', not starting with '-'"


def check_name(name: str, where: str) -> str:
    """A name that becomes part of a file path: SAFE_NAME, or ParamError naming the rule."""
    if not SAFE_NAME.fullmatch(name):
        raise ParamError(f"{where}: {shown(name)} is not a safe name ({SAFE_NAME_RULE}); "
                         "it becomes part of file paths, rename it")
    return name


def check_input_path(value: str, where: str) -> str:
    """A read-only input path (it may point anywhere): not blank, no control characters such as NUL or newline."""
    if not value.strip():
        raise ParamError(f"{where} is blank; give a path")
    if not value.isprintable():
        raise ParamError(f"{where} = {shown(value)} holds a control character (NUL, newline, ...); fix the path")
    return value


# ------------------------------------------------------------------ data, generate, ingest
@dataclass(frozen=True)
class DataParams:
    export: str = "data/export"   # read-only input, anywhere (docs/data.md)

    def validate(self, where: str) -> None:
        check_input_path(self.export, f"{where}.export")


@dataclass(frozen=True)
class RigCounts:
    redbox: int
    bluebox: int


@dataclass(frozen=True)
class RigShares:
    redbox: float
    bluebox: float


@dataclass(frozen=True)
class Camera:
    blur: float          # Gaussian blur radius, output pixels (each photo varies it by +-25%)
    noise: float         # sensor noise standard deviation, 8-bit levels
    jpeg_quality: int    # PIL JPEG quality, 1..95


@dataclass(frozen=True)
class RigCameras:
    redbox: Camera
    bluebox: Camera


@dataclass(frozen=True)
class GenerateSpec:
    """The ``generate`` section: the embedded synthetic export."""

    seed: int = 2014
    size: RigCounts = field(default_factory=lambda: RigCounts(redbox=3000, bluebox=3000))
    label_noise: RigShares = field(default_factory=lambda: RigShares(redbox=0.10, bluebox=0.0))
    workers: int = 0
    camera: RigCameras = field(default_factory=lambda: RigCameras(
        redbox=Camera(blur=1.2, noise=7.0, jpeg_quality=75),
        bluebox=Camera(blur=0.0, noise=2.5, jpeg_quality=85)))

    def validate(self, where: str) -> None:
        check_seed(self.seed, f"{where}.seed")
        check_workers(self.workers, f"{where}.workers")
        for rig in RIGS:
            check_range(getattr(self.size, rig), f"{where}.size.{rig}", 0, MAX_PHOTOS)
            check_range(getattr(self.label_noise, rig), f"{where}.label_noise.{rig}", low=0, high=1)
            camera = getattr(self.camera, rig)
            check_range(camera.blur, f"{where}.camera.{rig}.blur", low=0, high=20)
            check_range(camera.noise, f"{where}.camera.{rig}.noise", low=0, high=64)
            check_range(camera.jpeg_quality, f"{where}.camera.{rig}.jpeg_quality", low=1, high=95)


@dataclass(frozen=True)
class IngestParams:
    max_pixels: int = 89_478_485  # Pillow's own decompression-bomb default
    strict: bool = False
    workers: int = 0

    def validate(self, where: str) -> None:
        check_range(self.max_pixels, f"{where}.max_pixels", 1, 1_000_000_000)
        check_workers(self.workers, f"{where}.workers")


# ------------------------------------------------------------------ audit
@dataclass(frozen=True)
class AuditParams:
    """The ``audit`` section: the label audit (docs/label-audit.md)."""

    seed: int = 0
    review_size: int = 50            # flagless photos drawn per rig for the review sheet
    review_sheet: str | None = None  # a filled-in review sheet (CSV) or null
    thumb_size: int = 64             # side of the square thumbnails the cheap model sees
    sheet_thumb: int = 160           # longest side of a thumbnail on a contact sheet
    folds: int = 2                   # k of the k-fold cross-validation
    epochs: int = 20                 # training epochs of each fold's model
    batch_size: int = 64
    learning_rate: float = 0.003     # peak of the one-cycle schedule (AdamW)
    weight_decay: float = 0.0001     # AdamW weight decay
    warmup: float = 0.2              # share of the steps over which the learning rate rises
    width: int = 16                  # channels of the first convolution of the cheap CNN
    min_flag_count: int = 20         # flags with fewer photos (with or without) on a rig are not modelled
    min_class_count: int = 20        # a class with fewer photos on a rig is not estimable there
    min_auc: float = 0.75            # below this worst-class out-of-fold AUC the model cannot see the task
    bootstrap: int = 100             # resamples for the automatic estimate's interval
    suspects_sheet: int = 40         # suspects shown on each contact sheet
    cross_rig_threshold: float = 0.5  # probability from which the Bluebox model predicts a flag
    workers: int = 0                 # processes decoding thumbnails and training folds
    mixed_precision: bool = True     # bf16 autocast where the device computes it natively (CUDA, a CPU with AMX)
    drop_suspects: bool = False      # read by pretrain: drop the suspected mislabelled photos

    def validate(self, where: str) -> None:
        check_seed(self.seed, f"{where}.seed")
        check_range(self.review_size, f"{where}.review_size", 0, 10_000)
        check_range(self.thumb_size, f"{where}.thumb_size", 16, 256)
        check_range(self.sheet_thumb, f"{where}.sheet_thumb", 32, 512)
        check_range(self.folds, f"{where}.folds", 2, 20)
        check_range(self.epochs, f"{where}.epochs", 1, 200)
        check_range(self.batch_size, f"{where}.batch_size", 1, 4096)
        check_range(self.learning_rate, f"{where}.learning_rate", 0, 1, low_open=True)
        check_range(self.weight_decay, f"{where}.weight_decay", 0, 1)
        check_range(self.warmup, f"{where}.warmup", 0, 1, low_open=True, high_open=True)
        check_range(self.width, f"{where}.width", 1, 256)
        check_range(self.min_flag_count, f"{where}.min_flag_count", 1, MAX_PHOTOS)
        check_range(self.min_class_count, f"{where}.min_class_count", 1, MAX_PHOTOS)
        check_range(self.min_auc, f"{where}.min_auc", 0.5, 1)
        check_range(self.bootstrap, f"{where}.bootstrap", 0, 10_000)
        check_range(self.suspects_sheet, f"{where}.suspects_sheet", 0, 500)
        check_range(self.cross_rig_threshold, f"{where}.cross_rig_threshold", 0, 1, True, True)
        check_workers(self.workers, f"{where}.workers")
        if self.review_sheet is not None and not self.review_sheet.strip():
            raise ParamError(f"{where}.review_sheet is blank; give the path of a filled-in sheet or null")
        if self.review_sheet is not None:
            check_input_path(self.review_sheet, f"{where}.review_sheet")


# ------------------------------------------------------------------ preprocess, tasks, imbalance
@dataclass(frozen=True)
class PreprocessParams:
    size: int = 256
    shard_size: int = 1000
    workers: int = 0

    def validate(self, where: str) -> None:
        check_range(self.size, f"{where}.size", low=8, high=4096)
        check_range(self.shard_size, f"{where}.shard_size", 1, MAX_PHOTOS)
        check_workers(self.workers, f"{where}.workers")


@dataclass(frozen=True)
class TaskSpec:
    """One task of ``tasks``: the rigs it uses, its default class and its flag classes (weldnet.photos.tasks)."""

    default: str
    classes: dict[str, list[str]]
    rigs: list[str] = field(default_factory=lambda: ["bluebox"])

    def validate(self, where: str) -> None:
        check_name(self.default, f"{where}.default")
        for name in self.classes:
            check_name(name, f"{where}.classes")
        if not self.classes:
            raise ParamError(f"{where}.classes is empty; a task needs at least one class besides '{self.default}'")
        if self.default in self.classes:
            raise ParamError(f"{where}: class '{self.default}' is both the default and a flag class; rename one")
        for rig in self.rigs:
            if rig not in RIGS:
                raise ParamError(f"{where}.rigs: unknown rig '{rig}'; valid: {', '.join(RIGS)}")
        for name, flags in self.classes.items():
            if not flags:
                raise ParamError(f"{where}.classes.{name} lists no flag; give it at least one Table 1 flag")
            for flag in flags:
                if canonical_flag(flag) is None:
                    raise ParamError(f"{where}.classes.{name}: unknown flag '{flag}'; see the Table 1 names in the README")

    @property
    def class_names(self) -> list[str]:
        return [self.default, *self.classes]

    def class_flags(self) -> list[list[str]]:
        """Canonical flag names of each non-default class, in class order."""
        return [[canonical_flag(f) for f in flags] for flags in self.classes.values()]


@dataclass(frozen=True)
class ImbalanceParams:
    seed: int = 0
    split: dict[str, float] = field(default_factory=lambda: {"train": 0.6, "val": 0.2, "test": 0.2})
    ratio: float | None = 0.98

    def validate(self, where: str) -> None:
        check_seed(self.seed, f"{where}.seed")
        if sorted(self.split) != sorted(SPLITS):
            raise ParamError(f"{where}.split must have exactly the keys {', '.join(SPLITS)}; got {', '.join(self.split)}")
        for name, share in self.split.items():
            if share <= 0:
                raise ParamError(f"{where}.split.{name} = {shown(share)}: every split needs photos (validation "
                                 "chooses epochs and thresholds, test scores them); give it a share above 0")
            check_range(share, f"{where}.split.{name}", 0.0, 1.0, low_open=True)
        if abs(sum(self.split.values()) - 1.0) > 1e-6:
            raise ParamError(f"{where}.split shares sum to {sum(self.split.values()):g}; make them sum to 1")
        if self.ratio is not None:
            check_range(self.ratio, f"{where}.ratio", 0.0, 1.0, low_open=True, high_open=True)


# ------------------------------------------------------------------ model and training
@dataclass(frozen=True)
class ModelParams:
    arch: str = "small_cnn"
    input_size: int = 64
    width: int = 16
    dropout: float = 0.3
    head: str = "linear"     # normed: cosine logits, for LDAM (Cao et al. 2019)
    mixed_precision: bool = True   # channels-last memory; bf16 autocast on CUDA (fp16 without bf16) and AMX CPUs

    def validate(self, where: str) -> None:
        check_choice(self.arch, ARCH_NAMES, f"{where}.arch")
        check_choice(self.head, HEAD_NAMES, f"{where}.head")
        check_range(self.input_size, f"{where}.input_size", 16, 1024)
        check_range(self.width, f"{where}.width", 1, 512)
        check_range(self.dropout, f"{where}.dropout", 0.0, 1.0, high_open=True)
        if self.arch == "alexnet" and self.input_size < 63:
            raise ParamError(f"{where}.input_size = {self.input_size} is too small for alexnet; use 224")


@dataclass(frozen=True)
class OptimParams:
    """What one training run of the shared loop needs besides its model, loss and data."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.01
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    flip: bool = True
    select: Literal["best_val", "last"] = "best_val"
    eval_batch_size: int = 64        # prediction batches: on a CPU 64 photos stay in cache (1.5x faster than 256)

    def validate(self, where: str) -> None:
        check_range(self.epochs, f"{where}.epochs", 1, MAX_EPOCHS)
        check_range(self.batch_size, f"{where}.batch_size", 1, MAX_BATCH)
        check_range(self.lr, f"{where}.lr", 0.0, MAX_LR, low_open=True)
        check_range(self.momentum, f"{where}.momentum", 0.0, 1.0, high_open=True)
        check_range(self.weight_decay, f"{where}.weight_decay", 0.0, 1.0)
        check_range(self.eval_batch_size, f"{where}.eval_batch_size", 1, MAX_BATCH)


@dataclass(frozen=True)
class TrainParams(OptimParams):
    """The ``train`` section: the shared loop's settings, and the seeds every strategy runs."""

    seeds: list[int] = field(default_factory=lambda: [0, 1])
    nproc_per_node: int = 1          # processes training each model (torchrun; one per GPU on CUDA)
    seed_processes: int = 0          # seeds trained at once on a CPU (0: as many as seeds and CPUs allow)

    def validate(self, where: str) -> None:
        super().validate(where)
        check_range(self.nproc_per_node, f"{where}.nproc_per_node", 1, 1024)
        check_range(self.seed_processes, f"{where}.seed_processes", 0, 1024)
        if not self.seeds:
            raise ParamError(f"{where}.seeds is empty; list at least one seed, e.g. [0]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ParamError(f"{where}.seeds lists a seed twice; list each once")
        if len(self.seeds) > 100:
            raise ParamError(f"{where}.seeds lists {len(self.seeds)} seeds; each trains every strategy once, "
                             "list at most 100")
        for k, seed in enumerate(self.seeds):
            check_seed(seed, f"{where}.seeds[{k}]")


@dataclass(frozen=True)
class FocalParams:
    gamma: float = 2.0
    alpha: float | None = None

    def validate(self, where: str) -> None:
        check_range(self.gamma, f"{where}.gamma", 0.0, 50.0)
        if self.alpha is not None:
            check_range(self.alpha, f"{where}.alpha", low=0.0, high=1.0)


@dataclass(frozen=True)
class LdamParams:
    max_margin: float = 0.5
    scale: float = 30.0

    def validate(self, where: str) -> None:
        check_range(self.max_margin, f"{where}.max_margin", 0.0, 10.0)
        check_range(self.scale, f"{where}.scale", 0.0, 1000.0, low_open=True)


@dataclass(frozen=True)
class LogitAdjustedParams:
    tau: float = 1.0

    def validate(self, where: str) -> None:
        check_range(self.tau, f"{where}.tau", 0.0, MAX_TAU)


@dataclass(frozen=True)
class HingeParams:
    margin: float = 1.0

    def validate(self, where: str) -> None:
        check_range(self.margin, f"{where}.margin", 0.0, 100.0, low_open=True)


@dataclass(frozen=True)
class LabelSmoothingParams:
    """Label-aware smoothing (Zhong et al. 2021, MiSLAS): ``head`` for the largest class, ``tail`` for the smallest."""

    head: float = 0.3
    tail: float = 0.0

    def validate(self, where: str) -> None:
        check_range(self.head, f"{where}.head", low=0.0, high=1.0, high_open=True)
        check_range(self.tail, f"{where}.tail", low=0.0, high=1.0, high_open=True)


@dataclass(frozen=True)
class LossParams:
    """The ``losses`` section: hyperparameters of every loss that has any, and of label smoothing."""

    focal: FocalParams = field(default_factory=FocalParams)
    ldam: LdamParams = field(default_factory=LdamParams)
    logit_adjusted: LogitAdjustedParams = field(default_factory=LogitAdjustedParams)
    hinge: HingeParams = field(default_factory=HingeParams)
    label_smoothing: LabelSmoothingParams = field(default_factory=LabelSmoothingParams)


@dataclass(frozen=True)
class MixupParams:
    alpha: float = 1.0              # mixing ratio drawn from Beta(alpha, alpha) (Zhang et al. 2018)

    def validate(self, where: str) -> None:
        check_range(self.alpha, f"{where}.alpha", low=0.0, low_open=True)


@dataclass(frozen=True)
class RemixParams:
    alpha: float = 1.0              # images mixed as mixup, ratio from Beta(alpha, alpha)
    kappa: float = 3.0              # class-size ratio from which the label tilts to the smaller class
    tau: float = 0.5                # ... when the smaller class's share of the image is at least 1 - tau

    def validate(self, where: str) -> None:
        check_range(self.alpha, f"{where}.alpha", low=0.0, low_open=True)
        check_range(self.kappa, f"{where}.kappa", low=1.0)
        check_range(self.tau, f"{where}.tau", low=0.0, high=1.0)


@dataclass(frozen=True)
class AugmentationParams:
    """The ``augmentations`` section: constants of the augmentation axis (weldnet/strategies/augment.py)."""

    mixup: MixupParams = field(default_factory=MixupParams)
    cutmix: MixupParams = field(default_factory=MixupParams)     # box area share from Beta(alpha, alpha) (Yun et al.)
    remix: RemixParams = field(default_factory=RemixParams)


@dataclass(frozen=True)
class EffectiveNumberParams:
    beta: float = 0.9999            # effective-number beta in [0, 1) (Cui et al. 2019)

    def validate(self, where: str) -> None:
        check_range(self.beta, f"{where}.beta", low=0.0, high=1.0, high_open=True)


@dataclass(frozen=True)
class DrwParams:
    start: float = 0.8              # switch epoch, a fraction of the schedule's epochs (Cao et al.: 160 of 200)
    beta: float = 0.9999            # effective-number beta of the weights from the switch on

    def validate(self, where: str) -> None:
        check_range(self.start, f"{where}.start", low=0.0, high=1.0)
        check_range(self.beta, f"{where}.beta", low=0.0, high=1.0, high_open=True)


@dataclass(frozen=True)
class WeightingParams:
    """The ``weightings`` section: settings of the class re-weighting axis (weldnet/strategies/losses.py, WEIGHTINGS).

    ``none`` and ``inverse_frequency`` have no settings.
    """

    effective_number: EffectiveNumberParams = field(default_factory=EffectiveNumberParams)
    drw: DrwParams = field(default_factory=DrwParams)


@dataclass(frozen=True)
class SamplingParams:
    """The ``sampling`` section: the sampler axis (weldnet/strategies/sampling.py)."""

    target_ratio: float = 0.88
    redraw_each_epoch: bool = False

    def validate(self, where: str) -> None:
        check_range(self.target_ratio, f"{where}.target_ratio", low=0.0, high=1.0, low_open=True, high_open=True)


@dataclass(frozen=True)
class SelectiveParams:
    growth: float = 0.5             # each round brings in this share of the current set's size
    round_epochs: int = 3           # epochs trained after each round
    max_rounds: int | None = None   # null: until no default-class photo is left set aside

    def validate(self, where: str) -> None:
        check_range(self.growth, f"{where}.growth", 0.0, 100.0, low_open=True)
        check_range(self.round_epochs, f"{where}.round_epochs", 1, MAX_EPOCHS)
        if self.max_rounds is not None:
            check_range(self.max_rounds, f"{where}.max_rounds", 0, MAX_EPOCHS)


@dataclass(frozen=True)
class CrtParams:
    epochs: int = 5                 # epochs re-training the output layer
    lr: float | None = None         # null: train.lr
    sampler: str = "class_balanced"

    def validate(self, where: str) -> None:
        check_range(self.epochs, f"{where}.epochs", 1, MAX_EPOCHS)
        if self.lr is not None:
            check_range(self.lr, f"{where}.lr", 0.0, MAX_LR, low_open=True)
        check_choice(self.sampler, SAMPLER_NAMES, f"{where}.sampler")


@dataclass(frozen=True)
class ScheduleParams:
    """The ``schedules`` section: the schedule axis (weldnet/train/schedules.py)."""

    selective_undersample: SelectiveParams = field(default_factory=SelectiveParams)
    crt: CrtParams = field(default_factory=CrtParams)


@dataclass(frozen=True)
class PretrainParams(OptimParams):
    """The ``pretrain`` section: multi-label training on every common Redbox flag (init: redbox).

    It runs the same loop as the train stages with its own optimiser settings, so a
    change to ``train`` does not re-run it. The last epoch's weights are kept.
    """

    epochs: int = 6
    select: Literal["best_val", "last"] = "last"
    min_flag_count: int = 20
    val_share: float = 0.15
    seed: int = 0

    def validate(self, where: str) -> None:
        super().validate(where)
        check_seed(self.seed, f"{where}.seed")
        check_range(self.min_flag_count, f"{where}.min_flag_count", 1, MAX_PHOTOS)
        check_range(self.val_share, f"{where}.val_share", 0.0, 0.5, low_open=True)


@dataclass(frozen=True)
class CrtStage:
    """The re-training phase of ``schedule: crt``, where it differs from the strategy's first phase."""

    loss: str | None = None             # null: the strategy's loss
    weighting: str | None = None        # null: the strategy's weighting
    label_smoothing: bool = False       # label-aware smoothing with losses.label_smoothing
    max_norm: float | None = None       # null: no cap on the output layer's per-class weight norms
    sampler: str | None = None          # null: schedules.crt.sampler (class_balanced)

    def validate(self, where: str) -> None:
        if self.loss is not None:
            check_loss(self.loss, f"{where}.loss")
        if self.weighting is not None:
            check_choice(self.weighting, WEIGHTING_NAMES, f"{where}.weighting")
        if self.sampler is not None:
            check_choice(self.sampler, SAMPLER_NAMES, f"{where}.sampler")
        if self.max_norm is not None:
            check_range(self.max_norm, f"{where}.max_norm", low=0.0, low_open=True)


@dataclass(frozen=True)
class Strategy:
    """A named choice on each axis (docs/strategies.md); a new combination needs no code."""

    loss: str | None = None                                   # null: the top-level `loss`
    weighting: str = "none"                                   # class weights inside the loss (WEIGHTING_NAMES)
    sampler: str = "none"
    init: Literal["scratch", "redbox", "imagenet"] = "scratch"
    transfer: Literal["conv", "full"] = "full"                # pretrained layers copied when init is not scratch
    freeze: int = 0                                           # lowest conv layers kept fixed
    schedule: str = "standard"                                # standard | selective_undersample | crt
    head: str | None = None                                   # null: model.head
    decision: str = "argmax"
    reuse: str | None = None                                  # apply `decision` to this strategy's model
    augment: str = "flip"                                     # flip (train.flip alone) | mixup | cutmix | remix
    weight_decay: float | None = None                         # null: train.weight_decay
    max_norm: float | None = None                             # per-class weight-norm cap of the output layer
    sam: float | None = None                                  # SAM's neighbourhood radius rho; null: plain steps
    crt: CrtStage = field(default_factory=CrtStage)           # schedule crt: its re-training phase's settings

    def validate(self, where: str) -> None:
        if self.loss is not None:
            check_loss(self.loss, f"{where}.loss")
        check_choice(self.augment, AUGMENT_NAMES, f"{where}.augment")
        if self.weight_decay is not None:
            check_range(self.weight_decay, f"{where}.weight_decay", low=0.0)
        if self.max_norm is not None:
            check_range(self.max_norm, f"{where}.max_norm", low=0.0, low_open=True)
        if self.sam is not None:
            check_range(self.sam, f"{where}.sam", low=0.0, high=10.0, low_open=True)
        if self.crt != CrtStage() and self.schedule != "crt":
            raise ParamError(f"{where}.crt sets the re-training phase of schedule crt, but the schedule is "
                             f"{self.schedule}; set schedule: crt or drop crt")
        if self.reuse is not None and (self.augment != "flip" or self.weight_decay is not None
                                       or self.max_norm is not None or self.sam is not None):
            raise ParamError(f"{where}: reuse trains nothing, so augment, weight_decay, max_norm and sam have no "
                             "effect; drop them")
        check_choice(self.weighting, WEIGHTING_NAMES, f"{where}.weighting")
        check_choice(self.sampler, SAMPLER_NAMES, f"{where}.sampler")
        check_choice(self.decision, DECISION_NAMES, f"{where}.decision")
        check_choice(self.schedule, SCHEDULE_NAMES, f"{where}.schedule")
        if self.head is not None:
            check_choice(self.head, HEAD_NAMES, f"{where}.head")
        if self.schedule == "selective_undersample" and self.sampler != "none":
            raise ParamError(f"{where}: schedule selective_undersample chooses its own training rows; "
                             f"drop sampler: {self.sampler} (or set sampler: none)")
        if self.reuse is not None and self.schedule != "standard":
            raise ParamError(f"{where}: reuse trains nothing, so schedule: {self.schedule} has no effect; drop it")
        if self.reuse is not None and self.weighting != "none":
            raise ParamError(f"{where}: reuse trains nothing, so weighting: {self.weighting} has no effect; drop it")
        if self.weighting == "drw" and self.schedule == "selective_undersample":
            raise ParamError(f"{where}: weighting drw switches at a fraction of the schedule's epochs, and "
                             "selective_undersample's rounds are not known in advance (they depend on what the "
                             "net gets right); use inverse_frequency or effective_number with it")
        check_range(self.freeze, f"{where}.freeze", 0, 64)
        if self.freeze and self.init == "scratch":
            raise ParamError(f"{where}.freeze = {self.freeze} freezes random weights; set init: redbox or imagenet")


# ------------------------------------------------------------------ how photos are read
@dataclass(frozen=True)
class LoaderParams:
    """The ``loader`` section: how training, pretraining, evaluation and the audit read photos.

    Results never depend on it (tests/test_data.py), so no stage lists it in dvc.yaml:
    changing it re-runs nothing.
    """

    workers: int = 0           # processes reading photos not held in memory (1: the training process itself)
    cache_mb: int = 3072       # photos kept where the model runs (RAM, or GPU memory on CUDA) while they fit

    def validate(self, where: str) -> None:
        check_workers(self.workers, f"{where}.workers")
        check_range(self.cache_mb, f"{where}.cache_mb", 0, 1 << 22)     # up to 4 TiB


# ------------------------------------------------------------------ evaluate
TAU_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class DecisionParams:
    """What the decision rules fit on validation (post-hoc logit adjustment's tau grid)."""

    tau_grid: list[float] = field(default_factory=lambda: list(TAU_GRID))

    def validate(self, where: str) -> None:
        if not self.tau_grid:
            raise ParamError(f"{where}.tau_grid is empty; list the tau values to try, e.g. [0.5, 1.0, 2.0]")
        if len(self.tau_grid) > 1000:
            raise ParamError(f"{where}.tau_grid lists {len(self.tau_grid)} values; a grid of at most 1000 will do")
        for tau in self.tau_grid:
            check_range(tau, f"{where}.tau_grid", 0.0, MAX_TAU)


@dataclass(frozen=True)
class EvaluateParams:
    bootstrap: int = 1000
    seed: int = 0
    target_recall: float = 0.95
    tau_grid: list[float] = field(default_factory=lambda: list(TAU_GRID))
    baseline: str | None = "baseline"   # paired comparisons against this strategy (and the best on validation)
    paired_bootstrap: int = 10000       # resamples of the paired bootstrap (weldnet/scoring/paired.py)
    alpha: float = 0.05                 # family-wise level of the Holm-corrected verdicts; intervals are 1 - alpha

    def validate(self, where: str) -> None:
        check_range(self.bootstrap, f"{where}.bootstrap", 10, MAX_BOOTSTRAP)
        check_seed(self.seed, f"{where}.seed")
        check_range(self.target_recall, f"{where}.target_recall", 0.0, 1.0, low_open=True)
        DecisionParams(self.tau_grid).validate(where)
        check_range(self.paired_bootstrap, f"{where}.paired_bootstrap", 100, 1_000_000)
        check_range(self.alpha, f"{where}.alpha", 0.0, 0.5, low_open=True, high_open=True)

    @property
    def decisions(self) -> DecisionParams:
        return DecisionParams(self.tau_grid)


# ------------------------------------------------------------------ triage
@dataclass(frozen=True)
class TriageParams:
    """The ``triage`` section: the inspector's bundle (docs/triage.md; weldnet.triage.certify)."""

    strategy: str | None = None      # null: the study's best by validation per-class accuracy
    seed: int | None = None          # null: that strategy's best seed by validation per-class accuracy
    target_recall: float = 0.95      # recall on flawed photos to guarantee (report section 6.4.6)
    confidence: float = 0.95         # confidence of the guarantee (one-sided Clopper-Pearson)

    def validate(self, where: str) -> None:
        check_range(self.target_recall, f"{where}.target_recall", 0.0, 1.0, low_open=True, high_open=True)
        check_range(self.confidence, f"{where}.confidence", 0.0, 1.0, low_open=True, high_open=True)
        if self.seed is not None:
            check_seed(self.seed, f"{where}.seed")


# ------------------------------------------------------------------ whole-photo inspection
@dataclass(frozen=True)
class AsymmetricParams:
    """The asymmetric loss of Ridnik et al. 2021 (weldnet/strategies/multilabel.py); their defaults."""

    gamma_pos: float = 0.0           # focusing exponent on photos carrying the flag
    gamma_neg: float = 4.0           # focusing exponent on photos without it
    clip: float = 0.05               # probability shift m: negatives below it cost nothing

    def validate(self, where: str) -> None:
        check_range(self.gamma_pos, f"{where}.gamma_pos", 0.0)
        check_range(self.gamma_neg, f"{where}.gamma_neg", 0.0)
        check_range(self.clip, f"{where}.clip", 0.0, 1.0, high_open=True)


@dataclass(frozen=True)
class InspectParams(OptimParams):
    """The ``inspect`` section: one multi-label model over every common flag of a rig (weldnet.triage.inspect).

    It runs the shared training loop once per candidate loss, keeps the loss whose
    model clears most perfect validation photos, and certifies the whole-photo rule
    on the calibration split (weldnet.triage.simultaneous).
    """

    epochs: int = 6
    rig: str = "bluebox"
    losses: list[str] = field(default_factory=lambda: ["logit_adjusted"])   # validation chose it of the three
    tau: float = 1.0                 # scale of each flag's prior log-odds (bce: subtracted after; logit_adjusted: added)
    asymmetric: AsymmetricParams = field(default_factory=AsymmetricParams)
    min_flag_count: int = 20         # training photos a flag needs to get an output
    split: dict[str, float] = field(default_factory=lambda: {"train": 0.5, "val": 0.15, "calibration": 0.2,
                                                             "test": 0.15})
    seed: int = 0

    def validate(self, where: str) -> None:
        super().validate(where)
        check_choice(self.rig, RIGS, f"{where}.rig")
        if not self.losses:
            raise ParamError(f"{where}.losses is empty; list at least one of {', '.join(MULTILABEL_LOSS_NAMES)}")
        for name in self.losses:
            check_choice(name, MULTILABEL_LOSS_NAMES, f"{where}.losses")
        if len(set(self.losses)) != len(self.losses):
            raise ParamError(f"{where}.losses lists a loss twice; list each once")
        check_range(self.tau, f"{where}.tau", 0.0)
        check_range(self.min_flag_count, f"{where}.min_flag_count", 1)
        if sorted(self.split) != sorted(INSPECT_SPLITS):
            raise ParamError(f"{where}.split must have exactly the keys {', '.join(INSPECT_SPLITS)}; "
                             f"got {', '.join(self.split)}")
        for name, share in self.split.items():
            check_range(share, f"{where}.split.{name}", 0.0, 1.0, low_open=True)
        if abs(sum(self.split.values()) - 1.0) > 1e-6:
            raise ParamError(f"{where}.split shares sum to {sum(self.split.values()):g}; make them sum to 1")


# ------------------------------------------------------------------ the whole file
@dataclass(frozen=True)
class Params:
    """params.yaml, typed. Sections other than task, tasks, strategies and study may be left out."""

    task: str
    tasks: dict[str, TaskSpec]
    strategies: dict[str, Strategy]
    study: list[str]
    data: DataParams = field(default_factory=DataParams)
    generate: GenerateSpec = field(default_factory=GenerateSpec)
    ingest: IngestParams = field(default_factory=IngestParams)
    audit: AuditParams = field(default_factory=AuditParams)
    preprocess: PreprocessParams = field(default_factory=PreprocessParams)
    imbalance: ImbalanceParams = field(default_factory=ImbalanceParams)
    device: str = "auto"
    loss: str = "cross_entropy"
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    losses: LossParams = field(default_factory=LossParams)
    weightings: WeightingParams = field(default_factory=WeightingParams)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    schedules: ScheduleParams = field(default_factory=ScheduleParams)
    augmentations: AugmentationParams = field(default_factory=AugmentationParams)
    pretrain: PretrainParams = field(default_factory=PretrainParams)
    ceiling: list[str] = field(default_factory=lambda: ["baseline"])
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    triage: TriageParams = field(default_factory=TriageParams)
    inspect: InspectParams = field(default_factory=InspectParams)
    loader: LoaderParams = field(default_factory=LoaderParams)

    def validate(self, where: str) -> None:
        if not self.tasks:
            raise ParamError("tasks must map task names to {default, classes, rigs}; see docs/parameters.md")
        for name in self.tasks:
            check_name(name, "tasks")
        for name in self.strategies:
            check_name(name, "strategies")
        check_choice(self.task, self.tasks, "task")
        check_choice(self.device, DEVICES, "device")
        check_loss(self.loss, "loss")
        if not self.strategies:
            raise ParamError("strategies must map strategy names to their axes; see docs/strategies.md")
        for name, strategy in self.strategies.items():
            if strategy.reuse is not None:
                check_choice(strategy.reuse, self.strategies, f"strategies.{name}.reuse")
                if self.strategies[strategy.reuse].reuse is not None:
                    raise ParamError(f"strategies.{name}.reuse names '{strategy.reuse}', which reuses another; "
                                     "reuse a strategy that trains")
        if not self.study:
            raise ParamError("study must be a non-empty list of strategy names, e.g. [baseline, bayesian]")
        for name in self.study:
            check_choice(name, self.strategies, "study")
            source = self.strategies[name].reuse
            if source is not None and source not in self.study:
                raise ParamError(f"study lists '{name}', which reuses '{source}'; add '{source}' to study")
        if len(set(self.study)) != len(self.study):
            raise ParamError("study lists a strategy twice; list each once")
        if self.triage.strategy is not None and self.triage.strategy not in self.study:
            raise ParamError(f"triage.strategy: '{self.triage.strategy}' is not in study; valid: null (the best by "
                             f"validation), {', '.join(self.study)}")
        if self.triage.seed is not None and self.triage.seed not in self.train.seeds:
            raise ParamError(f"triage.seed = {self.triage.seed} is not in train.seeds "
                             f"{self.train.seeds}; use one of them or null")
        for name in self.ceiling:
            if name not in self.study:
                raise ParamError(f"ceiling lists '{name}', which is not in study; add it to study or drop it "
                                 "from ceiling")
            source = self.strategies[name].reuse
            if source is not None and source not in self.ceiling:
                raise ParamError(f"ceiling lists '{name}', which reuses '{source}'; add '{source}' to ceiling")
        if len(set(self.ceiling)) != len(self.ceiling):
            raise ParamError("ceiling lists a strategy twice; list each once")
        if self.evaluate.baseline is not None:
            check_choice(self.evaluate.baseline, self.strategies, "evaluate.baseline")
        for name, strategy in self.strategies.items():
            capped = strategy.max_norm is not None or strategy.crt.max_norm is not None
            if capped and (strategy.head or self.model.head) == "normed":
                raise ParamError(f"strategies.{name}: head normed already fixes every class's weight norm, so max_norm "
                                 "has no effect; drop max_norm or use head: linear")

    @property
    def selected_task(self) -> TaskSpec:
        return self.tasks[self.task]

    def resolved_loss(self, name: str) -> str:
        """Strategy ``name``'s own loss, or the top-level ``loss`` when it sets none."""
        return self.strategies[name].loss or self.loss


@dataclass(frozen=True)
class Pretrained:
    """Weights a strategy starts from, by path and content (so new weights mean a new configuration)."""

    path: str
    sha256: str


@dataclass(frozen=True)
class StrategyConfig:
    """One strategy, fully resolved (weldnet.core.resolve): all its train stage reads of the configuration.

    The configure stage writes one per strategy of ``study``; each train stage
    depends on its own file only, so a params change re-runs exactly the strategies
    it changes. A strategy that reuses another's model carries only ``name`` and
    ``strategy``. Sections a strategy does not use are left out of its file and
    take their defaults here, unread.
    """

    name: str
    strategy: Strategy
    loss: str | None = None
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    losses: LossParams = field(default_factory=LossParams)
    weightings: WeightingParams = field(default_factory=WeightingParams)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    schedules: ScheduleParams = field(default_factory=ScheduleParams)
    augmentations: AugmentationParams = field(default_factory=AugmentationParams)
    device: str = "auto"
    pretrained: Pretrained | None = None

    def validate(self, where: str) -> None:
        check_name(self.name, f"{where}.name")
        check_choice(self.device, DEVICES, f"{where}.device")
        if self.strategy.reuse is None:
            if self.loss is None:
                raise ParamError(f"{where}: no loss; re-run the configure stage (dvc repro configure)")
            check_loss(self.loss, f"{where}.loss")
            if self.strategy.init == "redbox" and self.pretrained is None:
                raise ParamError(f"{where}: init redbox without pretrained weights; re-run the configure stage")


# keys that moved to the weighting axis: (section, key) -> where they live now
MOVED_KEYS: dict[tuple[str, str], str] = {
    ("class_balanced", "beta"): "weightings.effective_number.beta (with a strategy's weighting: effective_number)",
    ("ldam", "drw"): "a strategy's weighting: drw",
    ("ldam", "drw_start"): "weightings.drw.start (with a strategy's weighting: drw)",
    ("ldam", "drw_beta"): "weightings.drw.beta (with a strategy's weighting: drw)",
}


def _check_moved_keys(raw: object) -> None:
    """One line naming the new place of a key that moved to the weighting axis."""
    losses = raw.get("losses") if isinstance(raw, dict) else None
    if not isinstance(losses, dict):
        return
    for (loss, key), now in MOVED_KEYS.items():
        block = losses.get(loss)
        if isinstance(block, dict) and key in block or (loss == "class_balanced" and loss in losses):
            raise ParamError(f"losses.{loss}.{key} moved to the weighting axis; set {now} instead "
                             "(docs/strategies.md)")


def check_params(raw: object) -> Params:
    """The typed params, or ParamError on the first unknown key, wrong type, unknown name or bad value."""
    _check_moved_keys(raw)
    return build(Params, raw, "")


def load_checked_params(path: str | Path = "params.yaml") -> Params:
    """params.yaml, checked whole and typed; every stage calls this before any work.

    With the environment variable ``WELDNET_PARAMS_HOOK`` set to ``module:function``,
    the typed params pass through that function first: tests/params_reads.py uses it
    to note each key a stage reads, which tests/test_pipeline.py compares with the
    stage's ``params`` in dvc.yaml.
    """
    params = check_params(load_params(path))
    hook = os.environ.get(HOOK_ENV)
    return params if not hook else _hook(hook)(params)


HOOK_ENV = "WELDNET_PARAMS_HOOK"


def _hook(spec: str) -> Callable[[Params], Params]:
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise StageError(f"{HOOK_ENV}={spec!r} names no function to import ({exc}); "
                         "set it to module:function or unset it") from None


def main() -> None:
    load_checked_params()
    print("params.yaml is valid")


if __name__ == "__main__":
    run_stage(main)
