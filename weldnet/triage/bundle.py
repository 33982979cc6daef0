"""The triage bundle: one strategy's network, decision rule, photo normalisation and certified threshold.

The bundle stage writes it; ``python -m weldnet.triage`` runs it on new photos::

    <bundle>/
      network.pt2   torch.export program: uint8 RGB photos (N, S, S, 3) at S = photos.size -> logits (N, K)
      bundle.json   the photo normalisation, the network's input, the decision rule, classes and task
      triage.json   the certified threshold, what it was calibrated on, the test-split check (weldnet.triage.certify)
      README.md     what the guarantee means, and how to run the bundle without this project

The program holds the whole of the pipeline's path from a preprocessed photo to
logits: the antialiased resize to ``model.input_size`` (rounded to uint8, as
``weldnet.photos.transforms.resize_uint8`` does before training and evaluation), scaling to
[0, 1], the ImageNet normalisation and the network in eval mode. It loads with
``torch.export.load`` in a plain PyTorch process. The decision rule is three
numbers a user can apply by hand: ``p = softmax(logits + logit_offset)``, flaw
score ``1 - p[0]``, clear when the score is below the threshold.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from weldnet.core.config import DataError, ParamError, TrainingError
from weldnet.core.files import write_bytes, write_json, write_text
from weldnet.core.params import TaskSpec
from weldnet.photos.transforms import MEAN, STD, resize_batch, to_input
from weldnet.strategies.decisions import DecisionRule, flaw_score

FORMAT = 1
NETWORK = "network.pt2"
BUNDLE = "bundle.json"
TRIAGE = "triage.json"
README = "README.md"
MAX_BATCH = 65_536
# float32 logits of one graph run eagerly and exported agree to rounding; beyond this the export is not faithful
EXPORT_TOLERANCE = 1e-4


# ------------------------------------------------------------------ the network
class PhotoNet(nn.Module):
    """uint8 NHWC photos at the preprocessed size -> logits, exactly as evaluate computes them.

    Evaluate resizes the 256x256 shards to the input size with ``resize_uint8``
    (antialiased bilinear, rounded to uint8), then ``to_input`` scales and
    normalises; the same functions of weldnet.photos.transforms, in one module, so
    they can be exported with it.
    """

    def __init__(self, model: nn.Module, input_size: int, photo_size: int):
        super().__init__()
        self.model, self.input_size, self.photo_size = model, input_size, photo_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_size != self.photo_size:
            images = resize_batch(images, self.input_size)
        return self.model(to_input(images, self.input_size))


def export_network(model: nn.Module, input_size: int, photo_size: int) -> torch.export.ExportedProgram:
    """The model, in eval mode on the CPU, behind :class:`PhotoNet`, exported with a dynamic batch size."""
    net = PhotoNet(model.cpu().eval(), input_size, photo_size).eval()
    example = torch.zeros((2, photo_size, photo_size, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        program = torch.export.export(net, (example,), dynamic_shapes={"images": {0: batch}})
    return without_stack_traces(program)


def without_stack_traces(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` without the source paths and line numbers torch.export records on every node.

    They name the folder the stage ran in (a queued experiment runs in a temporary
    copy) and shift with any edit of the model code, so the saved archive would
    differ from run to run; without them it is byte-identical for the same weights.
    """
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in graph.nodes if graph is not None else ():
            node.meta.pop("stack_trace", None)
    return program


def network_bytes(program: torch.export.ExportedProgram) -> bytes:
    """The saved archive of ``program``, built in memory: the same bytes for the same program, whatever the path."""
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def load_network(path: Path, device: torch.device | str = "cpu") -> nn.Module:
    """The exported program as a callable module on ``device`` (exported on the CPU; moved when asked)."""
    try:
        program = torch.export.load(str(path))
    except FileNotFoundError:
        raise DataError(f"{path} not found; the bundle folder needs {NETWORK} (run dvc repro bundle)") from None
    except Exception as exc:  # noqa: BLE001 - a damaged archive raises many types
        raise DataError(f"{path} cannot be loaded as a torch.export program ({exc}); rebuild the bundle") from None
    if torch.device(device).type != "cpu":
        program = torch.export.passes.move_to_device_pass(program, torch.device(device))
    return program.module()


