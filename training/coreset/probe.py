"""The CPU-sized segmentation probe used to value and compare selections: a small 2D U-Net (MONAI BasicUNet)
on axial slices, trained with momentum SGD, optionally valuing every case each epoch and applying the online rule."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet

from ..cam.classifier import SIZE, prepare_slices
from ..datasets import Case
from ..errors import DatasetError
from ..report.measure import guess_modality
from ..volume import orient
from .rules import online_cluster_rule
from .valuation import data_si_values, gradnorm_values, per_sample_gradients, predicted_sgd_step

FEATURES = (8, 16, 32, 64, 128, 8)
#: parameters valued per sample: the last decoder block and the output layer (the paper's cheap route)
VALUED = ("upcat_1", "final_conv")


@dataclass
class SliceCase:
    """One volume as probe input: (Z, 2, SIZE, SIZE) slices, (Z, SIZE, SIZE) class indices, rows to use."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    rows: np.ndarray            # slices with a target (training and valuation draw from these)


def load_slice_case(case: Case, targets: list[str]) -> SliceCase:
    """Slices of an LPS-oriented, labelled case; classes 1..T are ``targets`` by name (or digit value)."""
    image, label = case.load()
    prep = prepare_slices(image, guess_modality(image))
    lab = orient(label, "LPS").array if label is not None else np.zeros(prep.canonical.array.shape, np.uint8)
    classes = np.zeros(lab.shape, np.int64)
    for c, name in enumerate(targets, start=1):
        try:
            classes[lab == case.label_value(name)] = c
        except DatasetError:
            pass  # a case without this target: background there
    t = torch.from_numpy(classes)[:, None].float()
    t = F.interpolate(t, size=(SIZE, SIZE), mode="nearest")[:, 0].long()
    rows = np.flatnonzero(t.flatten(1).amax(1).numpy() > 0)
    return SliceCase(case.name, prep.images, t, rows)


def make_probe(n_targets: int, seed: int = 0) -> BasicUNet:
    torch.manual_seed(seed)
    return BasicUNet(spatial_dims=2, in_channels=2, out_channels=n_targets + 1, features=FEATURES, dropout=0.1)


def _loss() -> DiceCELoss:
    # foreground-only Dice: small organs would otherwise vanish under the background's share of the loss
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)


@dataclass
class ProbeRun:
    model: BasicUNet
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)  # "gradnorm"/"data_si" -> per epoch (N, G)
    dice: list[np.ndarray] = field(default_factory=list)                # per epoch (N,) training Dice
    kept: list[np.ndarray] = field(default_factory=list)                # per epoch (N,) kept by the online rule
    groups: list[str] = field(default_factory=list)
    seconds: float = 0.0


