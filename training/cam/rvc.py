"""Noise-robust segmentation training on CAM pseudo-masks (the last step of the UM-CAM paper): a small 2D U-Net
learns from the pseudo-masks of every tagged training volume with random-view consensus (RVC) — each batch is seen
in two random views (rescaled or rotated), both views are taught the pseudo-mask, and a symmetric KL term, ramped up,
makes the two predictions agree, so that the network follows what the pseudo-masks share rather than each one's
errors. Slices tagged absent teach background for certain. At seeding time the network segments the slices the
annotator ticked present."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from ..errors import MedLSAMError
from ..progress import ProgressFn
from .classifier import SIZE, PreparedSlices, _augment, crop_to_input, to_slice_grid
from .gse import largest_component
from .tags import ABSENT, PRESENT

CHANNELS = (16, 32, 64, 128)
SCALES = (0.75, 1.25)
#: the refinement network's input: the classifier's body crop at half its size (a target volume is a large blob;
#: a neck still gets 1.7 input pixels per CT voxel at OpenKBP's ~4 mm)
RES = SIZE // 2


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


def _view(model: torch.nn.Module, x: torch.Tensor, kind: int) -> torch.Tensor:
    """Logits of ``x`` seen in a random view, mapped back to the input's frame."""
    if kind == 0:  # rescaled
        s = SCALES[np.random.randint(len(SCALES))]
        size = int(round(RES * s / 8)) * 8  # the U-Net halves three times
        y = model(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
        return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)
    k = np.random.randint(1, 4)
    return torch.rot90(model(torch.rot90(x, k, (2, 3))), -k, (2, 3))


def train_rvc(images: torch.Tensor, targets: torch.Tensor, out: str | os.PathLike[str], *, steps: int = 1500,
              batch: int = 16, lr: float = 2e-3, consistency: float = 0.1, rvc: bool = True, seed: int = 0,
              progress: ProgressFn | None = None) -> Path:
    """Train on (N, 2, RES, RES) images and (N, RES, RES) pseudo-masks; ``rvc`` False trains one plain view
    (the baseline the benchmark compares against). Saves fp16 weights only."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    rng = np.random.default_rng(seed)
    model = make_net()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    start, total = time.time(), 0.0
    model.train()
    for step in range(steps):
        pick = rng.choice(len(images), size=batch)
        x = images[pick].float()
        # the same random affine for image and mask: the mask rides along as a third channel
        both = _augment(torch.cat([x, targets[pick, None].float()], 1), rng)
        x, y = both[:, :2], (both[:, 2:] > 0.5).float()
        if rvc:
            a, b = _view(model, x, np.random.randint(2)), _view(model, x, np.random.randint(2))
            loss = (seg_loss(a, y) + seg_loss(b, y)) / 2
            ramp = min(1.0, step / max(steps * 0.5, 1))
            pa, pb = torch.sigmoid(a).clamp(1e-6, 1 - 1e-6), torch.sigmoid(b).clamp(1e-6, 1 - 1e-6)
            kl = (pa * (pa / pb).log() + (1 - pa) * ((1 - pa) / (1 - pb)).log()).mean()
            kl = kl + (pb * (pb / pa).log() + (1 - pb) * ((1 - pb) / (1 - pa)).log()).mean()
            loss = loss + consistency * ramp * kl
        else:
            loss = seg_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach())
        if progress and (step + 1) % 25 == 0:
            progress(step + 1, steps, f"loss {total / (step + 1):.4f}")
    save_net(model, out, {"steps": steps, "rvc": rvc, "seconds": time.time() - start})
    return Path(out)


def save_net(model: torch.nn.Module, path: str | os.PathLike[str], extra: dict | None = None) -> Path:
    from ..atomic import atomic_path

    state = {"state_dict": {k: v.detach().cpu().half() for k, v in model.state_dict().items()},
             "channels": list(CHANNELS), "size": RES, **(extra or {})}
    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_net(path: str | os.PathLike[str]) -> UNet:
    """The refinement network in eval mode; the file is untrusted: tensors and plain values only."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = make_net()
        model.load_state_dict({k: v.float() for k, v in state["state_dict"].items()})
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise MedLSAMError(f"{path}: not a CAM refinement-network checkpoint ({str(exc).splitlines()[0]})") from exc
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
