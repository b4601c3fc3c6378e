"""Few-shot localization with the shipped MedLAM weights and the registration baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medlsam_training.localization.extreme_points import extreme_points_from_mask
from medlsam_training.localization.localize import (
    LocalizationError,
    MedLAMLocalizer,
    RefinedRegistrationLocalizer,
    RegistrationLocalizer,
    Template,
    box_from_points,
    shipped_weights,
    sub_boxes_in_view,
)
from medlsam_training.medlam.preprocess import ModalityError
from medlsam_training.metrics import box_iou
from medlsam_training.volumes.boxes import Box3D
from medlsam_training.volumes.io import read_image_label, read_volume
from medlsam_training.volumes.phantom import make_phantom
from medlsam_training.volumes.volume import Volume


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


def test_an_organ_cut_by_a_slab_is_reported_partly_outside(liver_template: Template, ct_dicom: Path) -> None:
    """The query is a 40 mm DICOM slab through the upper abdomen: the liver continues beyond it."""
    query, label = read_image_label(ct_dicom / "dicom", ct_dicom / "label.nii.gz")
    (result,) = MedLAMLocalizer(device="cpu").localize(query, [liver_template])
    truth = Box3D.from_mask(label.array == 5)  # TotalSegmentator v2 map: 5 = liver
    assert result.status == "partly outside the scan"
    assert result.box is not None and box_iou(result.box, truth) > 0, (result.box, truth)
    assert result.points_mm.shape == (6, 3)
    # the template's liver reaches the top of its own scan: that face is unknown, not an organ boundary
    assert result.unknown_faces == ["superior"]


@pytest.mark.slow
def test_default_statuses_are_right_on_the_demo_and_on_a_real_slab(liver_template: Template,
                                                                    ct_dicom: Path) -> None:
    """A warning that always fires teaches users to ignore it: on the README demo's phantoms the liver lies inside
    the scan (found) while the spine runs through it (partly outside); on a real 40 mm slab the liver is cut."""
    from medlsam_training.localization.localize import make_localizer
    from medlsam_training.options import LocalizerName

    localizer = make_localizer(LocalizerName.ATLAS)
    template, query = make_phantom(0), make_phantom(1)
    targets = [extreme_points_from_mask(n, v, template.image, template.label) for v, n in ((1, "liver"), (6, "spine"))]
    masks = {"liver": template.label.array == 1, "spine": template.label.array == 6}
    results = {r.target: r for r in localizer.localize(query.image, [Template(template.image, targets, masks)])}
    assert results["liver"].status == "found", results["liver"].unknown_faces
    assert results["spine"].status == "partly outside the scan"
    slab, _ = read_image_label(ct_dicom / "dicom", ct_dicom / "label.nii.gz")
    (liver,) = localizer.localize(slab, [liver_template])
    assert liver.status == "partly outside the scan"


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


# --- real head-and-neck CT (OpenKBP): invariants every localizer must keep -------------------------

HN_ORGANS = {1: "brainstem", 2: "spinal_cord", 7: "mandible"}


def _hn_case(root: Path, patient: str) -> tuple[Volume, Volume]:
    return read_image_label(root / "imagesTr" / f"{patient}_0000.nii.gz", root / "labelsTr" / f"{patient}.nii.gz")


@pytest.fixture(scope="module")
def hn_template(openkbp: Path) -> Template:
    image, label = _hn_case(openkbp, "pt_1")  # a train-pats patient
    return Template(image, [extreme_points_from_mask(n, v, image, label) for v, n in HN_ORGANS.items()])


@pytest.fixture(scope="module")
def medlam() -> MedLAMLocalizer:
    return MedLAMLocalizer(device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["medlam", "registration", "medlam+reg"])
def test_a_volume_localized_in_itself_returns_its_own_points(method: str, hn_template: Template,
                                                             medlam: MedLAMLocalizer) -> None:
    loc = {"medlam": medlam, "registration": RegistrationLocalizer(),
           "medlam+reg": RefinedRegistrationLocalizer(medlam, RegistrationLocalizer())}[method]
    results = {r.target: r for r in loc.localize(hn_template.volume, [hn_template])}
    image = hn_template.volume
    for ep in hn_template.targets:
        r = results[ep.target]
        error_vox = np.abs(image.physical_to_index(r.points_mm) - image.physical_to_index(ep.points_mm))
        assert error_vox.max() <= 1.0, (method, ep.target, error_vox)
        # pt_1's spinal cord runs into the bottom of its scan: that is "partly outside", in itself too
        assert r.status == ("partly outside the scan" if r.unknown_faces else "found"), (ep.target, r.status)
        assert r.box == box_from_points(ep.points_mm, image)


@pytest.mark.slow
def test_a_reused_localizer_gives_the_boxes_of_fresh_ones(openkbp: Path, hn_template: Template,
                                                          medlam: MedLAMLocalizer) -> None:
    """Queries read one after another may reuse a freed volume's id(): no cached result may leak across."""
    patients = ["pt_2", "pt_3", "pt_2"]
    reused = {"registration": RegistrationLocalizer(), "medlam": medlam}
    boxes: dict[str, list] = {m: [] for m in reused}
    for p in patients:
        query = _hn_case(openkbp, p)[0]  # a new object each time; the previous one is freed
        for m, loc in reused.items():
            boxes[m].append([r.box for r in loc.localize(query, [hn_template])])
        del query
    for m in reused:
        fresh = [[r.box for r in (RegistrationLocalizer() if m == "registration" else MedLAMLocalizer(device="cpu"))
                  .localize(_hn_case(openkbp, p)[0], [hn_template])] for p in patients]
        assert boxes[m] == fresh, m
        assert boxes[m][0] == boxes[m][2], f"{m}: two identical runs gave different boxes"


