"""Extreme points: derived from real masks, JSON round trip, and every documented refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medlsam_training.localization.extreme_points import (
    POINT_NAMES,
    ExtremePoints,
    ExtremePointsError,
    extreme_points_from_mask,
)
from medlsam_training.volumes.io import read_image_label


@pytest.fixture(scope="module")
def liver_points(ct_example: Path) -> ExtremePoints:
    image, label = read_image_label(ct_example / "image.nii.gz", ct_example / "label.nii.gz")
    return extreme_points_from_mask("liver", 5, image, label, n_slabs=3)


def test_points_from_mask_lie_on_the_organ_at_its_extremes(ct_example: Path, liver_points: ExtremePoints) -> None:
    image, label = read_image_label(ct_example / "image.nii.gz", ct_example / "label.nii.gz")
    liver = label.array == 5
    idx = np.round(liver_points.indices()).astype(int)
    for name, (i, j, k) in zip(POINT_NAMES, idx):
        assert liver[k, j, i], f"{name} point is not on the liver"
    # The superior point is the liver's highest voxel in patient coordinates (z grows superior).
    zz = np.nonzero(liver)[0]
    top_mm = image.index_to_physical([0, 0, zz.max()])[2]
    assert liver_points.points_mm[5, 2] == pytest.approx(top_mm)
    assert len(liver_points.slabs_mm) == 3


def test_json_round_trip(liver_points: ExtremePoints, tmp_path: Path) -> None:
    path = liver_points.save(tmp_path / "liver.json")
    back = ExtremePoints.load(path)
    np.testing.assert_allclose(back.points_mm, liver_points.points_mm, atol=1e-3)
    assert back.template_geometry.is_close(liver_points.template_geometry)
    assert back.target == "liver" and back.label == 5 and len(back.slabs_mm) == 3
    data = json.loads(path.read_text())
    assert [p["name"] for p in data["points"]] == list(POINT_NAMES)
    assert len(data["points"][0]["index"]) == 3


def _edit(liver_points: ExtremePoints, tmp_path: Path, change) -> Path:
    data = liver_points.to_json()
    change(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return path


def test_bad_point_files_are_refused(liver_points: ExtremePoints, tmp_path: Path) -> None:
    cases = {
        "six points": lambda d: d["points"].pop(),
        "outside the volume": lambda d: d["points"][5]["mm"].__setitem__(2, 5000.0),
        "swapped": lambda d: d["points"].__setitem__(slice(0, 2), [
            {**d["points"][1], "name": "right"}, {**d["points"][0], "name": "left"}]),
        "no geometry": lambda d: d.__setitem__("template", {"path": "x.nii.gz"}),
        "NaN": lambda d: d["points"][0]["mm"].__setitem__(0, float("nan")),
        "not a medlsam": lambda d: d.__setitem__("format", "something-else"),
    }
    for message, change in cases.items():
        with pytest.raises(ExtremePointsError, match=message):
            ExtremePoints.load(_edit(liver_points, tmp_path, change))


def test_clicked_points_outside_volume_are_refused(ct_example: Path) -> None:
    image, _ = read_image_label(ct_example / "image.nii.gz", ct_example / "label.nii.gz")
    clicks = np.array([[10, 50, 50], [100, 50, 50], [60, 10, 50], [60, 90, 50], [60, 50, 10], [60, 50, 500]])
    with pytest.raises(ExtremePointsError, match="outside"):
        ExtremePoints.from_index_points("liver", 5, image, clicks)
    with pytest.raises(ExtremePointsError, match="six points"):
        ExtremePoints.from_index_points("liver", 5, image, clicks[:5])