def export_gap(expected: np.ndarray, exported: np.ndarray) -> float:
    """Largest absolute difference between the live model's and the export's logits; TrainingError beyond tolerance."""
    expected, exported = np.asarray(expected, dtype=np.float64), np.asarray(exported, dtype=np.float64)
    if expected.shape != exported.shape:
        raise TrainingError(f"the exported network gives logits of shape {exported.shape}, the live model "
                            f"{expected.shape}; the export is not faithful")
    gap = float(np.max(np.abs(expected - exported), initial=0.0))
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    if not np.isfinite(gap) or gap > EXPORT_TOLERANCE * scale:
        raise TrainingError(f"the exported network's logits differ from the live model's by {gap:.3g}; "
                            "the export is not faithful")
    return gap


@torch.no_grad()
@torch.no_grad()
def network_logits(net: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 256,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """float32 logits (N, K) of uint8 NHWC photos, in batches (no autograd graph is kept between batches)."""
    images = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    out = [net(images[start:start + batch_size].to(device)).float().cpu()
           for start in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


# ------------------------------------------------------------------ what evaluate chose on validation
@dataclass(frozen=True)
class Chosen:
    """One strategy as evaluate scored it on validation (``--validation``): what the bundle chooses by."""

    val_per_class_accuracy: float            # mean over seeds
    seeds: dict[str, float]                  # each seed's validation per-class accuracy
    rules: dict[str, DecisionRule]           # each seed's decision rule, fitted on validation


def read_validation(path: Path) -> dict[str, Chosen]:
    """The evaluate stage's validation record, per strategy; DataError (one line) when missing or of another form."""
    if not path.is_file():
        raise DataError(f"{path} not found; run the evaluate stage first (dvc repro evaluate)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {name: Chosen(float(entry["val_per_class_accuracy"]),
                             {seed: float(s["val_per_class_accuracy"]) for seed, s in entry["seeds"].items()},
                             {seed: DecisionRule.from_dict(s["decision"]) for seed, s in entry["seeds"].items()})
                for name, entry in raw.items()}
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not the evaluate stage's validation record ({exc!r}); "
                        "re-run dvc repro evaluate") from None


# ------------------------------------------------------------------ the bundle on disk
@dataclass(frozen=True)
class Bundle:
    """A bundle read back: what ``python -m weldnet.triage`` needs."""

    path: Path
    info: dict                       # bundle.json
    certificate: dict                # triage.json
    network: nn.Module
    device: torch.device

    @property
    def photo_size(self) -> int:
        return int(self.info["photos"]["size"])

    @property
    def max_pixels(self) -> int:
        return int(self.info["photos"]["max_pixels"])

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def rigs(self) -> list[str]:
        return list(self.info["task"]["rigs"])

    @property
    def threshold(self) -> float:
        return float(self.certificate["threshold"])

    @property
    def rule(self) -> DecisionRule:
        try:
            return DecisionRule.from_dict(self.info["decision"])
        except ParamError:
            raise DataError(f"unknown decision rule {self.info['decision'].get('rule')!r} in the bundle; "
                            "rebuild it with this version") from None

    @property
    def task(self) -> TaskSpec:
        t = self.info["task"]
        return TaskSpec(default=t["default"], classes={k: list(v) for k, v in t["classes"].items()},
                        rigs=list(t["rigs"]))

    def scores(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(flaw scores, class probabilities) of uint8 photos at the bundle's size."""
        probs = self.rule.probs(network_logits(self.network, images, batch_size, self.device))
        return flaw_score(probs), probs


def bundle_info(*, strategy: str, seed: str, config: dict, rule: DecisionRule, task_name: str, task: TaskSpec,
                photo_size: int, max_pixels: int) -> dict:
    """bundle.json: everything but the threshold, which triage.json carries with its calibration."""
    model = config["model"]
    return {
        "format": FORMAT,
        "strategy": strategy, "seed": seed, "loss": config.get("loss"),
        "best_epoch": config["seeds"][seed]["best_epoch"],
        "photos": {
            "size": photo_size, "max_pixels": max_pixels, "formats": ["JPEG", "PNG"],
            "steps": ["decode JPEG (draft mode: libjpeg scales by 1/2, 1/4 or 1/8, never below size) or PNG",
                      "refuse more than max_pixels pixels",
                      "apply the EXIF orientation",
                      "convert any mode to 8-bit RGB (16-bit: value // 257; transparency composited on white)",
                      "squash to size x size: PIL bilinear, reducing_gap 2.0 (weldnet.photos.images.load_resized)"],
        },
        "network": {
            "file": NETWORK, "input": f"uint8 RGB photos, shape (N, {photo_size}, {photo_size}, 3)",
            "output": f"logits, shape (N, {len(config['classes'])})", "arch": model["arch"],
            "input_size": model["input_size"], "resize": "antialiased bilinear to input_size, rounded to uint8",
            "mean": list(MEAN), "std": list(STD), "scale": "x / 255, then (x - mean) / std",
        },
        "decision": rule.as_dict(),
        "classes": list(config["classes"]),
        "task": {"name": task_name, "default": task.default, "classes": {k: list(v) for k, v in task.classes.items()},
                 "rigs": list(task.rigs)},
    }


# sentences that would make every `dvc metrics diff` line wide; models/triage/triage.json keeps them
PROSE = ("note", "method", "chosen_by")


def metrics_view(certificate: dict) -> dict:
    """metrics/triage.json: the certificate without its sentences."""
    return {k: v for k, v in certificate.items() if k not in PROSE}


def write_bundle(out: Path, program: torch.export.ExportedProgram, info: dict, certificate: dict,
                 readme: str) -> None:
    """Write the bundle folder, replacing the files of an earlier one."""
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / NETWORK, network_bytes(program))
    write_json(out / BUNDLE, info)
    write_json(out / TRIAGE, certificate)
    write_text(out / README, readme)


