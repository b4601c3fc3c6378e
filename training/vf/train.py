"""Volume Fusion pretraining, PCT-Net fine-tuning from few masks, and sliding-window prediction.

Every loop is resumable (the whole state is written atomically every ``save_every`` steps), reports
progress through a callback, runs as one CPU process or under ``torchrun`` (DDP), and writes a CSV of
its losses beside the checkpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss

from ..engine.checkpoint import CheckpointError, load_checkpoint, load_weights
from ..engine.config_file import load_config
from ..engine.loop import LoopSpec, StepContext, fit, seeded
from ..errors import DatasetError
from ..medlam.preprocess import HU_KNOTS, UNIT_KNOTS, looks_like_ct
from ..progress import ProgressFn
from ..volumes.datasets import Case
from ..volumes.io import read_image_label, read_volume
from ..volumes.resample import resample_to_reference, resample_to_spacing
from ..volumes.volume import Geometry, Volume, orient
from .fusion import FusionConfig, fusion_sample
from .pctnet import PCTNet

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).with_name("vf_cpu.toml")


@dataclass
class VFConfig:
    spacing: float = 3.0  # working spacing (mm, isotropic)
    crop: list[int] = field(default_factory=lambda: [32, 64, 64])  # D, H, W
    channels: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    heads: list[int] = field(default_factory=lambda: [2, 4, 8])
    window: int = 4
    batch: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-5
    steps: int = 200
    save_every: int = 25
    seed: int = 0
    classes: int = 4  # Volume Fusion K
    block_min: list[int] = field(default_factory=lambda: [4, 8, 8])
    block_max: list[int] = field(default_factory=lambda: [16, 32, 32])
    foreground_ratio: float = 0.7
    foreground_crop_ratio: float = 0.67  # fine-tuning: share of crops centred on a labelled voxel

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> "VFConfig":
        return load_config(cls, "vf", path, overrides, "Volume Fusion / PCT-Net")

    def network(self, n_classes: int) -> PCTNet:
        return PCTNet(1, n_classes, tuple(self.channels), tuple(self.heads), self.window)


@dataclass
class Prepared:
    """A volume on the working grid: LPS, isotropic, intensities in [0, 1]."""

    array: np.ndarray
    geometry: Geometry


def prepare(volume: Volume, spacing: float) -> Prepared:
    """CT: MedLAM's piecewise HU map; other modalities: 0.5-99.5 percentiles to [0, 1]."""
    volume.require_finite()
    lps = orient(volume, "LPS")
    iso = resample_to_spacing(lps.with_array(lps.array.astype(np.float32)), spacing)
    if looks_like_ct(volume):
        unit = np.interp(iso.array, HU_KNOTS, UNIT_KNOTS)
    else:
        lo, hi = np.percentile(iso.array, (0.5, 99.5))
        unit = np.clip((iso.array - lo) / max(hi - lo, 1e-6), 0, 1)
    return Prepared(unit.astype(np.float32), iso.geometry)


def _pad_to(array: np.ndarray, size: list[int]) -> np.ndarray:
    pad = [(0, max(0, s - n)) for n, s in zip(array.shape, size)]
    return np.pad(array, pad) if any(p[1] for p in pad) else array


def _crop(array: np.ndarray, lo: np.ndarray, size: list[int]) -> np.ndarray:
    return array[tuple(slice(a, a + s) for a, s in zip(lo, size))]


# --------------------------------------------------------------------------------------------------
# training: the one loop (..engine.fit) with this model's batches and loss
# --------------------------------------------------------------------------------------------------

