"""Noise-robust segmentation training on CAM pseudo-masks (the last step of the UM-CAM paper): a small 2D U-Net
learns from the pseudo-masks of every tagged training volume with random-view consensus (RVC) — each batch is seen
in two random views (rescaled or rotated), both views are taught the pseudo-mask, and a symmetric KL term, ramped up,
makes the two predictions agree, so that the network follows what the pseudo-masks share rather than each one's
errors. Slices tagged absent teach background for certain. At seeding time the network segments the slices the
annotator ticked present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from ..engine.augment import random_affine
from ..engine.checkpoint import load_checkpoint, load_weights, save_checkpoint
from ..engine.loop import LoopSpec, StepContext, fit, seeded
from ..progress import ProgressFn
from .classifier import SIZE, PreparedSlices, crop_to_input, to_slice_grid
from .gse import largest_component
from .tags import ABSENT, PRESENT

CHANNELS = (16, 32, 64, 128)
SCALES = (0.75, 1.25)
#: the refinement network's input: the classifier's body crop at half its size (a target volume is a large blob;
#: a neck still gets 1.7 input pixels per CT voxel at OpenKBP's ~4 mm)
RES = SIZE // 2
KIND = "cam-refiner"  # the checkpoint kind


def _inputs(prep: PreparedSlices, rows: np.ndarray) -> torch.Tensor:
    return F.interpolate(prep.images[rows].float(), size=(RES, RES), mode="area")


def make_net() -> UNet:
    return UNet(spatial_dims=2, in_channels=2, out_channels=1, channels=CHANNELS, strides=(2, 2, 2), num_res_units=1)


def crop_masks(prep: PreparedSlices, masks: np.ndarray, slices: np.ndarray) -> torch.Tensor:
    """(N, RES, RES) uint8: the canonical masks of ``slices`` in the body crops, at the network's input size."""
    m = torch.from_numpy(masks[slices].astype(np.float32))[:, None]
    return (crop_to_input(m, prep.crops[slices], RES) > 0.5)[:, 0].to(torch.uint8)


def training_slices(prep: PreparedSlices, pseudo: np.ndarray, tags: np.ndarray, rng: np.random.Generator,
                    absent_fraction: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, targets) of one volume: every slice tagged present with its pseudo-mask, and slices tagged absent
    (background for certain) up to ``absent_fraction`` of the result."""
    present = np.flatnonzero((tags == PRESENT) & prep.body)
    absent = np.flatnonzero((tags == ABSENT) & prep.body)
    n_absent = min(absent.size, int(round(present.size * absent_fraction / (1 - absent_fraction))))
    absent = rng.choice(absent, n_absent, replace=False) if n_absent else absent[:0]
    rows = np.concatenate([present, absent]).astype(int)
    target = np.zeros(pseudo.shape, bool)
    target[present] = pseudo[present]
    return _inputs(prep, rows).half(), crop_masks(prep, target, rows)


def seg_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE + batch soft Dice: a target volume is ~5 % of the crops' pixels, and BCE alone at CPU step budgets
    settles below 0.5 everywhere."""
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    return F.binary_cross_entropy_with_logits(logits, y) + dice


def _view(model: torch.nn.Module, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Logits of ``x`` seen in a random view (rescaled or rotated), mapped back to the input's frame."""
    if rng.integers(2) == 0:  # rescaled
        s = SCALES[int(rng.integers(len(SCALES)))]
        size = int(round(RES * s / 8)) * 8  # the U-Net halves three times
        y = model(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
        return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)
    k = int(rng.integers(1, 4))
    return torch.rot90(model(torch.rot90(x, k, (2, 3))), -k, (2, 3))


def train_rvc(images: torch.Tensor, targets: torch.Tensor, out: str | os.PathLike[str], *, steps: int = 1500,
              batch: int = 16, lr: float = 2e-3, consistency: float = 0.1, rvc: bool = True, seed: int = 0,
              progress: ProgressFn | None = None) -> Path:
    """Train on (N, 2, RES, RES) images and (N, RES, RES) pseudo-masks; ``rvc`` False trains one plain view
    (the baseline the benchmark compares against). Saves fp16 weights only."""
    model = seeded(make_net, seed)

    def step_loss(net: torch.nn.Module, ctx: StepContext) -> torch.Tensor:
        pick = ctx.rng.choice(len(images), size=batch)
        x = images[pick].float()
        # the same random affine for image and mask: the mask rides along as a third channel
        both, _ = random_affine(torch.cat([x, targets[pick, None].float()], 1), None, ctx.rng)
        x, y = both[:, :2], (both[:, 2:] > 0.5).float()
        if not rvc:
            return seg_loss(net(x), y)
        a, b = _view(net, x, ctx.rng), _view(net, x, ctx.rng)
        loss = (seg_loss(a, y) + seg_loss(b, y)) / 2
        ramp = min(1.0, ctx.step / max(steps * 0.5, 1))
        pa, pb = torch.sigmoid(a).clamp(1e-6, 1 - 1e-6), torch.sigmoid(b).clamp(1e-6, 1 - 1e-6)
        kl = (pa * (pa / pb).log() + (1 - pa) * ((1 - pa) / (1 - pb)).log()).mean()
        kl = kl + (pb * (pb / pa).log() + (1 - pb) * ((1 - pb) / (1 - pa)).log()).mean()
        return loss + consistency * ramp * kl

    result = fit(model, step_loss, LoopSpec(steps, lr, 1e-4, "adamw", "one_cycle", seed), progress=progress)
    save_net(model, out, {"steps": steps, "rvc": rvc, "seconds": result.wall_seconds})
    return Path(out)


def save_net(model: torch.nn.Module, path: str | os.PathLike[str], extra: dict | None = None) -> Path:
    return save_checkpoint(path, model, kind=KIND, meta={"channels": list(CHANNELS), "size": RES, **(extra or {})},
                           half=True)


def load_net(path: str | os.PathLike[str]) -> UNet:
    """The refinement network in eval mode; the file is untrusted: tensors and plain values only."""
    model = make_net()
    load_weights(model, load_checkpoint(path, KIND, "CAM refinement-network checkpoint"), path)
    return model.eval()


def segment_ticked(model: torch.nn.Module, prep: PreparedSlices, tags: np.ndarray, threshold: float = 0.5
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(probability, mask) on the canonical grid: the network on the slices tagged present, the largest 3D
    component of its thresholded output."""
    shape = prep.canonical.array.shape
    prob = np.zeros(shape, np.float32)
    slices = np.flatnonzero(tags == PRESENT)
    if slices.size == 0:
        return prob, np.zeros(shape, bool)
    with torch.no_grad():
        for i in range(0, slices.size, 32):
            rows = slices[i:i + 32]
            p = torch.sigmoid(model(_inputs(prep, rows)))[:, 0].numpy()
            prob[rows] = to_slice_grid(p, shape[1:], prep.crops[rows])
    return prob, largest_component(prob >= threshold)


__all__ = ["load_net", "make_net", "segment_ticked", "train_rvc", "training_slices"]
