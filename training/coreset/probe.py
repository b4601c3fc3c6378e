"""The CPU-sized segmentation probe that values and compares selections.

A 2D U-Net of four levels (8-16-32-64 channels, two residual units each, BatchNorm, about 100 k parameters,
MONAI's UNet) on 64 x 64 crops at 4 mm per pixel, centred on each axial slice's body centroid (found without
labels, so inference crops the same way); two CT windows (soft tissue, bone) are its channels.  It trains with Adam
on the slices that hold a target (± 3) and a quarter of slices from anywhere, with cross-entropy plus soft Dice in
which a target a volume has no contour for is *unknown*, not background: its probability joins the background's
(the marginal loss), and it takes no part in the Dice.  During training every pool volume is valued at checkpoints:
its loss per target, its Dice against its own label, the GradNorm and Data-SI of the output layer; those feed the
suspicious-label ranking and the selection rules.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.networks.nets import UNet
from scipy import ndimage

from ..engine.loop import LoopSpec, StepContext, fit
from ..errors import DatasetError
from ..progress import ProgressFn
from ..volumes.datasets import Case
from ..volumes.resample import resample_to_reference, resample_to_spacing
from ..volumes.volume import Geometry, Volume, orient
from .valuation import data_si_values, gradnorm_values, per_sample_gradients

CROP = 64                    # pixels per side of a crop
PIXEL_MM = 4.0               # in-plane spacing of the crops
CHANNELS = (8, 16, 32, 64)   # the U-Net's levels
WINDOWS = ((400.0, 40.0), (1800.0, 400.0))  # (width, level) HU: soft tissue, bone
CONTEXT_SLICES = 3           # slices beyond a target's first and last one that train too (negatives near it)
#: share of training slices drawn from anywhere in the volume: without them the probe, which never met the brain or
#: the chest, finds mandible there (validation Dice 0.63 -> 0.70 at 1500 steps, benchmarks/coreset.py probe)
ANYWHERE = 0.25
VALUED = "model.2.1.conv.unit0.conv"  # the output convolution: valued per sample (the paper's cheap route)


@dataclass
class SliceCase:
    """One volume as probe input."""

    name: str
    images: torch.Tensor        # (Z, 2, CROP, CROP) float16, windowed to [0, 1]
    labels: torch.Tensor        # (Z, CROP, CROP) int64 classes 0..T (0 where a target is not contoured)
    contoured: np.ndarray       # (T,) bool: the volume has a contour of that target
    rows: np.ndarray            # slices holding a contoured target, ± CONTEXT_SLICES
    z_mm: np.ndarray            # (Z,) LPS z of each slice, to open the volume there
    centres: np.ndarray | None = None  # (Z, 2) crop centre (row, column) on ``grid``'s slices
    grid: Geometry | None = None       # the LPS grid at PIXEL_MM in-plane the crops were cut from


@dataclass
class SliceInputs:
    """A volume's body-centred crops and where they came from (to place predictions back)."""

    images: torch.Tensor        # (Z, 2, CROP, CROP) float16
    centres: np.ndarray         # (Z, 2)
    grid: Volume                # the LPS volume at PIXEL_MM in-plane (HU)


def _body_centre(slice_hu: np.ndarray) -> tuple[float, float]:
    body = slice_hu > -400
    if body.sum() < 20:
        return (slice_hu.shape[0] - 1) / 2, (slice_hu.shape[1] - 1) / 2
    lab, n = ndimage.label(body)
    if n > 1:  # the couch and arms are smaller than the trunk or head
        sizes = ndimage.sum(body, lab, range(1, n + 1))
        body = lab == 1 + int(np.argmax(sizes))
    return ndimage.center_of_mass(body)


