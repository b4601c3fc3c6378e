"""Segmentation and localization metrics.

Dice, HD95 and normalized surface distance come from MONAI; box IoU from MONAI's box utilities; the
mean box-face distance in mm is MedLSAM's "WD".  The added path length (APL) is the measure of editing effort:
the true contour an annotator still has to draw (Vaassen et al. 2020; it tracks correction time far better than
Dice, Kiser et al. 2021).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from monai.data.box_utils import box_iou as _monai_box_iou
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
from scipy.spatial import cKDTree
from skimage.measure import find_contours

from .volumes.boxes import Box3D


def _onehot(mask: np.ndarray) -> torch.Tensor:
    """(z, y, x) boolean -> (1, 2, z, y, x) one-hot tensor (background, foreground)."""
    fg = torch.as_tensor(np.ascontiguousarray(mask, dtype=bool))
    return torch.stack([~fg, fg]).unsqueeze(0).float()


def _masks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as boolean arrays, refused when their shapes differ."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    return pred, gt


def dice_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two boolean masks (MONAI); both empty counts as agreement (1), one empty as 0."""
    pred, gt = _masks(pred, gt)
    if not pred.any() or not gt.any():
        return float(pred.any() == gt.any())
    return float(compute_dice(_onehot(pred), _onehot(gt), include_background=False).item())


def binary_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
    nsd_tolerance_mm: float = 2.0,
) -> dict[str, float]:
    """Dice, HD95 (mm) and NSD at ``nsd_tolerance_mm`` for two boolean masks indexed [z, y, x].

    Both empty: Dice 1 and NSD 1 with HD95 0. One empty: Dice 0, NSD 0, HD95 NaN (undefined).
    """
    pred, gt = _masks(pred, gt)
    p_any, g_any = bool(pred.any()), bool(gt.any())
    if not p_any and not g_any:
        return {"dice": 1.0, "hd95": 0.0, "nsd": 1.0}
    if not p_any or not g_any:
        return {"dice": 0.0, "hd95": math.nan, "nsd": 0.0}
    y_pred, y = _onehot(pred), _onehot(gt)
    spacing = [float(s) for s in spacing_zyx]
    dice = compute_dice(y_pred, y, include_background=False)
    with warnings.catch_warnings():  # MONAI passes its own deprecated argument to itself (gone in MONAI 1.7)
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95, spacing=spacing)
        nsd = compute_surface_dice(y_pred, y, class_thresholds=[nsd_tolerance_mm], include_background=False,
                                   spacing=spacing)
    return {"dice": float(dice.item()), "hd95": float(hd95.item()), "nsd": float(nsd.item())}


def surface_dice(pred: np.ndarray, gt: np.ndarray, spacing_zyx: tuple[float, float, float],
                 tolerance_mm: float) -> float:
    """Surface Dice (NSD, MONAI) at ``tolerance_mm`` alone: 1 when both are empty, 0 when one is."""
    pred, gt = _masks(pred, gt)
    if not pred.any() or not gt.any():
        return float(pred.any() == gt.any())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        nsd = compute_surface_dice(_onehot(pred), _onehot(gt), class_thresholds=[tolerance_mm],
                                   include_background=False, spacing=[float(s) for s in spacing_zyx])
    return float(nsd.item())


def _slice_contours_mm(mask2d: np.ndarray, spacing_yx: np.ndarray) -> list[np.ndarray]:
    """A slice's contours as polylines in mm (rows, cols scaled by the pixel size): the 0.5 level of the mask,
    padded so that a mask touching the slice edge is closed."""
    padded = np.pad(mask2d.astype(np.float32), 1)
    return [(c - 1.0) * spacing_yx for c in find_contours(padded, 0.5)]


def added_path_length(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
    tolerance_mm: float = 4.0,
) -> dict[str, float]:
    """Added path length: mm of the true contour, over every axial slice (axis 0), farther than ``tolerance_mm``
    from the predicted contour of that slice: what an annotator still redraws.

    Returns ``apl_mm``, ``contour_mm`` (the whole true contour) and ``apl_share`` (their ratio; NaN without a
    true contour).  Each segment of the true contour counts by its midpoint's distance to the predicted contour,
    measured in-plane in mm on points sampled every tenth of a pixel along it.
    """
    added, total = added_path_per_slice(pred, gt, spacing_zyx, tolerance_mm)
    added, total = float(added.sum()), float(total.sum())
    return {"apl_mm": added, "contour_mm": total, "apl_share": added / total if total > 0 else math.nan}


