"""Volume Fusion pretraining and fine-tuning of the slice network, and its pre-segmentation of whole volumes.

Both trainings run in :func:`..engine.fit` (seeded, resumable, progress and cancel); checkpoints are
:mod:`..checkpoint`'s format with the network's :class:`.slicenet.NetSpec` and the targets in ``meta``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..coreset.probe import SliceCase, probe_loss, slice_inputs, uncrop_to
from ..engine.augment import random_affine
from ..engine.checkpoint import CheckpointError, load_checkpoint, load_weights, update_meta
from ..engine.loop import FitResult, LoopSpec, StepContext, fit, seeded
from ..errors import DatasetError
from ..progress import CancelledFn, ProgressFn
from ..project.pipeline import combination_share
from ..vf.fusion import FusionConfig, fuse
from ..vf.train import lateral_swap
from ..volumes.resample import resample_to_reference
from ..volumes.volume import Volume
from .combination import Combination
from .slicenet import NetSpec, stack

KIND_VF = "slicenet-vf"
KIND_SEG = "slicenet"
#: rotation ±10°, shift ±6 % of the crop, contrast; border padding keeps the body's edge at the crop's edge
AUGMENT = {"rotate": 0.17, "shift": 0.12, "bias": 0.05, "padding": "border"}
ANYWHERE = 0.25  # share of training slices drawn from anywhere (the probe's finding: no mandible in the brain)


@dataclass
class LearnConfig:
    """Hyper-parameters of one training run (the benchmark's recipe is the default)."""

    steps: int = 4000
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    anywhere: float = ANYWHERE
    augment: bool = True
    #: soft Dice also on slices without the target: the coreset probe's form, which loses small organs in long runs
    dice_on_absent: bool = False
    vf_classes: int = 4
    net: NetSpec = field(default_factory=NetSpec)

    def loop(self, save_every: int = 0) -> LoopSpec:
        return LoopSpec(self.steps, self.lr, self.weight_decay, "adamw", "cosine", self.seed, save_every)


def _usable(cases: list[SliceCase]) -> list[int]:
    return [i for i, c in enumerate(cases) if len(c.rows) and c.contoured.any()]


def finetune(cases: list[SliceCase], targets: list[str], out: str | os.PathLike[str] | None, cfg: LearnConfig,
             *, init: str | os.PathLike[str] | None = None, values: list[int] | None = None,
             progress: ProgressFn | None = None, cancelled: CancelledFn | None = None,
             device: str | torch.device | None = None) -> FitResult:
    """Train the slice network on labelled slice cases (classes 1..T = ``targets``), optionally from a Volume Fusion
    checkpoint ``init``; ``values`` are the label-map values the predictor writes (default 1..T)."""
    usable = _usable(cases)
    if not usable:
        raise DatasetError("no volume has a contoured target to fine-tune on")
    mirror = lateral_swap(list(targets))

    def step_loss(net: torch.nn.Module, ctx: StepContext) -> torch.Tensor:
        rng = ctx.rng
        picks = rng.choice(usable, cfg.batch)
        rows = [int(rng.integers(len(cases[i].labels))) if rng.random() < cfg.anywhere
                else int(rng.choice(cases[i].rows)) for i in picks]
        x = torch.cat([stack(cases[i].images, [r], cfg.net.context) for i, r in zip(picks, rows)])
        y = torch.stack([cases[i].labels[r] for i, r in zip(picks, rows)])
        if cfg.augment:
            x, y = random_affine(x, y, rng, mirror=mirror, **AUGMENT)
        m = torch.from_numpy(np.stack([cases[i].contoured for i in picks]))
        return probe_loss(net(x.to(ctx.device)), y.to(ctx.device), m.to(ctx.device),
                          dice_on_absent=cfg.dice_on_absent)

    meta = {"targets": list(targets), "values": list(values or range(1, len(targets) + 1)),
            "net": cfg.net.to_meta(), "config": {k: v for k, v in asdict(cfg).items() if k != "net"},
            "volumes": [cases[i].name for i in usable]}
    model = seeded(lambda: cfg.net.build(len(targets) + 1), cfg.seed)
    result = fit(model, step_loss, cfg.loop(save_every=250), out, kind=KIND_SEG, meta=meta, init=init,
                 progress=progress, cancelled=cancelled, device=device)
    result.scores = training_dice(result.model, [cases[i] for i in usable], targets, cfg.net.context)
    if result.path is not None and result.steps >= cfg.steps:  # a finished run says what it learned
        update_meta(result.path, learned=learned_targets(result.scores),
                    scores={t: round(d, 4) for t, d in result.scores.items()})
    return result


NOT_LEARNED = 0.2  # training-volume Dice below this: the target was not learned (a warning, never a silent mask)


def learned_targets(scores: dict[str, float]) -> list[str]:
    """The targets a finished training learned: contoured on its training volumes (a target without a contour has
    no score) and found there again (Dice >= :data:`NOT_LEARNED`).  Only these are ever written."""
    return [t for t, d in scores.items() if d >= NOT_LEARNED]


def fit_summary(scores: dict[str, float], untrained: dict[str, str] | None = None) -> str:
    """One line for the CLI and the dock: Dice on the training volumes, the targets not learned by name (never
    written), with what would help."""
    parts = [f"{t} {d:.2f}" for t, d in scores.items()]
    lost = [t for t, d in scores.items() if d < NOT_LEARNED]
    warn = (f"; NOT LEARNED (never written): {', '.join(lost)} (train again with more steps, or review more "
            "volumes holding it)") if lost else ""
    for t, why in (untrained or {}).items():
        warn += f"; {t}: not trained ({why})"
    return "Dice on its training volumes: " + ", ".join(parts) + warn


def training_dice(model: torch.nn.Module, cases: list[SliceCase], targets: list[str], context: int = 1
                  ) -> dict[str, float]:
    """Mean Dice of each target on the training volumes' own contours (crops, no flip): a target far below the
    others was not learned (seen once: brainstem lost after 8000 steps on 40 volumes, docs/benchmarks.md 7)."""
    model = model.cpu().eval()
    dice = np.full((len(cases), len(targets)), np.nan)
    with torch.no_grad():
        for k, c in enumerate(cases):
            rows = c.rows if len(c.rows) else np.arange(len(c.images))
            pred = torch.cat([model(stack(c.images, rows[i:i + 32], context)).argmax(1)
                              for i in range(0, len(rows), 32)])
            truth = c.labels[torch.from_numpy(np.asarray(rows))]
            for t in range(len(targets)):
                if c.contoured[t]:
                    p, g = pred == t + 1, truth == t + 1
                    dice[k, t] = 2 * float((p & g).sum()) / max(float(p.sum() + g.sum()), 1.0)
    with np.errstate(all="ignore"):
        return {t: float(np.nanmean(dice[:, i])) for i, t in enumerate(targets) if np.isfinite(dice[:, i]).any()}


def pretrain_vf(volumes: list[torch.Tensor], out: str | os.PathLike[str] | None, cfg: LearnConfig, *,
                progress: ProgressFn | None = None, cancelled: CancelledFn | None = None,
                device: str | torch.device | None = None) -> FitResult:
    """Volume Fusion on slice crops: a block of another scan's slice is blended into a slice with a coefficient in
    {0, 1/K, ..., 1}; the network tells the coefficient of every pixel.  ``volumes`` are (Z, 2, H, W) crops
    (:func:`..coreset.probe.slice_inputs`); labels are never read."""
    body = [np.flatnonzero(v[:, 0].float().flatten(1).amax(1).numpy() > 0.05) for v in volumes]
    keep = [i for i, b in enumerate(body) if len(b)]
    if not keep:
        raise DatasetError("no volume with scanned body for Volume Fusion pretraining")
    size = volumes[keep[0]].shape[-1]
    fusion = FusionConfig((1, size, size), cfg.vf_classes, (1, 8, 8), (1, 32, 32))
    blank = np.zeros((1, size, size), np.float32)

    def draw(rng: np.random.Generator) -> torch.Tensor:
        i = keep[int(rng.integers(len(keep)))]
        return stack(volumes[i], [int(rng.choice(body[i]))], cfg.net.context)

    def step_loss(net: torch.nn.Module, ctx: StepContext) -> torch.Tensor:
        rng = ctx.rng
        bg = torch.cat([draw(rng) for _ in range(cfg.batch)])
        fg = torch.cat([draw(rng) for _ in range(cfg.batch)])
        if cfg.augment:
            bg, _ = random_affine(bg, None, rng, **AUGMENT)
            fg, _ = random_affine(fg, None, rng, **AUGMENT)
        labels = torch.from_numpy(np.stack([fuse(blank, blank, rng, fusion)[1][0] for _ in range(cfg.batch)]))
        alpha = (labels.float() / cfg.vf_classes)[:, None]
        x = alpha * fg + (1 - alpha) * bg
        every = torch.ones(cfg.batch, cfg.vf_classes, dtype=torch.bool)
        return probe_loss(net(x.to(ctx.device)), labels.to(ctx.device), every.to(ctx.device))

    meta = {"net": cfg.net.to_meta(), "classes": cfg.vf_classes, "volumes": len(keep),
            "config": {k: v for k, v in asdict(cfg).items() if k != "net"}}
    model = seeded(lambda: cfg.net.build(cfg.vf_classes + 1), cfg.seed)
    return fit(model, step_loss, cfg.loop(save_every=250), out, kind=KIND_VF, meta=meta, progress=progress,
               cancelled=cancelled, device=device)


def _class_on_volume(probs: np.ndarray, grid: Volume, volume: Volume, c: int) -> np.ndarray:
    """Class ``c``'s probability from the network's 4 mm grid onto ``volume``'s own (outside the grid: background)."""
    return resample_to_reference(grid.with_array(probs[c].astype(np.float32)), volume,
                                 fill_value=1.0 if c == 0 else 0.0).array


class SliceNetPredictor:
    """A fine-tuned slice network that writes label maps on any CT volume's own grid.

    ``classes`` are the targets it was trained on (its output classes 1..T, label ``values``); ``targets`` the ones
    it learned (the checkpoint's record, :func:`learned_targets`), the only ones it predicts or writes.  A checkpoint
    without that record (trained before it was kept) learned nothing it may write: ``note`` says so."""

    def __init__(self, checkpoint: str | os.PathLike[str] | dict[str, Any], device: str | torch.device | None = None,
                 model: torch.nn.Module | None = None, flip: bool = True, every_class: bool = False):
        state = checkpoint if isinstance(checkpoint, dict) else \
            load_checkpoint(checkpoint, KIND_SEG, "learning-loop segmentation checkpoint (medlsam finetune)")
        meta = state["meta"]
        try:
            self.classes = [str(t) for t in meta["targets"]]
            self.values = [int(v) for v in meta.get("values", range(1, len(self.classes) + 1))]
            self.spec = NetSpec.from_meta(meta.get("net", {}))
            # every_class: the raw network, learned or not (a component benchmark; never the product's writes)
            learned = list(self.classes) if every_class else meta.get("learned")
            self._learned = [i for i, t in enumerate(self.classes) if learned is not None and t in set(learned)]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{checkpoint}: no target list in the checkpoint ({exc})") from exc
        # the atlas + network mix per target, learned from the reviewed volumes (learning.combination)
        self.combination = {str(t): Combination.from_meta(c) for t, c in (meta.get("combination") or {}).items()}
        self.note = "" if learned is not None else (
            "the network was trained before it recorded which targets it learned: train it again to use it")
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if model is None:
            model = self.spec.build(len(self.classes) + 1)
            load_weights(model, state, checkpoint if not isinstance(checkpoint, dict) else "checkpoint")
        self.model = model.to(self.device).eval()
        # test-time left-right flip, paired targets swapped (the training's augmentation): None when a sided target
        # has no twin, or asked off
        self.mirror = lateral_swap(self.classes) if flip else None

    @property
    def targets(self) -> list[str]:
        """The targets it learned, by the names it writes them under."""
        return [self.classes[i] for i in self._learned]

    @property
    def learned_values(self) -> list[int]:
        return [self.values[i] for i in self._learned]

    def named(self, names: dict[int, str]) -> "SliceNetPredictor":
        """Its targets named as a project names their label values now (a target renamed since training is the
        same target); a learned target whose value the project no longer has is not written."""
        renamed = [names.get(v, t) for t, v in zip(self.classes, self.values)]
        self.combination = {new: self.combination[old] for old, new in zip(self.classes, renamed)
                            if old in self.combination}
        self.classes = renamed
        self._learned = [i for i in self._learned if self.values[i] in names]
        return self

    @torch.inference_mode()
    def probabilities(self, volume: Volume) -> tuple[np.ndarray, Volume]:
        """(T + 1, Z, H, W) class probabilities on the 4 mm LPS grid, and that grid."""
        inputs = slice_inputs(volume)
        rows = np.arange(len(inputs.images))
        chunks = []
        for lo in range(0, len(rows), 32):
            x = stack(inputs.images, rows[lo:lo + 32], self.spec.context).to(self.device)
            p = torch.softmax(self.model(x).float(), 1)
            if self.mirror is not None:
                q = torch.softmax(self.model(torch.flip(x, (3,))).float(), 1)
                p = (p + torch.flip(q, (3,))[:, torch.from_numpy(np.asarray(self.mirror))]) / 2
            chunks.append(p.cpu())
        crops = torch.cat(chunks).numpy()  # (Z, C, CROP, CROP)
        shape_yx = inputs.grid.array.shape[1:]
        probs = uncrop_to(crops, inputs.centres, shape_yx, 0.0)
        probs[:, 0][probs.sum(1) == 0] = 1.0  # outside the crop: background
        return np.moveaxis(probs, 1, 0), inputs.grid

    name = "network"

    def share(self, target: str, with_vote: bool) -> tuple[float, float]:
        """(the network's share, the threshold) of ``target``'s mix with the atlas vote: learned from the reviewed
        volumes where that beat the fixed mix (``meta["combination"]``), else the fixed one."""
        c = self.combination.get(target)
        return (c.share, c.threshold) if with_vote and c is not None and c.learned else combination_share(with_vote)

    def target_probabilities(self, volume: Volume) -> dict[str, np.ndarray]:
        """Each learned target's probability [z, y, x] (float32) on ``volume``'s own grid: what the pipeline
        combines with the atlas vote (``pipeline.segment_query``)."""
        volume.require_finite()
        probs, grid = self.probabilities(volume)
        return self.learned_probabilities(self.class_maps(probs, grid, volume, [i + 1 for i in self._learned]))

    def class_maps(self, probs: np.ndarray, grid: Volume, volume: Volume, classes) -> dict[int, np.ndarray]:
        """:meth:`probabilities`' ``classes`` (0 = background) on ``volume``'s own grid, each resampled once."""
        return {c: _class_on_volume(probs, grid, volume, c) for c in classes}

    def learned_probabilities(self, maps: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
        """The learned targets' probabilities, by name, from :meth:`class_maps`."""
        return {self.classes[i]: maps[i + 1] for i in self._learned}

    def predict(self, volume: Volume, *, largest_component: bool = True) -> np.ndarray:
        """Label map [z, y, x] of the learned targets with the checkpoint's label values, on ``volume``'s grid."""
        volume.require_finite()
        probs, grid = self.probabilities(volume)
        return self.label_map(self.class_maps(probs, grid, volume, range(probs.shape[0])),
                              largest_component=largest_component)

    def label_map(self, maps: dict[int, np.ndarray], *, largest_component: bool = True) -> np.ndarray:
        """The most probable class of every voxel (``maps``: every class, :meth:`class_maps`), learned targets only;
        each kept to its largest 3D connected piece (an organ is one piece; stray islands elsewhere are the usual
        error)."""
        shape = maps[0].shape
        best = np.zeros(shape, np.float32)
        classes = np.zeros(shape, np.int16)
        for c, p in sorted(maps.items()):
            better = p > best
            best[better] = p[better]
            classes[better] = c
        out = np.zeros(shape, np.uint16 if max(self.values, default=0) > 255 else np.uint8)
        for i in self._learned:
            mask = classes == i + 1
            if largest_component and mask.any():
                lab, n = ndimage.label(mask)
                if n > 1:
                    mask = lab == 1 + int(np.argmax(ndimage.sum(mask, lab, range(1, n + 1))))
            out[mask] = self.values[i]
        return out
