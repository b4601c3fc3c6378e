"""The slice classifier whose activation maps become CAMs: a small 2D CNN trained from scratch on slice tags
(multi-label: one output per target), with the slice preparation it was trained on."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine.augment import random_affine
from ..engine.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from ..engine.loop import LoopSpec, StepContext, fit, seeded
from ..errors import MedLSAMError
from ..progress import ProgressFn
from ..volumes.volume import Volume, orient
from .tags import ABSENT, PRESENT

SIZE = 128                                  # in-plane size of the classifier's input
#: Two CT windows as two channels: soft tissue (organs, glands) and bone (mandible, vertebrae).
CT_WINDOWS = ((-160.0, 240.0), (-200.0, 1300.0))
WIDTHS = (16, 32, 64, 128)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


#: how the class map becomes one score per slice: the mean (CAM's global average pooling), or log-sum-exp, which
#: leans towards the map's maximum (multiple-instance learning: some place of a present slice must carry evidence)
POOLS = ("mean", "lse")
KIND = "cam-classifier"  # the checkpoint kind
LSE_R = 5.0


class SliceClassifier(nn.Module):
    """Four conv blocks (strides 1, 2, 4, 8), a 1x1 class map and global pooling: the class map is a CAM."""

    def __init__(self, n_targets: int, widths: tuple[int, ...] = WIDTHS, in_channels: int = 2, pool: str = "mean"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool {pool!r}: one of {', '.join(POOLS)}")
        self.pool = pool
        chans = (in_channels,) + tuple(widths)
        self.block1, self.block2, self.block3, self.block4 = (_block(chans[i], chans[i + 1]) for i in range(4))
        self.dropout = nn.Dropout2d(0.2)
        self.classmap = nn.Conv2d(widths[-1], n_targets, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(x)
        x = self.block2(F.max_pool2d(x, 2))
        x = self.block3(F.max_pool2d(x, 2))
        x = self.block4(F.max_pool2d(x, 2))
        maps = self.classmap(self.dropout(x))
        if self.pool == "lse":
            n = maps.shape[2] * maps.shape[3]
            return (torch.logsumexp(LSE_R * maps.flatten(2), dim=2) - float(np.log(n))) / LSE_R
        return maps.mean(dim=(2, 3))


@dataclass
class PreparedSlices:
    """A volume's axial slices as classifier input, on the LPS-oriented grid."""

    canonical: Volume         # the LPS-oriented volume (its grid is where maps and masks live)
    images: torch.Tensor      # (Z, C, SIZE, SIZE) float16
    body: np.ndarray          # (Z,) True where the slice holds scanned content (not padding)
    modality: str = "CT"      # how the slices were windowed
    #: (Z, 4) each slice's square crop (y0, x0, y1, x1; canonical voxels, may reach past the edge) that was resized
    #: to SIZE: the body's box, so that a neck fills the input whatever the scan's field of view
    crops: np.ndarray | None = None


#: margin around the body's in-plane box, as a fraction of its larger side
BODY_MARGIN = 0.08


def body_slices(array: np.ndarray, modality: str = "CT") -> np.ndarray:
    """(Z, Y, X) voxels of the patient: above -500 HU for CT (above the 5th percentile for MR), holes filled."""
    from scipy import ndimage

    inside = array > (-500 if modality == "CT" else np.percentile(array, 5))
    return np.stack([ndimage.binary_fill_holes(s) for s in inside])


def body_crops(body: np.ndarray) -> np.ndarray:
    """(Z, 4) square in-plane boxes around each slice's body (whole slice where there is none)."""
    z, ny, nx = body.shape
    crops = np.tile(np.array([0, 0, ny, nx], np.float32), (z, 1))
    for i in range(z):
        ys, xs = np.nonzero(body[i])
        if ys.size < 20:  # padding or a sliver: the whole slice
            continue
        cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
        half = max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()) * (0.5 + BODY_MARGIN)
        crops[i] = (cy - half, cx - half, cy + half, cx + half)
    return crops