def read_bundle(path: Path, device: torch.device | str = "cpu") -> Bundle:
    """A bundle folder, checked; DataError (one line) when it is missing, damaged or of another format."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"bundle folder {path} not found; build it with `dvc repro bundle` and pass its folder")
    docs = []
    for name in (BUNDLE, TRIAGE):
        try:
            docs.append(json.loads((path / name).read_text()))
        except FileNotFoundError:
            raise DataError(f"{path / name} not found; {path} is not a complete bundle (dvc repro bundle)") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path / name} cannot be read ({exc}); rebuild the bundle") from None
    info, certificate = docs
    if info.get("format") != FORMAT:
        raise DataError(f"{path / BUNDLE} has format {info.get('format')!r}; this version reads format {FORMAT}, "
                        "rebuild the bundle")
    device = torch.device(device)
    return Bundle(path, info, certificate, load_network(path / NETWORK, device), device)


def readme_text(info: dict, certificate: dict) -> str:
    """The bundle's README.md: the guarantee in words, and the bundle used without this project."""
    size = info["photos"]["size"]
    cal, auto = certificate["calibration"], certificate["automation"]
    return f"""# Triage bundle: {info['strategy']} ({info['seed']}), task {info['task']['name']}

Run it on new photos (files, folders, or an export with labels.csv):

    python -m weldnet.triage PHOTOS... --bundle <this folder> --out triage.csv

A photo is cleared when its flaw score, 1 - p({info['classes'][0]}), is below
{certificate['threshold']:.6g}; every other photo, and every photo that cannot be read, goes to review.

**Certificate:** {certificate['note']}. The threshold was chosen on {cal['flawed']} flawed and {cal['clean']}
clean validation photos so that, with {certificate['confidence']:.0%} confidence, recall on flawed photos from the
same source stays at or above {certificate['target_recall']:.0%} (one-sided Clopper-Pearson bound on the miss rate).
Expected share of photos cleared: {auto['expected']:.3f} [{auto['low']:.3f}, {auto['high']:.3f}].

**Without weldnet** (plain PyTorch; decode and resize as bundle.json "photos" says):

    import json, numpy as np, torch
    from PIL import Image, ImageOps
    info, cert = json.load(open("bundle.json")), json.load(open("triage.json"))
    net = torch.export.load("network.pt2").module()
    im = Image.open("photo.jpg")
    im.draft("RGB", ({size}, {size}))              # JPEG: decode at 1/2, 1/4 or 1/8 scale, as the pipeline does
    im = ImageOps.exif_transpose(im).convert("RGB")
    im = im.resize(({size}, {size}), Image.Resampling.BILINEAR, reducing_gap=2.0)
    with torch.no_grad():
        logits = net(torch.from_numpy(np.array(im, dtype=np.uint8))[None]).double().numpy()
    z = logits + np.array(info["decision"]["logit_offset"])
    p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    clear = (1 - p[:, 0]) < cert["threshold"]

(For 16-bit and transparent photos weldnet.photos.images converts to RGB its own way:
16-bit values // 257, transparency on white; the command reproduces the pipeline exactly.)
"""
