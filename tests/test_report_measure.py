"""Report measurements against analytic shapes and SimpleITK; reference judgements; structure names."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medlsam_training.errors import DimensionError, EmptyLabelError, GeometryMismatchError
from medlsam_training.report import Patient, build_report, load_references, measure_structures
from medlsam_training.report.anatomy import lookup
from medlsam_training.report.draft import parse_dicom_age
from medlsam_training.report.references import Reference, judge, judge_all
from medlsam_training.volumes.volume import Volume

SPACING = (0.7, 0.9, 2.5)          # x, y, z: anisotropic on purpose
DIRECTION = (-1, 0, 0, 0, -1, 0, 0, 0, 1)  # LPS-flipped in-plane, as many scanners store it


def _grid(shape_zyx, spacing=SPACING, direction=DIRECTION, origin=(10.0, -20.0, 30.0)):
    image = Volume(np.full(shape_zyx, -1000, np.int16), spacing, origin, direction)
    noise = np.random.default_rng(0).normal(0, 10, shape_zyx)  # a scanned field: no constant padding planes
    zyx = np.indices(shape_zyx).reshape(3, -1).T[:, ::-1]           # (x, y, z) index of every voxel
    phys = image.geometry.index_to_physical(zyx).reshape(*shape_zyx, 3)
    return image.with_array((image.array + noise).astype(np.int16)), phys


def _ellipsoid(phys, centre, semi):
    d = (phys - np.asarray(centre)) / np.asarray(semi)
    return (d ** 2).sum(-1) <= 1


def test_ellipsoid_measures_match_analytic_values_and_simpleitk() -> None:
    image, phys = _grid((24, 80, 140))
    centre = image.geometry.index_to_physical([70.3, 40.2, 11.6])
    a, b, c = 40.0, 25.0, 15.0                                       # semi-axes along x, y, z in mm
    mask = _ellipsoid(phys, centre, (a, b, c))
    label = image.with_array(mask.astype(np.uint8))
    image = image.with_array(np.where(mask, 60, image.array).astype(np.int16))
    (m,) = measure_structures(image, label, {1: "liver"})

    assert m.volume_ml == pytest.approx(4 / 3 * np.pi * a * b * c / 1000, rel=0.03)
    assert m.max_diameter_mm == pytest.approx(2 * a, abs=1.0)       # finest spacing along x: 0.7 mm
    assert m.axes_mm == pytest.approx((2 * a, 2 * b, 2 * c), rel=0.04)
    assert m.cc_extent_mm == pytest.approx(2 * c, abs=SPACING[2])
    assert m.complete and m.components == 1
    assert m.intensity_mean == 60 and m.intensity_sd == 0 and m.intensity_eroded
    assert np.allclose(m.centroid_mm, centre, atol=0.3)

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.ComputeFeretDiameterOn()
    stats.Execute(label.to_sitk())
    assert m.volume_ml * 1000 == pytest.approx(stats.GetPhysicalSize(1), rel=1e-9)
    # ITK's Feret runs between boundary voxel centres; ours between surface points half a voxel further out
    assert stats.GetFeretDiameter(1) - 1e-6 <= m.max_diameter_mm <= stats.GetFeretDiameter(1) + max(SPACING)
    moments = sorted(stats.GetPrincipalMoments(1), reverse=True)
    assert m.axes_mm == pytest.approx(tuple(2 * np.sqrt(5 * np.array(moments))), rel=1e-3)


def test_tube_diameters_split_at_t12() -> None:
    image, phys = _grid((40, 90, 90), spacing=(0.8, 0.8, 3.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    axis = image.geometry.index_to_physical([45.0, 45.0, 0.0])
    r = np.hypot(phys[..., 0] - axis[0], phys[..., 1] - axis[1])
    z = phys[..., 2] - axis[2]
    labels = np.zeros(image.array.shape, np.uint8)
    labels[(z < 60) & (r <= 12)] = 1                                 # abdominal aorta: 24 mm
    labels[(z >= 60) & (r <= 20)] = 1                                # thoracic aorta: 40 mm
    labels[(np.abs(z - 60) < 10) & (np.abs(phys[..., 0] - axis[0]) < 8) & (phys[..., 1] - axis[1] > 25)] = 2
    image = image.with_array(np.where(labels == 1, 45, image.array).astype(np.int16))
    ms = measure_structures(image, image.with_array(labels), {1: "aorta", 2: "vertebrae_T12"})
    aorta = next(m for m in ms if m.name == "aorta")
    assert aorta.abdominal_diameter_mm == pytest.approx(24, abs=1.0)
    assert aorta.thoracic_diameter_mm == pytest.approx(40, abs=1.0)
    assert aorta.tube_diameter_mm == pytest.approx(40, abs=1.0)


def test_lesions_counted_and_measured_on_their_largest_axial_section() -> None:
    image, phys = _grid((30, 100, 140))
    c1 = image.geometry.index_to_physical([50.0, 50.0, 15.0])
    c2 = image.geometry.index_to_physical([110.0, 30.0, 15.0])
    t = np.deg2rad(30)
    d = phys - c1
    u = d[..., 0] * np.cos(t) + d[..., 1] * np.sin(t)
    v = -d[..., 0] * np.sin(t) + d[..., 1] * np.cos(t)
    labels = ((u / 15) ** 2 + (v / 8) ** 2 + (d[..., 2] / 10) ** 2 <= 1).astype(np.uint8)  # 30 x 16 mm, rotated
    labels[np.linalg.norm(phys - c2, axis=-1) <= 5] = 1
    (m,) = measure_structures(image, image.with_array(labels), {1: "liver metastases"})
    assert m.anatomy.kind == "lesion" and len(m.lesions) == 2
    big, small = m.lesions
    assert big.long_axis_mm == pytest.approx(30, abs=1.0)
    assert big.short_axis_mm == pytest.approx(16, abs=1.0)
    assert big.slice_index == 15
    assert small.long_axis_mm == pytest.approx(10, abs=1.0)


def test_structure_at_the_scan_border_is_incompletely_imaged_and_not_judged_on_size() -> None:
    image, phys = _grid((24, 80, 140))
    centre = image.geometry.index_to_physical([5.0, 40.0, 12.0])     # cut by the x border
    mask = _ellipsoid(phys, centre, (30, 20, 12))
    image = image.with_array(np.where(mask, 55, image.array).astype(np.int16))
    report = build_report(image, image.with_array(mask.astype(np.uint8)), {1: "spleen"}, modality="CT")
    (f,) = report.findings
    assert not f.measurement.complete and f.measurement.edges == ["in-plane"]
    assert "incompletely imaged" in f.sentence
    assert all(j.verdict is None for j in f.judgements if j.measure == "volume_ml")


def _liver_and_vessel(vessel_hu: int, liver_hu: int) -> tuple[Volume, Volume]:
    image, phys = _grid((24, 80, 140))
    liver = _ellipsoid(phys, image.geometry.index_to_physical([60.0, 40.0, 12.0]), (30, 20, 15))
    aorta = _ellipsoid(phys, image.geometry.index_to_physical([120.0, 40.0, 12.0]), (8, 8, 20))
    labels = liver.astype(np.uint8) + 2 * aorta
    return (image.with_array(np.select([liver, aorta], [liver_hu, vessel_hu], image.array).astype(np.int16)),
            image.with_array(labels.astype(np.uint8)))


def test_attenuation_statements_only_on_unenhanced_ct() -> None:
    image, labels = _liver_and_vessel(vessel_hu=45, liver_hu=30)
    plain = build_report(image, labels, {1: "liver", 2: "aorta"})
    assert plain.phase.name == "unenhanced"
    liver = next(f for f in plain.findings if f.measurement.name == "liver")
    assert "mean attenuation 30" in liver.sentence and "steatosis" in liver.sentence
    assert any("steatosis" in line for line in plain.impression)

    image, labels = _liver_and_vessel(vessel_hu=320, liver_hu=30)
    contrast = build_report(image, labels, {1: "liver", 2: "aorta"})
    assert contrast.phase.name in ("arterial", "contrast-enhanced", "portal venous")
    liver = next(f for f in contrast.findings if f.measurement.name == "liver")
    assert "HU" not in liver.sentence and "attenuation not assessed" in liver.sentence
    assert not any("steatosis" in line for line in contrast.impression)


def test_sex_specific_reference_for_the_pulmonary_artery() -> None:
    image, phys = _grid((30, 100, 100), spacing=(0.8, 0.8, 2.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    axis = image.geometry.index_to_physical([50.0, 50.0, 0.0])
    labels = (np.hypot(phys[..., 0] - axis[0], phys[..., 1] - axis[1]) <= 15.5).astype(np.uint8)  # 31 mm
    labels[:2] = labels[-2:] = 0
    image = image.with_array(np.where(labels, 300, image.array).astype(np.int16))
    verdicts = {}
    for sex in ("M", "F", None):
        r = build_report(image, image.with_array(labels), {1: "pulmonary_artery"}, patient=Patient(sex=sex),
                         modality="CT")
        (j,) = [j for j in r.findings[0].judgements if j.measure == "tube_diameter_mm"]
        verdicts[sex] = j
    assert verdicts["M"].verdict.borderline and not verdicts["M"].verdict.abnormal
    assert verdicts["F"].verdict.abnormal and "dilated" in verdicts["F"].verdict.word
    assert verdicts[None].verdict.borderline and "sex unknown" in verdicts[None].note


def test_unknown_names_are_measured_without_reference_and_absent_names_listed() -> None:
    image, labels = _liver_and_vessel(45, 60)
    r = build_report(image, labels, {1: "zorgon gland", 2: "aorta", 3: "gallbladder"})
    other = next(f for f in r.findings if f.measurement.name == "zorgon gland")
    assert other.measurement.anatomy.section == "Other structures" and other.measurement.volume_ml > 0
    assert all(j.verdict is None for j in other.judgements)
    assert r.absent == ["gallbladder"] and "gallbladder" in r.to_markdown()


def test_bad_inputs_are_refused_with_the_problem_named() -> None:
    image, labels = _liver_and_vessel(45, 60)
    with pytest.raises(EmptyLabelError, match="no foreground"):
        measure_structures(image, labels.with_array(np.zeros_like(labels.array)))
    shifted = Volume(labels.array, labels.spacing, (0.0, 0.0, 0.0), labels.direction)
    with pytest.raises(GeometryMismatchError, match="not on the grid"):
        measure_structures(image, shifted)
    flat = Volume(np.zeros((1, 20, 20), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), DIRECTION)
    with pytest.raises(DimensionError, match="2D"):
        measure_structures(flat, flat.with_array(np.ones((1, 20, 20), np.uint8)))


def _row(low=None, high=None, margin=0.1) -> Reference:
    return Reference("x", "volume_ml", low, high, "small", "enlarged", None, None, margin, "", "s", "cite")


def test_judgement_borderline_band_and_most_severe_row() -> None:
    row = _row(100, 200)
    assert judge(150, row).word == "normal"
    assert judge(205, row).word.startswith("borderline") and not judge(205, row).abnormal
    assert judge(225, row).abnormal and judge(225, row).word == "enlarged"
    assert judge(85, row).abnormal and judge(85, row).word == "small"
    hu = _row(low=48, margin=0.0)
    assert judge(47.9, hu).abnormal and judge(48.1, hu).word == "normal"
    ectatic = Reference("aorta", "d", None, 20, "", "ectatic", None, None, 0.1, "", "s", "c")
    aneurysm = Reference("aorta", "d", None, 30, "", "aneurysmal", None, None, 0.1, "", "s", "c")
    assert judge_all(25, [ectatic, aneurysm]).word == "ectatic"
    assert judge_all(36, [ectatic, aneurysm]).word == "aneurysmal"


def test_bundled_reference_table_has_a_citation_per_row() -> None:
    rows = load_references()
    assert {r.structure for r in rows} >= {"liver", "spleen", "kidney_left", "kidney_right", "pancreas", "aorta",
                                           "pulmonary_artery"}
    assert all(r.citation and r.population for r in rows)


@pytest.mark.parametrize("name, key", [
    ("Kidney (Right)", "kidney_right"), ("kidney_r", "kidney_right"), ("Left_Kidney", "kidney_left"),
    ("Parotid_L", "parotid_left"), ("Brain_Stem", "brainstem"), ("SpinalCord", "spinal_cord"),
    ("portal_vein_and_splenic_vein", "portal_vein"), ("gall_bladder", "gallbladder"), ("IVC", "inferior_vena_cava"),
])
def test_structure_names_and_synonyms(name: str, key: str) -> None:
    assert lookup(name).key == key


def test_name_families_and_lesions() -> None:
    assert lookup("vertebrae_T12").section == "Bones" and lookup("rib_left_3").display == "Ribs"
    assert lookup("GTV primary").kind == "lesion" and lookup("kidney_cyst_left").kind == "lesion"
    assert lookup("something else").section == "Other structures"


def test_dicom_age_strings() -> None:
    assert parse_dicom_age("060Y") == 60 and parse_dicom_age("006M") == 0.5 and parse_dicom_age("") is None
