"""Metrics agree with values computed by hand on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medlsam_training.errors import EmptyLabelError
from medlsam_training.metrics import added_path_length, binary_metrics, box_face_distance_mm, box_iou, label_metrics
from medlsam_training.volumes.boxes import Box3D


def _cube(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def test_dice_of_half_overlapping_cubes_is_one_half() -> None:
    gt = _cube((6, 6, 6), (1, 1, 1), (3, 3, 3))  # 8 voxels
    pred = _cube((6, 6, 6), (1, 1, 2), (3, 3, 4))  # 8 voxels, 4 shared
    assert binary_metrics(pred, gt)["dice"] == pytest.approx(2 * 4 / 16)


def test_hd95_of_single_voxels_uses_spacing() -> None:
    gt = _cube((5, 5, 9), (2, 2, 1), (3, 3, 2))
    pred = _cube((5, 5, 9), (2, 2, 4), (3, 3, 5))  # 3 voxels apart along x
    m = binary_metrics(pred, gt, spacing_zyx=(1.0, 1.0, 2.0))
    assert m["hd95"] == pytest.approx(6.0)
    assert m["dice"] == 0.0


def test_nsd_is_one_for_identical_and_zero_for_distant_masks() -> None:
    gt = _cube((12, 12, 30), (3, 3, 3), (8, 8, 8))
    assert binary_metrics(gt, gt)["nsd"] == pytest.approx(1.0)
    far = _cube((12, 12, 30), (3, 3, 20), (8, 8, 25))
    assert binary_metrics(far, gt, nsd_tolerance_mm=2.0)["nsd"] == pytest.approx(0.0)


def test_empty_masks_have_defined_scores() -> None:
    empty = np.zeros((4, 4, 4), bool)
    full = _cube((4, 4, 4), (1, 1, 1), (3, 3, 3))
    assert binary_metrics(empty, empty) == {"dice": 1.0, "hd95": 0.0, "nsd": 1.0}
    missed = binary_metrics(empty, full)
    assert missed["dice"] == 0.0 and missed["nsd"] == 0.0 and math.isnan(missed["hd95"])


def test_label_metrics_cover_every_ground_truth_label() -> None:
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    gt[4:6, 4:6, 4:6] = 2
    pred = gt.copy()
    pred[4:6, 4:6, 4:6] = 0
    scores = label_metrics(pred, gt, (1.0, 1.0, 1.0))
    assert scores[1]["dice"] == pytest.approx(1.0) and scores[2]["dice"] == 0.0


def test_box_iou_and_face_distance_by_hand() -> None:
    a = Box3D((0, 0, 0), (1, 1, 1))  # 8 voxels
    b = Box3D((1, 1, 1), (2, 2, 2))  # 8 voxels, 1 shared
    assert box_iou(a, b) == pytest.approx(1 / 15)
    assert box_iou(a, a) == pytest.approx(1.0)
    assert box_face_distance_mm(a, b, spacing=(1.0, 2.0, 3.0)) == pytest.approx(2.0)


def test_box_from_mask_and_bad_boxes() -> None:
    m = _cube((10, 12, 14), (2, 3, 4), (5, 7, 9))  # z 2..4, y 3..6, x 4..8
    box = Box3D.from_mask(m)
    assert box.lo == (4, 3, 2) and box.hi == (8, 6, 4) and box.shape == (5, 4, 3)
    assert m[box.slices].all()
    with pytest.raises(EmptyLabelError):
        Box3D.from_mask(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="empty box"):
        Box3D((5, 0, 0), (4, 1, 1))
    with pytest.raises(ValueError, match="outside"):
        Box3D((20, 20, 20), (30, 30, 30)).clip((10, 10, 10))


def test_added_path_length_on_shapes_with_known_answers() -> None:
    """A 20-pixel square on 4 slices, 2 mm pixels: its contour is about 4 x 40 mm a slice."""
    gt = np.zeros((4, 40, 40), bool)
    gt[:, 10:30, 10:30] = True
    spacing = (3.0, 2.0, 2.0)
    same = added_path_length(gt, gt, spacing, tolerance_mm=4.0)
    assert same["apl_mm"] == 0.0 and same["apl_share"] == 0.0
    assert abs(same["contour_mm"] - 4 * 4 * 40) < 4 * 8  # the 0.5 level cuts each corner a little
    nothing = added_path_length(np.zeros_like(gt), gt, spacing, 4.0)
    assert nothing["apl_mm"] == same["contour_mm"] and nothing["apl_share"] == 1.0
    # predicted on two of the four slices: half of the contour is left to draw
    half = gt.copy()
    half[2:] = False
    assert added_path_length(half, gt, spacing, 4.0)["apl_share"] == 0.5
    # inset by 3 pixels (6 mm) all round: every point of the true contour is 6 mm (corners 8.5 mm) from it
    inset = np.zeros_like(gt)
    inset[:, 13:27, 13:27] = True
    assert added_path_length(inset, gt, spacing, 4.0)["apl_share"] == 1.0  # beyond a 4 mm tolerance
    assert added_path_length(inset, gt, spacing, 9.0)["apl_share"] == 0.0  # within 9 mm
    # inset on the left side only: the left edge (a quarter of the contour) is redrawn
    left = gt.copy()
    left[:, :, 10:13] = False
    share = added_path_length(left, gt, spacing, 4.0)["apl_share"]
    assert 0.2 < share < 0.3, share
    # the pixel size counts: at 1 mm pixels the same 3-pixel inset is 3 mm (corners 4.2 mm), within 4.5 mm
    assert added_path_length(inset, gt, (3.0, 1.0, 1.0), 4.5)["apl_share"] == 0.0
    assert np.isnan(added_path_length(gt, np.zeros_like(gt), spacing, 4.0)["apl_share"])  # nothing true to draw