def _window(centre: tuple[float, float], shape_yx: tuple[int, ...]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(slice region, crop region) of the CROP x CROP window centred on ``centre`` that lies inside the slice."""
    cy, cx = int(round(centre[0])) - CROP // 2, int(round(centre[1])) - CROP // 2
    y0, x0 = max(cy, 0), max(cx, 0)
    y1, x1 = max(min(cy + CROP, shape_yx[0]), y0), max(min(cx + CROP, shape_yx[1]), x0)
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - cy, y1 - cy), slice(x0 - cx, x1 - cx))


def crop_at(arr: np.ndarray, centre: tuple[float, float], fill: float) -> np.ndarray:
    """The CROP x CROP window of a slice centred on ``centre``, ``fill`` outside it."""
    out = np.full((CROP, CROP), fill, arr.dtype)
    inside, part = _window(centre, arr.shape)
    out[part] = arr[inside]
    return out


def uncrop_to(crops: np.ndarray, centres: np.ndarray, shape_yx: tuple[int, int], fill: float) -> np.ndarray:
    """(Z, ..., CROP, CROP) crops put back on (Z, ..., H, W) slices: the inverse of :func:`crop_at`."""
    out = np.full(crops.shape[:-2] + tuple(shape_yx), fill, crops.dtype)
    for z, centre in enumerate(centres):
        inside, part = _window(centre, shape_yx)
        out[(z, Ellipsis, *inside)] = crops[(z, Ellipsis, *part)]
    return out


def slice_inputs(volume: Volume) -> SliceInputs:
    """Body-centred crops of a CT volume at PIXEL_MM in-plane (its own slice spacing), windowed."""
    image = orient(volume, "LPS")
    image = resample_to_spacing(image.with_array(image.array.astype(np.float32)),
                                (PIXEL_MM, PIXEL_MM, image.spacing[2]))
    hu = image.array
    centres = np.array([_body_centre(s) for s in hu], float).reshape(-1, 2)
    crops = np.stack([crop_at(s, ctr, -1000.0) for s, ctr in zip(hu, centres)])
    channels = [np.clip((crops - (level - width / 2)) / width, 0, 1) for width, level in WINDOWS]
    return SliceInputs(torch.from_numpy(np.stack(channels, 1).astype(np.float16)), centres, image)


def load_slice_case(case: Case, targets: list[str]) -> SliceCase:
    """Body-centred crops of an LPS-oriented case; classes 1..T are ``targets`` by name (or digit value)."""
    image, label = case.load()
    inputs = slice_inputs(image)
    grid = inputs.grid
    classes = np.zeros(grid.array.shape, np.int64)
    contoured = np.zeros(len(targets), bool)
    if label is not None:
        lab = resample_to_reference(orient(label, "LPS"), grid, is_label=True).array
        for c, name in enumerate(targets, start=1):
            try:
                value = case.label_value(name)
            except DatasetError:
                continue  # not named in this case: not contoured
            mask = lab == value
            contoured[c - 1] = bool(mask.any())
            classes[mask] = c
    labels = np.stack([crop_at(s, ctr, 0) for s, ctr in zip(classes, inputs.centres)])
    present = np.flatnonzero(labels.reshape(len(labels), -1).max(1) > 0)
    rows = np.zeros(0, int)
    if len(present):
        rows = np.arange(max(present.min() - CONTEXT_SLICES, 0), min(present.max() + CONTEXT_SLICES + 1, len(labels)))
    z_mm = np.array([grid.index_to_physical([0, 0, k])[2] for k in range(len(labels))])
    return SliceCase(case.name, inputs.images, torch.from_numpy(labels), contoured, rows, z_mm, inputs.centres,
                     grid.geometry)


def make_probe(n_targets: int, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(spatial_dims=2, in_channels=len(WINDOWS), out_channels=n_targets + 1, channels=CHANNELS,
                strides=(2,) * (len(CHANNELS) - 1), num_res_units=2, norm="batch")


def probe_loss(logits: torch.Tensor, labels: torch.Tensor, contoured: torch.Tensor,
               reduction: str = "mean", dice_on_absent: bool = True) -> torch.Tensor:
    """Cross-entropy + soft Dice, with each sample's uncontoured targets merged into the background (marginal
    loss: 'no contour' is not 'no organ').  ``contoured`` is (B, T) bool; per-sample (B,) with reduction 'none'.

    ``dice_on_absent`` False: a target's soft Dice counts only on slices that show it (cross-entropy alone teaches
    its absence).  On a slice without it the per-slice Dice is 1 unless its probability is ~0 everywhere, so long
    runs learn to never predict a small organ that most slices lack (brainstem and parotids lost after 8000 steps on
    40 volumes, docs/benchmarks.md 7); the probe's short runs keep the original form (True)."""
    probs = torch.softmax(logits.float(), 1)
    fg = probs[:, 1:] * contoured[:, :, None, None]
    background = probs[:, :1] + (probs[:, 1:] * ~contoured[:, :, None, None]).sum(1, keepdim=True)
    merged = torch.cat([background, fg], 1)
    # gather and comparisons, not nll_loss / one_hot: per-sample gradients (torch.func.vmap) go through this
    ce = -torch.log(merged.clamp(min=1e-7)).gather(1, labels[:, None]).mean((1, 2, 3))
    classes = torch.arange(1, logits.shape[1], device=labels.device)
    onehot = (labels[:, None] == classes[None, :, None, None]).float()
    inter = (fg * onehot).sum((2, 3))
    denom = fg.sum((2, 3)) + onehot.sum((2, 3))
    dice = 1 - (2 * inter + 1e-5) / (denom + 1e-5)
    weight = contoured.float() if dice_on_absent else (contoured & (onehot.sum((2, 3)) > 0)).float()
    soft_dice = (dice * weight).sum(1) / weight.sum(1).clamp(min=1)
    per_sample = ce + soft_dice
    return per_sample if reduction == "none" else per_sample.mean()