def added_path_per_slice(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
    tolerance_mm: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per axial slice: (mm of the true contour farther than ``tolerance_mm`` from the predicted one, mm of the
    whole true contour); :func:`added_path_length` is their sum."""
    pred, gt = _masks(pred, gt)
    spacing_yx = np.asarray(spacing_zyx[1:], float)
    step = 0.1 * float(spacing_yx.min())
    added, total = np.zeros(gt.shape[0]), np.zeros(gt.shape[0])
    for z in np.nonzero(gt.any(axis=(1, 2)))[0]:
        lengths, midpoints = [], []
        for c in _slice_contours_mm(gt[z], spacing_yx):
            seg = np.diff(c, axis=0)
            lengths.append(np.hypot(seg[:, 0], seg[:, 1]))
            midpoints.append(c[:-1] + 0.5 * seg)
        if not lengths:
            continue
        lengths, midpoints = np.concatenate(lengths), np.concatenate(midpoints)
        total[z] = float(lengths.sum())
        samples = []
        for c in _slice_contours_mm(pred[z], spacing_yx) if pred[z].any() else []:
            seg = np.diff(c, axis=0)
            n = np.maximum(1, np.ceil(np.hypot(seg[:, 0], seg[:, 1]) / step)).astype(int)
            samples.append(np.concatenate([c[i] + np.linspace(0, 1, k, endpoint=False)[:, None] * seg[i]
                                           for i, k in enumerate(n)] + [c[-1:]]))
        if not samples:
            added[z] = total[z]  # nothing predicted on this slice: all of it is drawn
            continue
        distance, _ = cKDTree(np.concatenate(samples)).query(midpoints)
        added[z] = float(lengths[distance > tolerance_mm].sum())
    return added, total


def slice_contour_error(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
    tolerance_mm: float = 4.0,
) -> np.ndarray:
    """Per axial slice, mm of contour an annotator redraws or erases: the true contour farther than the tolerance
    from the predicted one, plus the predicted contour farther than it from the true one."""
    return added_path_per_slice(pred, gt, spacing_zyx, tolerance_mm)[0] + \
        added_path_per_slice(gt, pred, spacing_zyx, tolerance_mm)[0]


def pooled_apl_share(metrics: Iterable[dict[str, float]]) -> float:
    """The added path length of several masks over their whole true contour (NaN with no true contour): a share
    that weighs each organ and volume by its contour, not an average of shares."""
    metrics = list(metrics)
    total = sum(m["contour_mm"] for m in metrics)
    return sum(m["apl_mm"] for m in metrics) / total if total > 0 else math.nan


def label_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    labels: Iterable[int] | None = None,
    nsd_tolerance_mm: float = 2.0,
    apl_tolerance_mm: float | None = None,
) -> dict[int, dict[str, float]]:
    """Per-label :func:`binary_metrics`, and :func:`added_path_length` at ``apl_tolerance_mm`` when given; by
    default over every non-zero label in ``gt``."""
    if labels is None:
        labels = [int(v) for v in np.unique(gt) if v != 0]
    out = {}
    for v in labels:
        out[int(v)] = binary_metrics(pred == v, gt == v, spacing_zyx, nsd_tolerance_mm)
        if apl_tolerance_mm is not None:
            out[int(v)].update(added_path_length(pred == v, gt == v, spacing_zyx, apl_tolerance_mm))
    return out


def box_iou(a: Box3D, b: Box3D) -> float:
    """Volume IoU of two inclusive voxel boxes."""
    boxes = torch.tensor([[*a.lo, *(h + 1 for h in a.hi)], [*b.lo, *(h + 1 for h in b.hi)]], dtype=torch.float64)
    return float(_monai_box_iou(boxes[:1], boxes[1:]).item())


def box_face_distance_mm(a: Box3D, b: Box3D, spacing: tuple[float, float, float]) -> float:
    """Mean absolute distance (mm) between the six corresponding faces of two boxes (MedLSAM's WD)."""
    s = np.asarray(spacing, dtype=float)
    lo = np.abs(np.subtract(a.lo, b.lo)) * s
    hi = np.abs(np.subtract(a.hi, b.hi)) * s
    return float(np.concatenate([lo, hi]).mean())
