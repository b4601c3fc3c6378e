"""Segmentation and localization metrics.

Dice, HD95 and normalized surface distance come from MONAI; box IoU from MONAI's box utilities; the
mean box-face distance in mm is MedLSAM's "WD".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from monai.data.box_utils import box_iou as _monai_box_iou
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

from .boxes import Box3D


def _onehot(mask: np.ndarray) -> torch.Tensor:
    """(z, y, x) boolean -> (1, 2, z, y, x) one-hot tensor (background, foreground)."""
    fg = torch.as_tensor(np.ascontiguousarray(mask, dtype=bool))
    return torch.stack([~fg, fg]).unsqueeze(0).float()


def dice_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two boolean masks (MONAI); both empty counts as agreement (1), one empty as 0."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
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
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
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


def label_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    labels: Iterable[int] | None = None,
    nsd_tolerance_mm: float = 2.0,
) -> dict[int, dict[str, float]]:
    """Per-label :func:`binary_metrics`; by default over every non-zero label in ``gt``."""
    if labels is None:
        labels = [int(v) for v in np.unique(gt) if v != 0]
    return {int(v): binary_metrics(pred == v, gt == v, spacing_zyx, nsd_tolerance_mm) for v in labels}


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
