"""From slice tags to pseudo-masks for one volume: CAMs at several depths on the tagged slices, their fusion
(mean or UM-CAM), GSE, and the bridge into LiteMedSAM (pseudo-mask -> per-slice boxes -> SAM masks)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize.class_activation_maps import ModelWithHooks

from ..metrics import dice_score
from ..segmentation.propagate import PropagationConfig, VolumeSegmenter, mask_box_2d
from .classifier import PreparedSlices, SliceClassifier, body_slices, to_slice_grid
from .fusion import mean_fusion, um_fusion
from .gse import best_threshold, gse_refine, largest_component
from .tags import PRESENT

#: the maps fused by UM-CAM: LayerCAM at two shallow depths, Grad-CAM on the last block, the class map (CAM)
FUSED = ("layercam_block2", "layercam_block3", "gradcam_block4", "cam")
VARIANTS = ("gradcam", "layercam", "mean", "umcam", "umcam_gse")
_LAYERS = ("block2", "block3", "block4")
_HOOKED: "weakref.WeakKeyDictionary[SliceClassifier, ModelWithHooks]" = weakref.WeakKeyDictionary()


def cam_maps(model: SliceClassifier, prep: PreparedSlices, target: int, slices: np.ndarray, batch: int = 32
             ) -> dict[str, np.ndarray]:
    """Maps (len(slices), Y, X) in [0, 1] on the canonical slice grid for one target.

    Grad-CAM weights a layer's channels by their mean gradient; LayerCAM weights every location by its positive
    gradient, which keeps shallow layers' detail (MONAI provides the hooks; its default normaliser inverts maps,
    so each map is min-max scaled here)."""
    if model not in _HOOKED:  # hooks are registered once per model: each construction would add another set
        _HOOKED[model] = ModelWithHooks(model, list(_LAYERS), register_forward=True, register_backward=True)
    hooked = _HOOKED[model]
    out: dict[str, list[np.ndarray]] = {k: [] for k in FUSED}
    shape_yx = prep.canonical.array.shape[1:]
    for i in range(0, len(slices), batch):
        x = prep.images[slices[i:i + batch]].float().requires_grad_(True)
        _, acti, grad = hooked(x, class_idx=target)
        a = dict(zip(_LAYERS, acti))
        g = dict(zip(_LAYERS, grad))
        maps = {
            "layercam_block2": F.relu((F.relu(g["block2"]) * a["block2"]).sum(1)),
            "layercam_block3": F.relu((F.relu(g["block3"]) * a["block3"]).sum(1)),
            "gradcam_block4": F.relu((g["block4"].mean((2, 3), keepdim=True) * a["block4"]).sum(1)),
        }
        with torch.no_grad():  # the class map of the block-4 activations the hooks kept (dropout is off in eval)
            maps["cam"] = F.relu(model.classmap(a["block4"])[:, target])
        for k, m in maps.items():
            m = m.detach()
            m = m / m.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]
            crops = prep.crops[slices[i:i + batch]] if prep.crops is not None else None
            out[k].append(to_slice_grid(m.numpy(), shape_yx, crops))
    return {k: np.clip(np.concatenate(v), 0, 1) for k, v in out.items()}


@dataclass
class TargetSeeds:
    """One target's CAM seeding on the canonical (LPS) grid."""

    name: str
    maps: dict[str, np.ndarray] = field(default_factory=dict)   # variant -> soft map (Z, Y, X)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # variant -> pseudo-mask (Z, Y, X)
    uncertainty: np.ndarray | None = None
    seeds_fg: np.ndarray | None = None                          # (N, 3) z, y, x
    seeds_bg: np.ndarray | None = None


def standardised(prep: PreparedSlices) -> np.ndarray:
    """The canonical image scaled for geodesic costs: soft-tissue window for CT, then zero mean, unit SD."""
    arr = prep.canonical.array.astype(np.float32)
    if prep.modality == "CT":
        arr = np.clip(arr, -160, 240)
    return (arr - arr.mean()) / max(float(arr.std()), 1e-6)


def body_mask(prep: PreparedSlices) -> np.ndarray:
    """Voxels of the patient (``body_slices``) on the canonical grid."""
    return body_slices(prep.canonical.array, prep.modality)


def seed_target(model: SliceClassifier, prep: PreparedSlices, tags: np.ndarray, target: int, name: str,
                *, lam: float = 1.0, ratio: float = 1.0) -> TargetSeeds:
    """Every variant's soft map and pseudo-mask for one target, CAMs only on slices tagged present."""
    slices = np.nonzero(tags == PRESENT)[0]
    shape = prep.canonical.array.shape
    res = TargetSeeds(name)
    if slices.size == 0:
        return res
    cams = cam_maps(model, prep, target, slices)
    image = standardised(prep)
    spacing = prep.canonical.spacing_zyx
    region = np.zeros(shape, bool)
    region[slices] = body_mask(prep)[slices]  # tagged slices, inside the body (air and padding are never the target)

    def volume(stack: np.ndarray) -> np.ndarray:
        v = np.zeros(shape, np.float32)
        v[slices] = stack
        return v * region

    fused, uncertainty = um_fusion([cams[k] for k in FUSED])
    soft = {"gradcam": volume(cams["gradcam_block4"]), "layercam": volume(cams["layercam_block3"]),
            "mean": volume(mean_fusion([cams[k] for k in FUSED])), "umcam": volume(fused)}
    for variant, m in soft.items():
        res.maps[variant] = m
        res.masks[variant] = largest_component((m >= best_threshold(m, image, region)) & region)
    refined, mask, seeds = gse_refine(soft["umcam"], image, spacing, lam=lam, ratio=ratio, region=region)
    res.maps["umcam_gse"], res.masks["umcam_gse"] = refined * region, mask & region
    res.uncertainty = volume(uncertainty)
    if seeds is not None:
        res.seeds_fg, res.seeds_bg = seeds.foreground, seeds.background
    return res


def sam_from_mask(volume_segmenter: VolumeSegmenter, mask: np.ndarray, margin: int = 2) -> np.ndarray:
    """Pseudo-mask (canonical grid) -> one box per slice -> SAM masks on the same slices."""
    prompts = {}
    for z in np.nonzero(mask.reshape(mask.shape[0], -1).any(1))[0]:
        box = mask_box_2d(mask[z], margin)
        if box is not None:
            prompts[int(z)] = box
    if not prompts:
        return np.zeros(mask.shape, bool)
    return volume_segmenter.segment_slices(prompts, PropagationConfig(mode="mask"))


def seed_case(model: SliceClassifier, prep: PreparedSlices, tags: np.ndarray, targets: list[str], *,
              segmenter=None, truth: np.ndarray | None = None, case=None) -> dict[tuple[str, str], float]:
    """Dice of every variant per target against ``truth`` (canonical label array), for the benchmark."""
    out = {}
    vs = VolumeSegmenter(prep.canonical, segmenter) if segmenter is not None else None
    for t, name in enumerate(targets):
        if not np.any(tags[:, t] == PRESENT) or truth is None:
            continue
        value = case.label_value(name)
        gt = truth == value
        res = seed_target(model, prep, tags[:, t], t, name)
        for variant, mask in res.masks.items():
            out[(variant, name)] = float(dice_score(mask, gt))
        if vs is not None:
            out[("umcam_gse_litemedsam", name)] = float(dice_score(sam_from_mask(vs, res.masks["umcam_gse"]), gt))
            out[("oracle_box_litemedsam", name)] = float(dice_score(sam_from_mask(vs, gt, margin=0), gt))
    return out