@dataclass
class Checkpoint:
    """Values of every pool volume at one training step."""

    step: int
    loss: np.ndarray            # (N, T) mean loss on the volume's valued slices, per contoured target (NaN else)
    dice: np.ndarray            # (N, T) Dice of the prediction against the volume's own label (NaN: no contour)
    gradnorm: np.ndarray        # (N,) output layer, per sample, mean over the valued slices
    data_si: np.ndarray         # (N,) agreement of the sample's gradient with the mean step (negative: agrees)
    worst_slice: np.ndarray     # (N,) row of the volume's highest-loss valued slice
    swapped: np.ndarray         # (N, T) Dice of target t's prediction with the label of its mirror target
    size_ratio: np.ndarray      # (N, T) labelled / predicted voxels on the valued slices (NaN: no contour)
    offset_mm: np.ndarray       # (N, T) in-plane distance between the label's and the prediction's centroids


@dataclass
class ProbeRun:
    model: UNet
    checkpoints: list[Checkpoint] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


def _batch(cases: list[SliceCase], picks, rows):
    x = torch.stack([cases[i].images[r] for i, r in zip(picks, rows)]).float()
    y = torch.stack([cases[i].labels[r] for i, r in zip(picks, rows)])
    m = torch.from_numpy(np.stack([cases[i].contoured for i in picks]))
    return x, y, m


def train_probe(cases: list[SliceCase], n_targets: int, *, steps: int = 2000, batch: int = 16, lr: float = 2e-3,
                seed: int = 0, value_every: int = 0, value_slices: int = 8, mirror: dict[int, int] | None = None,
                anywhere: float = ANYWHERE, cosine: bool = True, value_on: list[SliceCase] | None = None,
                progress: ProgressFn | None = None,
                cancelled: Callable[[], bool] | None = None) -> ProbeRun:
    """Adam on the slices with a contoured target (± 3) and a share ``anywhere`` of any slices; every
    ``value_every`` steps (0: never) each volume (of ``value_on`` when given: held-out ones) is
    valued on up to ``value_slices`` of its slices.  ``mirror`` maps a target index to its left/right twin
    (parotids) so a swapped label can be told."""
    rng = np.random.default_rng(seed)
    model = make_probe(n_targets, seed)
    usable = [i for i, c in enumerate(cases) if len(c.rows) and c.contoured.any()]
    if not usable:
        raise ValueError("no volume has a contoured target slice")
    valued = cases if value_on is None else value_on  # held-out volumes when cross-fitting
    value_rows = [np.sort(rng.choice(c.rows, min(value_slices, len(c.rows)), replace=False)) if len(c.rows) else
                  np.zeros(0, int) for c in valued]
    run = ProbeRun(model)

    def step_loss(net: torch.nn.Module, ctx: StepContext) -> torch.Tensor:
        picks = ctx.rng.choice(usable, batch)
        # a share of slices from anywhere in the volume: the probe also meets slices far from every target
        rows = [int(ctx.rng.integers(len(cases[i].labels))) if ctx.rng.random() < anywhere
                else int(ctx.rng.choice(cases[i].rows)) for i in picks]
        x, y, m = _batch(cases, picks, rows)
        return probe_loss(net(x), y, m)

    def value(net: torch.nn.Module, step: int) -> None:
        if value_every and (step % value_every == 0 or step == steps):
            run.checkpoints.append(value_cases(net, valued, value_rows, n_targets, step, lr, mirror))

    # cosine decay to zero over the run: the last steps refine instead of jumping (validation Dice 0.70 -> 0.71 at
    # 2000 steps, two seeds, benchmarks/coreset.py probe)
    spec = LoopSpec(steps, lr, 0.0, "adam", "cosine" if cosine else "constant", seed + 1)
    result = fit(model, step_loss, spec, progress=progress, cancelled=cancelled, on_step=value)
    run.seconds, run.steps = result.cpu_seconds, steps
    return run