def test_template_faces_cut_by_the_scan_edge_are_flagged_and_not_used() -> None:
    from medlsam_training.localization.template_fusion import edge_faces, fuse_points
    from medlsam_training.volumes.volume import Geometry

    geometry = Geometry((50, 50, 40), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    organ = np.array([[20, 50, 60], [60, 50, 60], [40, 30, 60], [40, 70, 60], [40, 50, 0], [40, 50, 90]], float)
    flags = edge_faces(organ, geometry)
    assert flags.tolist() == [False, False, False, False, True, False]  # inferior point on slice 0
    others = [organ + [0, 0, 0], organ + [1, 0, 0], organ - [1, 0, 0]]
    for o in others:
        o[4, 2] = -30.0  # the templates that see the whole organ put its inferior end 30 mm lower
    fused = fuse_points([organ, *others], [~flags, np.ones(6, bool), np.ones(6, bool), np.ones(6, bool)])
    assert fused.points_mm[4, 2] == -30.0 and fused.unknown_faces == []
    fused_all_cut = fuse_points([organ, organ], [~flags, ~flags])
    assert fused_all_cut.unknown_faces == ["inferior"]


def test_one_wild_template_is_outvoted() -> None:
    from medlsam_training.localization.template_fusion import fuse_points

    base = np.array([[20, 50, 60], [60, 50, 60], [40, 30, 60], [40, 70, 60], [40, 50, 30], [40, 50, 90]], float)
    estimates = [base + d for d in (0.0, 2.0, -2.0, 1.0)] + [base + 150.0]
    fused = fuse_points(estimates)
    assert np.abs(fused.points_mm - base - 0.5).max() <= 1.5
    assert fused.outliers == 6 and fused.spread_mm < 3.0


@pytest.mark.slow
def test_registration_survives_a_query_that_covers_less(openkbp: Path, hn_template: Template) -> None:
    """The query scan stops below the skull base (its top 40 % of slices removed): a centre-of-mass start
    would slide the template down by half the missing length; the profile search must not."""
    image, label = _hn_case(openkbp, "pt_3")
    lps_top = np.argmax([image.index_to_physical([0, 0, k])[2] for k in (0, image.size[2] - 1)])
    keep = slice(0, int(image.size[2] * 0.6)) if lps_top == 1 else slice(int(image.size[2] * 0.4), image.size[2])
    origin = image.index_to_physical([0, 0, keep.start])
    cut = Volume(image.array[keep], image.spacing, tuple(origin), image.direction)
    cut_label = cut.with_array(label.array[keep])
    results = {r.target: r for r in RegistrationLocalizer().localize(cut, [hn_template])}
    for value, organ in HN_ORGANS.items():
        if not (cut_label.array == value).any():
            continue
        truth = Box3D.from_mask(cut_label.array == value)
        r = results[organ]
        assert r.box is not None, organ
        assert box_iou(r.box, truth) >= 0.5 or r.status != "found", (organ, box_iou(r.box, truth), r.status)


def test_points_on_the_last_slice_are_in_view_and_one_voxel_beyond_is_clipped() -> None:
    from medlsam_training.localization.template_fusion import FOUND, NOT_FOUND, PARTLY_OUTSIDE, box_status
    from medlsam_training.volumes.volume import Geometry

    g = Geometry((10, 12, 8), (2.0, 2.0, 3.0), (5.0, -3.0, 100.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    corner_lo, corner_hi = g.index_to_physical([0, 0, 0]), g.index_to_physical([9, 11, 7])
    pts = np.tile((corner_lo + corner_hi) / 2, (6, 1))
    for a in range(3):
        pts[2 * a, a], pts[2 * a + 1, a] = corner_lo[a], corner_hi[a]
    box, status = box_status(pts, g)
    assert status == FOUND and box == Box3D((0, 0, 0), (9, 11, 7))  # the whole scan, nothing clipped
    beyond = pts.copy()
    beyond[5, 2] += 3.0  # one slice past the last one
    assert box_status(beyond, g) == (Box3D((0, 0, 0), (9, 11, 7)), PARTLY_OUTSIDE)
    assert box_status(pts + [0, 0, 1000.0], g) == (None, NOT_FOUND)


# --- the real held-out check: a validation patient, templates from other (train-pats) patients -------

HN_TARGET_IOU, HN_MIN_ORGAN_IOU = 0.65, 0.50  # issue targets (paper about 0.67 on these organs)
HN_TARGET_DICE = 0.70  # mean of brainstem, parotids and mandible, the pipeline's masks
HN_TARGET_ORGANS = {1: "brainstem", 2: "spinal_cord", 3: "parotid_right", 4: "parotid_left", 7: "mandible"}


def _first_train_patients_with(openkbp: Path, value: int, k: int) -> list[str]:
    import json

    cases = json.loads((openkbp / "manifest.json").read_text())["cases"]
    names = sorted((c["patient"] for c in cases if c["split"] == "train-pats" and c["recommended"]),
                   key=lambda n: int(n.split("_")[1]))
    out = []
    for name in names:
        if len(out) == k:
            break
        if np.count_nonzero(_hn_case(openkbp, name)[1].array == value) >= 200:
            out.append(name)
    return out


@pytest.fixture(scope="module")
def held_out(openkbp: Path) -> tuple[Volume, Volume, dict]:
    """pt_201 (the first recommended validation-pats patient) localized by the default localizer with the
    protocol's templates: the first five train-pats patients holding each organ, with their masks."""
    from medlsam_training.localization.localize import make_localizer
    from medlsam_training.options import LocalizerName

    templates: dict[str, Template] = {}
    for value, organ in HN_TARGET_ORGANS.items():
        for name in _first_train_patients_with(openkbp, value, 5):
            image, label = _hn_case(openkbp, name)
            tpl = templates.setdefault(name, Template(image, []))
            tpl.targets.append(extreme_points_from_mask(organ, value, tpl.volume, label))
            tpl.masks[organ] = label.array == value
    query, label = _hn_case(openkbp, "pt_201")
    localizer = make_localizer(LocalizerName.ATLAS)  # the default of the CLI and the annotator
    return query, label, {r.target: r for r in localizer.localize(query, list(templates.values()))}


@pytest.mark.slow
def test_default_pipeline_masks_meet_the_dice_target_on_a_validation_patient(held_out) -> None:
    _, label, results = held_out
    dice = {}
    for value, organ in HN_TARGET_ORGANS.items():
        truth = label.array == value
        assert results[organ].status == "found" and results[organ].mask is not None, organ
        dice[organ] = 2 * float((results[organ].mask & truth).sum()) / float(results[organ].mask.sum() + truth.sum())
    core = ("brainstem", "parotid_right", "parotid_left", "mandible")
    assert np.mean([dice[o] for o in core]) >= HN_TARGET_DICE, dice


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue target not reached yet: docs/benchmarks.md, section 1 (H&N protocol)")
def test_default_localizer_meets_the_box_target_on_a_validation_patient(held_out) -> None:
    _, label, results = held_out
    ious = {organ: box_iou(results[organ].box, Box3D.from_mask(label.array == value)) if results[organ].box else 0.0
            for value, organ in HN_TARGET_ORGANS.items()}
    assert np.mean(list(ious.values())) >= HN_TARGET_IOU and min(ious.values()) >= HN_MIN_ORGAN_IOU, ious