def load_matching(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load every tensor whose name and shape match; return (loaded, skipped with reasons)."""
    return load_weights(model, {"model": state}, strict=False)


def _loop(model: torch.nn.Module, cfg: VFConfig, out: Path, kind: str, labels: list[tuple[int, str]] | None,
          sample: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]], progress: ProgressFn | None,
          init: str | os.PathLike[str] | None = None) -> tuple[Path, list[str]]:
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def step_loss(net: torch.nn.Module, ctx: StepContext) -> torch.Tensor:
        pairs = [sample(ctx.rng) for _ in range(cfg.batch)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None].to(ctx.device)
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None].to(ctx.device)
        return loss_fn(net(x), y)

    spec = LoopSpec(cfg.steps, cfg.lr, cfg.weight_decay, "adam", "poly", cfg.seed, cfg.save_every, csv_every=1)
    result = fit(model, step_loss, spec, out, kind=kind, meta={"config": asdict(cfg), "labels": labels}, init=init,
                 progress=progress, use_distributed=True)
    return out, result.skipped


def pretrain_vf(cfg: VFConfig, folders: list[str | os.PathLike[str]], out: str | os.PathLike[str],
                progress: ProgressFn | None = None) -> Path:
    """Volume Fusion pretraining on every volume under ``folders`` (labels never read)."""
    from ..volumes.datasets import find_cases

    volumes = []
    for folder in folders:
        for case in find_cases(folder):
            vol = read_volume(case.image)
            if looks_like_ct(vol):
                volumes.append(_pad_to(prepare(vol, cfg.spacing).array, cfg.crop))
    if not volumes:
        raise DatasetError(f"no CT volume under {folders} for Volume Fusion pretraining")
    fusion = FusionConfig(tuple(cfg.crop), cfg.classes, tuple(cfg.block_min), tuple(cfg.block_max),
                          cfg.foreground_ratio)

    def sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return fusion_sample(volumes[rng.integers(len(volumes))], rng, fusion)

    model = seeded(lambda: cfg.network(cfg.classes + 1), cfg.seed)
    path, _ = _loop(model, cfg, Path(out), "vf", None, sample, progress)
    return path


def load_labelled(cases: list[Case], labels: list[tuple[int, str]], spacing: float, crop: list[int]
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Prepared (image, class map) pairs; classes 1..n are ``labels`` in order, everything else 0.

    A label is found by name in each case's own label map when the case names its labels (datasets
    number organs differently), else by value.
    """
    if not cases:
        raise DatasetError("no labelled volume to fine-tune on")
    out = []
    for case in cases:
        if case.label is None:
            raise DatasetError(f"{case.image}: has no label map")
        image, label = read_image_label(case.image, case.label)  # refuses mismatched geometry
        values = [case.label_value(n) if n in case.label_names.values() else v for v, n in labels]
        missing = [v for v in values if not np.any(label.array == v)]
        if missing:
            raise DatasetError(f"{case.label}: label(s) {missing} absent; fine-tuning needs every selected "
                               "label in every training volume")
        prepared = prepare(image, spacing)
        lab = resample_to_reference(label, prepared.geometry, is_label=True, label_mode="onehot").array
        classes = np.zeros(lab.shape, np.int64)
        for i, v in enumerate(values, start=1):
            classes[lab == v] = i
        out.append((_pad_to(prepared.array, crop), _pad_to(classes, crop)))
    return out


_SIDES = (("left", "right"), ("Left", "Right"), ("LEFT", "RIGHT"), ("_l", "_r"), ("_L", "_R"))


def _partner(name: str) -> str | None:
    """'kidney_left' -> 'kidney_right', 'Left-Putamen' -> 'Right-Putamen'; None for a name without a side."""
    for a, b in _SIDES:
        for x, y in ((a, b), (b, a)):
            if x in name and not (x in ("_l", "_L", "_r", "_R") and not name.endswith(x)):
                return name[: name.rfind(x)] + y + name[name.rfind(x) + len(x):]
    return None


def lateral_swap(names: list[str]) -> np.ndarray | None:
    """Class-index map (background 0, classes 1..n in ``names`` order) applied with a left-right flip.

    Identity when no label names a side; None (no left-right flip) when a sided label's partner is missing.
    """
    index = {n: i + 1 for i, n in enumerate(names)}
    mapping = np.arange(len(names) + 1)
    for name, i in index.items():
        other = _partner(name)
        if other is None:
            continue
        if other not in index:
            return None
        mapping[i] = index[other]
    return mapping


def finetune(cfg: VFConfig, cases: list[Case], labels: list[tuple[int, str]], out: str | os.PathLike[str],
             init: str | os.PathLike[str] | None = None, progress: ProgressFn | None = None) -> tuple[Path, list[str]]:
    """Fine-tune PCT-Net on the labelled cases (optionally from a VF checkpoint); returns (path, skipped tensors)."""
    data = load_labelled(cases, labels, cfg.spacing, cfg.crop)
    fg = [np.argwhere(c > 0) for _, c in data]
    mirror = lateral_swap([name for _, name in labels])  # class map for a left-right flip, or None: no flip

    def sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        i = int(rng.integers(len(data)))
        image, classes = data[i]
        size = np.array(cfg.crop)
        if rng.random() < cfg.foreground_crop_ratio and len(fg[i]):
            centre = fg[i][rng.integers(len(fg[i]))]
            lo = np.clip(centre - size // 2, 0, np.array(image.shape) - size)
        else:
            lo = np.array([rng.integers(0, n - s + 1) for n, s in zip(image.shape, size)])
        x, y = _crop(image, lo, cfg.crop), _crop(classes, lo, cfg.crop)
        # in-plane flips on the LPS grid; z keeps its head-feet meaning.  Axis 2 is right-left: flipping it
        # turns a left kidney into a right one, so paired labels swap with it, and it is skipped when a
        # lateralised label has no partner among the labels
        if rng.random() < 0.5:
            x, y = np.flip(x, 1), np.flip(y, 1)
        if mirror is not None and rng.random() < 0.5:
            x, y = np.flip(x, 2), mirror[np.flip(y, 2)]
        return np.ascontiguousarray(x), np.ascontiguousarray(y)

    model = seeded(lambda: cfg.network(len(labels) + 1), cfg.seed)
    return _loop(model, cfg, Path(out), "seg", list(labels), sample, progress, init)


# --------------------------------------------------------------------------------------------------
# prediction
# --------------------------------------------------------------------------------------------------

class PCTPredictor:
    """A fine-tuned PCT-Net that writes label maps on any volume's own grid."""

    def __init__(self, checkpoint: str | os.PathLike[str], device: torch.device | str | None = None):
        state = load_checkpoint(checkpoint, "seg", "fine-tuned PCT-Net segmentation checkpoint (medlsam finetune)")
        meta = state["meta"]
        if state.get("kind") != "seg" or not meta.get("labels") or "config" not in meta:
            raise CheckpointError(f"{checkpoint}: a {state.get('kind')!r} checkpoint; predicting needs a fine-tuned "
                                  "segmentation checkpoint (medlsam finetune)")
        self.cfg = VFConfig(**meta["config"])
        self.labels = [(int(v), str(n)) for v, n in meta["labels"]]
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = self.cfg.network(len(self.labels) + 1)
        load_weights(self.model, state, checkpoint)
        self.model.to(self.device).eval()

    @torch.inference_mode()
    def predict(self, volume: Volume) -> np.ndarray:
        """Label map [z, y, x] with the checkpoint's label values, on ``volume``'s grid."""
        prepared = prepare(volume, self.cfg.spacing)
        shape = prepared.array.shape
        x = torch.from_numpy(_pad_to(prepared.array, self.cfg.crop))[None, None].to(self.device)
        logits = sliding_window_inference(x, tuple(self.cfg.crop), sw_batch_size=2, predictor=self.model,
                                          overlap=0.25, mode="gaussian")
        probs = F.softmax(logits, dim=1)[0, :, :shape[0], :shape[1], :shape[2]].cpu().numpy()
        # Probabilities go back to the original grid (linear), then argmax: smoother than nearest labels.
        grid = Volume(probs[0], prepared.geometry.spacing, prepared.geometry.origin, prepared.geometry.direction)
        best = np.zeros(volume.array.shape, np.float32)
        out = np.zeros(volume.array.shape, np.uint16 if max(v for v, _ in self.labels) > 255 else np.uint8)
        for c in range(probs.shape[0]):
            p = resample_to_reference(grid.with_array(probs[c]), volume, fill_value=1.0 if c == 0 else 0.0).array
            better = p > best
            best[better] = p[better]
            out[better] = 0 if c == 0 else self.labels[c - 1][0]
        return out