def value_cases(model: UNet, cases: list[SliceCase], value_rows: list[np.ndarray], n_targets: int, step: int,
                lr: float, mirror: dict[int, int] | None = None) -> Checkpoint:
    """Per volume, on its valued slices: loss and own-label Dice per target, output-layer GradNorm and Data-SI."""
    model.eval()
    n = len(cases)
    loss_t = np.full((n, n_targets), np.nan)
    dice_t = np.full((n, n_targets), np.nan)
    swapped = np.full((n, n_targets), np.nan)
    worst = np.zeros(n, int)
    size_ratio = np.full((n, n_targets), np.nan)
    offset = np.full((n, n_targets), np.nan)
    gn = np.zeros(n)
    si = np.zeros(n)
    names = [VALUED + ".weight", VALUED + ".bias"]
    grads_all, owners = [], []
    for i, c in enumerate(cases):
        rows = value_rows[i]
        if not len(rows) or not c.contoured.any():
            continue
        x, y, m = _batch(cases, [i] * len(rows), rows)
        with torch.no_grad():
            logits = model(x)
            pred = logits.argmax(1)
            per_slice = probe_loss(logits, y, m, reduction="none")
        worst[i] = int(rows[int(per_slice.argmax())])
        for t in range(n_targets):
            one = torch.zeros_like(m)
            one[:, t] = True  # this target alone (an uncontoured one as if its label were empty: is it there?)
            with torch.no_grad():
                loss_t[i, t] = float(probe_loss(logits, torch.where(y == t + 1, y, 0), one).mean())
            if not c.contoured[t]:
                continue
            p, g = pred == t + 1, y == t + 1
            dice_t[i, t] = 2 * float((p & g).sum()) / max(float(p.sum() + g.sum()), 1.0)
            size_ratio[i, t] = float(g.sum()) / max(float(p.sum()), 1.0)
            if p.any() and g.any():
                cp = torch.nonzero(p)[:, 1:].float().mean(0)
                cg = torch.nonzero(g)[:, 1:].float().mean(0)
                offset[i, t] = float(torch.linalg.norm(cp - cg)) * PIXEL_MM
            if mirror and t in mirror and c.contoured[mirror[t]]:
                o = y == mirror[t] + 1
                swapped[i, t] = 2 * float((p & o).sum()) / max(float(p.sum() + o.sum()), 1.0)
        onehot_loss = lambda out, target, _m=m[:1]: probe_loss(out, target, _m)  # noqa: E731
        g = per_sample_gradients(model, names, x, y[:, None],
                                 lambda out, tgt, f=onehot_loss: f(out, tgt[:, 0]))
        grads_all.append(g)
        owners += [i] * len(rows)
    if grads_all:
        full = {k: torch.cat([g[k] for g in grads_all]) for k in names}
        owner = np.array(owners)
        _, gn_s = gradnorm_values(full)
        step_dir = {k: -lr * v.mean(0) for k, v in full.items()}  # the mean gradient's step (Adam's direction aside)
        _, si_s = data_si_values(full, step_dir)
        counts = np.bincount(owner, minlength=n).clip(min=1)
        gn = np.bincount(owner, gn_s.sum(1).detach().numpy(), minlength=n) / counts
        si = np.bincount(owner, si_s.sum(1).detach().numpy(), minlength=n) / counts
    return Checkpoint(step, loss_t, dice_t, gn, si, worst, swapped, size_ratio, offset)