def _theta(crops: np.ndarray, shape_yx: tuple[int, int]) -> torch.Tensor:
    """Affine grids' theta taking the output's [-1, 1] square to each crop in the slice's normalised coordinates."""
    ny, nx = shape_yx
    c = torch.as_tensor(crops, dtype=torch.float32)
    sy, sx = (c[:, 2] - c[:, 0]) / ny, (c[:, 3] - c[:, 1]) / nx
    ty, tx = (c[:, 2] + c[:, 0]) / ny - 1, (c[:, 3] + c[:, 1]) / nx - 1
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)


def crop_to_input(x: torch.Tensor, crops: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """(N, C, Y, X) slices -> (N, C, size, size) crops (zero outside the slice)."""
    grid = F.affine_grid(_theta(crops, tuple(x.shape[2:])), [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def prepare_slices(volume: Volume, modality: str = "CT") -> PreparedSlices:
    """Orient to LPS, window to [0, 1] per channel, crop each slice to its body's square box, resize to SIZE."""
    canonical = orient(volume, "LPS")
    arr = torch.from_numpy(np.ascontiguousarray(canonical.array, dtype=np.float32))
    if modality == "CT":
        chans = [((arr - lo) / (hi - lo)).clamp(0, 1) for lo, hi in CT_WINDOWS]
    else:
        lo, hi = np.percentile(canonical.array, [0.5, 99.5])
        unit = ((arr - float(lo)) / max(float(hi - lo), 1e-6)).clamp(0, 1)
        chans = [unit, unit]
    x = torch.stack(chans, 1)  # (Z, C, Y, X)
    crops = body_crops(body_slices(canonical.array, modality))
    x = torch.cat([crop_to_input(x[i:i + 64], crops[i:i + 64]) for i in range(0, x.shape[0], 64)])
    flat = canonical.array.reshape(canonical.array.shape[0], -1)
    body = flat.max(axis=1) != flat.min(axis=1)
    return PreparedSlices(canonical, x.to(torch.float16), body, modality, crops)


def to_slice_grid(maps: torch.Tensor | np.ndarray, shape_yx: tuple[int, int], crops: np.ndarray | None = None
                  ) -> np.ndarray:
    """(N, h, w) maps on the classifier's input -> (N, Y, X) on the canonical slice grid (bilinear), placed back
    into each slice's crop when ``crops`` (N, 4) is given."""
    t = torch.as_tensor(np.asarray(maps, dtype=np.float32))[:, None]
    if crops is None:
        return F.interpolate(t, size=shape_yx, mode="bilinear", align_corners=False)[:, 0].numpy()
    # the inverse of crop_to_input: each slice pixel looks up its place in the crop's [-1, 1] square
    ny, nx = shape_yx
    c = torch.as_tensor(crops, dtype=torch.float32)
    ys = (torch.arange(ny, dtype=torch.float32) + 0.5)[None, :] - c[:, 0:1]
    xs = (torch.arange(nx, dtype=torch.float32) + 0.5)[None, :] - c[:, 1:2]
    gy = ys / (c[:, 2:3] - c[:, 0:1]) * 2 - 1  # (N, Y)
    gx = xs / (c[:, 3:4] - c[:, 1:2]) * 2 - 1  # (N, X)
    grid = torch.stack([gx[:, None, :].expand(-1, ny, -1), gy[:, :, None].expand(-1, -1, nx)], -1)
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0].numpy()


def save_classifier(model: SliceClassifier, targets: list[str], modality: str, path: str | os.PathLike[str],
                    extra: dict | None = None) -> Path:
    meta = {"targets": list(targets), "modality": modality, "widths": list(WIDTHS), "size": SIZE, "pool": model.pool,
            **(extra or {})}
    return save_checkpoint(path, model, kind=KIND, meta=meta)


def load_classifier(path: str | os.PathLike[str], device: str | torch.device = "cpu"
                    ) -> tuple[SliceClassifier, list[str], str]:
    """(model in eval mode, target names, modality); the file is untrusted: tensors and plain values only."""
    state = load_checkpoint(path, KIND, "CAM slice-classifier checkpoint")
    meta = state["meta"]
    try:
        model = SliceClassifier(len(meta["targets"]), tuple(meta["widths"]), pool=str(meta.get("pool", "mean")))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a CAM slice-classifier checkpoint (no {exc} in it)") from exc
    load_weights(model, state, path)
    return model.to(device).eval(), list(meta["targets"]), str(meta.get("modality", "CT"))


def train_classifier(cases: list[tuple[PreparedSlices, np.ndarray]], targets: list[str], out: str | os.PathLike[str],
                     *, epochs: int = 8, slices_per_epoch: int = 6000, batch: int = 48, lr: float = 1e-3,
                     seed: int = 0, modality: str = "CT", pool: str = "mean", near: float = 0.0,
                     near_slices: int = 8, progress: ProgressFn | None = None) -> Path:
    """Train on (slices, tags (Z, T) of PRESENT/ABSENT/UNKNOWN) pairs; unknown tags do not count in the loss.

    Positive slices are oversampled to half of each epoch, since most slices show none of the targets. ``near``
    is the share of the negatives drawn from absent slices within ``near_slices`` of a present one (same patient,
    nearly the same level: what tells them apart is the target, not the level)."""
    model = seeded(lambda: SliceClassifier(len(targets), pool=pool), seed)
    index = [(c, z) for c, (prep, tags) in enumerate(cases) for z in np.nonzero(prep.body)[0]]
    if not index:
        raise MedLSAMError("no slice with scanned content to train on")
    positive = np.array([bool(np.any(cases[c][1][z] == PRESENT)) for c, z in index])
    close = np.zeros(len(index), bool)
    if near > 0:
        grown = [np.any([np.convolve((tags[:, t] == PRESENT).astype(float), np.ones(2 * near_slices + 1), "same")
                         > 0 for t in range(tags.shape[1])], axis=0) for _, tags in cases]
        close = np.array([bool(grown[c][z]) for c, z in index]) & ~positive
    far = ~positive & ~close
    weights = np.where(positive, 0.5 / max(positive.sum(), 1), 0.0)
    if close.any():
        weights[close] = 0.5 * near / close.sum()
        weights[far] = 0.5 * (1 - near) / max(far.sum(), 1)
    else:
        weights[far] = 0.5 / max(far.sum(), 1)
    weights /= weights.sum()
    steps = max(slices_per_epoch // batch, 1)

    def step_loss(net: torch.nn.Module, ctx: StepContext) -> torch.Tensor:
        pick = ctx.rng.choice(len(index), size=batch, p=weights)
        x = torch.stack([cases[index[i][0]][0].images[index[i][1]] for i in pick]).float()
        y = torch.from_numpy(np.stack([cases[index[i][0]][1][index[i][1]] for i in pick]).astype(np.float32))
        # no left-right flip: parotids have sides
        x, _ = random_affine(x, None, ctx.rng)
        known = (y != -1).float()
        logits = net(x)
        return (F.binary_cross_entropy_with_logits(logits, y.clamp(min=0), reduction="none") * known).sum() \
            / known.sum().clamp(min=1)

    spec = LoopSpec(epochs * steps, lr, 1e-4, "adamw", "one_cycle", seed)
    result = fit(model, step_loss, spec, progress=progress)
    save_classifier(model, targets, modality, out, {"epochs": epochs, "seconds": result.wall_seconds})
    return Path(out)


def predict_presence(model: SliceClassifier, prep: PreparedSlices, batch: int = 64) -> np.ndarray:
    """(Z, T) probability that each slice shows each target."""
    out = []
    with torch.no_grad():
        for i in range(0, prep.images.shape[0], batch):
            out.append(torch.sigmoid(model(prep.images[i:i + batch].float())))
    return torch.cat(out).numpy()


__all__ = ["ABSENT", "PRESENT", "PreparedSlices", "SliceClassifier", "load_classifier", "predict_presence",
           "prepare_slices", "save_classifier", "to_slice_grid", "train_classifier"]