def train_probe(cases: list[SliceCase], n_targets: int, *, steps: int = 400, batch: int = 12, epochs: int = 8,
                lr: float = 0.05, seed: int = 0, observe: bool = False, online: bool = False, value_slices: int = 3,
                progress: Callable[[int, int, str], None] | None = None) -> ProbeRun:
    """Train for ``steps`` steps spread over ``epochs``; with ``observe`` every case is valued before each epoch
    (GradNorm, Data-SI, training Dice), with ``online`` the epoch trains only on what the online rule keeps."""
    rng = np.random.default_rng(seed)
    model = make_probe(n_targets, seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    loss_fn = _loss()
    run = ProbeRun(model)
    usable = [i for i, c in enumerate(cases) if len(c.rows)]
    if not usable:
        raise ValueError("no case has a labelled target slice")
    probe_rows = [rng.choice(c.rows, min(value_slices, len(c.rows)), replace=False) if len(c.rows) else
                  np.zeros(0, int) for c in cases]
    per_epoch = max(steps // epochs, 1)
    start, done = time.time(), 0
    for epoch in range(epochs):
        keep = np.ones(len(cases), bool)
        scale = 1.0
        if observe or online:
            gn, si, dice, run.groups = _value_cases(model, opt, cases, probe_rows)
            run.values.setdefault("gradnorm", []).append(gn)
            run.values.setdefault("data_si", []).append(si)
            run.dice.append(dice)
            if online:
                keep, scale = online_cluster_rule(si, seed=seed)
            run.kept.append(keep)
        pool = [i for i in usable if keep[i]] or usable
        for g in opt.param_groups:
            g["lr"] = lr * scale * 0.5 * (1 + np.cos(np.pi * epoch / epochs))  # cosine over epochs
        model.train()
        for _ in range(per_epoch):
            pick = rng.choice(pool, batch)
            rows = [int(rng.choice(cases[i].rows)) for i in pick]
            x = torch.stack([cases[i].images[r] for i, r in zip(pick, rows)]).float()
            y = torch.stack([cases[i].labels[r] for i, r in zip(pick, rows)])[:, None]
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if progress:
                progress(done, per_epoch * epochs, f"loss {float(loss.detach()):.3f}")
    run.seconds = time.time() - start
    return run


def _value_cases(model, opt, cases, probe_rows):
    """Per case (mean over its probe slices): GradNorm and Data-SI vectors over the valued groups, training Dice."""
    names = [n for n, _ in model.named_parameters() if n.split(".")[0] in VALUED]
    n_classes = model.final_conv.out_channels
    onehot_loss = DiceCELoss(softmax=True, include_background=False)
    index = [(i, int(r)) for i, rows in enumerate(probe_rows) for r in rows]
    grads: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    dice = np.zeros(len(cases))
    for b in range(0, len(index), 32):
        part = index[b:b + 32]
        x = torch.stack([cases[i].images[r] for i, r in part]).float()
        y = torch.stack([cases[i].labels[r] for i, r in part])[:, None]
        # one-hot outside vmap: MONAI's one_hot scatters in place, which vmap cannot batch
        onehot = F.one_hot(y[:, 0], n_classes).permute(0, 3, 1, 2).float()
        g = per_sample_gradients(model, names, x, onehot, onehot_loss)
        for n in names:
            grads[n].append(g[n])
        with torch.no_grad():
            model.eval()
            pred = model(x).argmax(1)
        for (i, _), p, t in zip(part, pred, y[:, 0]):
            fg_p, fg_t = p > 0, t > 0
            inter = ((p == t) & fg_t).sum().item()
            dice[i] += 2 * inter / max(fg_p.sum().item() + fg_t.sum().item(), 1)
    full = {n: torch.cat(v) for n, v in grads.items()}
    step = predicted_sgd_step(opt, model, {n: g.mean(0) for n, g in full.items()})
    groups, gn = gradnorm_values(full)
    _, si = data_si_values(full, step)
    owner = np.array([i for i, _ in index])
    counts = np.bincount(owner, minlength=len(cases)).clip(min=1)

    def per_case(v: torch.Tensor) -> np.ndarray:
        out = np.zeros((len(cases), v.shape[1]))
        np.add.at(out, owner, v.detach().numpy())
        return out / counts[:, None]

    return per_case(gn), per_case(si), dice / counts, groups


@torch.no_grad()
def evaluate_probe(model: BasicUNet, cases: list[SliceCase], n_targets: int) -> np.ndarray:
    """(cases, targets) Dice over each whole volume (NaN where a case lacks the target)."""
    model.eval()
    out = np.full((len(cases), n_targets), np.nan)
    for k, c in enumerate(cases):
        pred = torch.cat([model(c.images[i:i + 32].float()).argmax(1) for i in range(0, len(c.images), 32)])
        for t in range(1, n_targets + 1):
            p, g = pred == t, c.labels == t
            if g.any():
                out[k, t - 1] = 2 * (p & g).sum().item() / (p.sum().item() + g.sum().item())
    return out


@torch.no_grad()
def tta_entropy(model: BasicUNet, case: SliceCase, shifts: int = 4, seed: int = 0) -> float:
    """Mean voxel entropy of the test-time-augmented mean prediction (small shifts), over the body's slices:
    MONAI Label's TTA scoring, for 'annotate next'."""
    model.eval()
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(case.images.float().flatten(1).amax(1).numpy() > 0)
    x = case.images[rows].float()
    probs = []
    for _ in range(shifts):
        dy, dx = rng.integers(-4, 5, 2)
        shifted = torch.roll(x, (int(dy), int(dx)), (2, 3))
        p = torch.cat([torch.softmax(model(shifted[i:i + 32]), 1) for i in range(0, len(shifted), 32)])
        probs.append(torch.roll(p, (-int(dy), -int(dx)), (2, 3)))
    mean = torch.stack(probs).mean(0)
    entropy = -(mean * torch.log(mean.clamp(min=1e-6))).sum(1)
    return float(entropy.mean())


@torch.no_grad()
def embedding(model: BasicUNet, case: SliceCase) -> np.ndarray:
    """A volume embedding: the probe's bottleneck features, averaged over space and slices."""
    model.eval()
    feats = []
    for i in range(0, len(case.images), 32):
        x = case.images[i:i + 32].float()
        x0 = model.conv_0(x)
        x4 = model.down_4(model.down_3(model.down_2(model.down_1(x0))))
        feats.append(x4.mean((2, 3)))
    return torch.cat(feats).mean(0).numpy()