def crossfit_checkpoints(cases: list[SliceCase], n_targets: int, *, folds: int = 2, steps: int = 1000,
                         seed: int = 0, value_every: int = 100, mirror: dict[int, int] | None = None,
                         progress: ProgressFn | None = None,
                         cancelled: Callable[[], bool] | None = None) -> list[Checkpoint]:
    """Each volume valued by probes that never trained on it (``folds`` probes, each on the other folds): a probe
    memorises a wrong label it trains on long enough, one that never saw it cannot."""
    rng = np.random.default_rng(seed + 7)
    fold = rng.permutation(len(cases)) % folds
    merged: list[Checkpoint] | None = None
    for f in range(folds):
        held = np.flatnonzero(fold == f)
        report = (lambda d, t, m, f=f: progress(f * steps + d, folds * steps, f"fold {f + 1}/{folds}: {m}")) \
            if progress else None
        run = train_probe([c for i, c in enumerate(cases) if fold[i] != f], n_targets, steps=steps, seed=seed + f,
                          value_every=value_every, mirror=mirror, value_on=[cases[i] for i in held],
                          progress=report, cancelled=cancelled)
        if merged is None:
            merged = [Checkpoint(c.step, *(np.full((len(cases),) + np.shape(a)[1:], np.nan if a.dtype.kind == "f"
                                                   else 0, a.dtype) for a in _arrays(c))) for c in run.checkpoints]
        for whole, part in zip(merged, run.checkpoints):
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a target no held-out volume has
                part.loss = part.loss / np.nanmedian(part.loss, 0)  # each probe's own scale: ratios to its median
            for name, a in zip(_ARRAYS, _arrays(part)):
                getattr(whole, name)[held] = a
    return merged or []


_ARRAYS = ("loss", "dice", "gradnorm", "data_si", "worst_slice", "swapped", "size_ratio", "offset_mm")


def _arrays(c: Checkpoint) -> list[np.ndarray]:
    return [np.asarray(getattr(c, name)) for name in _ARRAYS]


@torch.no_grad()
def predict_case(model: UNet, case: SliceCase) -> torch.Tensor:
    model.eval()
    return torch.cat([model(case.images[i:i + 64].float()).argmax(1) for i in range(0, len(case.images), 64)])


@torch.no_grad()
def evaluate_probe(model: UNet, cases: list[SliceCase], n_targets: int) -> np.ndarray:
    """(cases, targets) Dice over each whole volume's crops; NaN where a target is not contoured (never scored)."""
    out = np.full((len(cases), n_targets), np.nan)
    for k, c in enumerate(cases):
        pred = predict_case(model, c)
        for t in range(n_targets):
            if c.contoured[t]:
                p, g = pred == t + 1, c.labels == t + 1
                out[k, t] = 2 * (p & g).sum().item() / max((p.sum() + g.sum()).item(), 1)
    return out


@torch.no_grad()
def tta_entropy(model: UNet, case: SliceCase, shifts: int = 4, seed: int = 0) -> float:
    """Mean voxel entropy of the test-time-augmented mean prediction (small shifts) over the body's slices:
    MONAI Label's TTA scoring, for 'annotate next'."""
    model.eval()
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(case.images[:, 0].float().flatten(1).amax(1).numpy() > 0)
    x = case.images[rows].float()
    probs = []
    for _ in range(shifts):
        dy, dx = rng.integers(-3, 4, 2)
        shifted = torch.roll(x, (int(dy), int(dx)), (2, 3))
        p = torch.cat([torch.softmax(model(shifted[i:i + 64]), 1) for i in range(0, len(shifted), 64)])
        probs.append(torch.roll(p, (-int(dy), -int(dx)), (2, 3)))
    mean = torch.stack(probs).mean(0)
    entropy = -(mean * torch.log(mean.clamp(min=1e-6))).sum(1)
    return float(entropy.mean())
