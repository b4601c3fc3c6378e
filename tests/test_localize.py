"""Few-shot localization with the shipped MedLAM weights and the registration baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.boxes import Box3D
from training.extreme_points import extreme_points_from_mask
from training.io import read_image_label, read_volume
from training.localize import (LocalizationError, MedLAMLocalizer, RegistrationLocalizer, Template, box_from_points,
                               shipped_weights, sub_boxes_in_view)
from training.medlam.preprocess import ModalityError
from training.metrics import box_iou
from training.phantom import make_phantom
from training.volume import Volume


@pytest.fixture(scope="module")
def liver_template(ct_example: Path) -> Template:
    image, label = read_image_label(ct_example / "image.nii.gz", ct_example / "label.nii.gz")
    return Template(image, [extreme_points_from_mask("liver", 5, image, label)])


def test_shipped_checkpoint_is_small_and_tensor_only() -> None:
    import torch

    path = shipped_weights()
    assert path.stat().st_size < 20e6
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_medlam_localizes_liver_in_held_out_ct(liver_template: Template, ct_dicom: Path) -> None:
    query, label = read_image_label(ct_dicom / "dicom", ct_dicom / "label.nii.gz")
    (result,) = MedLAMLocalizer(device="cpu").localize(query, [liver_template])
    truth = Box3D.from_mask(label.array == 5)  # TotalSegmentator v2 map: 5 = liver
    # The shipped weights reach 0.507 with one MSS pass (docs/benchmarks.md, section 4): the query is a
    # 40 mm slab that cuts the liver, and most of the error is the box face at the slab edge (slice 6 vs 0).
    assert box_iou(result.box, truth) > 0.5, (result.box, truth)
    assert result.points_mm.shape == (6, 3)


def test_registration_localizes_phantom_organs() -> None:
    template, query = make_phantom(1), make_phantom(2)
    targets = [extreme_points_from_mask(n, v, template.image, template.label) for v, n in template.label_names.items()]
    results = RegistrationLocalizer().localize(query.image, [Template(template.image, targets)])
    ious = {r.target: box_iou(r.box, Box3D.from_mask(query.label.array == r.label)) for r in results}
    assert ious["liver"] > 0.6 and ious["spine"] > 0.6, ious
    assert np.mean(list(ious.values())) > 0.5, ious


def test_medlam_refuses_mr_and_tiny_volumes(liver_template: Template, shared_data: Path) -> None:
    mr = read_volume(shared_data / "mr" / "ts_example_mr" / "image.nii.gz")
    loc = MedLAMLocalizer(device="cpu")
    with pytest.raises(ModalityError, match="does not look like CT"):
        loc.localize(mr, [liver_template])
    tiny = Volume(np.full((5, 5, 5), -1000, np.int16) + np.eye(5, dtype=np.int16)[None] * 1040, spacing=(1, 1, 1))
    with pytest.raises(ModalityError, match="too small"):
        loc.localize(tiny, [liver_template])


def test_box_outside_query_is_an_error_not_a_silent_box(ct_example: Path) -> None:
    query = read_volume(ct_example / "image.nii.gz")
    far = query.index_to_physical([0, 0, 0]) + np.array([0, 0, 5000.0])
    points = np.tile(far, (6, 1)) + np.kron(np.eye(3), [[-10.0], [10.0]])
    with pytest.raises(LocalizationError, match="outside the volume"):
        box_from_points(points, query)
    # ... while an SPL sub-box beyond a partial scan is dropped, keeping the ones in view
    centre = query.index_to_physical((np.array(query.size) - 1) / 2)
    inside = np.tile(centre, (6, 1)) + np.kron(np.eye(3), [[-10.0], [10.0]])
    kept = sub_boxes_in_view([points, inside], query)
    assert kept == [box_from_points(inside, query)]
