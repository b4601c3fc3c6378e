"""Report drafting on the shared real volumes: completeness, phase gating, every labelled CT, CLI and DICOM SR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.report import build_report
from medlsam_training.report.draft import MARK
from medlsam_training.volumes.datasets import find_cases, read_label_names
from medlsam_training.volumes.io import read_label, read_volume

runner = CliRunner()


@pytest.fixture(scope="module")
def example_report(ct_example: Path):
    image = read_volume(ct_example / "image.nii.gz")
    label = read_label(ct_example / "label.nii.gz", image)
    return image, label, build_report(image, label, read_label_names(ct_example / "labels.json"))


def test_volumes_equal_simpleitk_label_statistics(example_report) -> None:
    _, label, report = example_report
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(label.to_sitk())
    for f in report.findings:
        m = f.measurement
        assert m.volume_ml * 1000 == pytest.approx(stats.GetPhysicalSize(m.value), rel=1e-9), m.name


def test_organs_at_the_scan_edge_are_incompletely_imaged(example_report) -> None:
    _, _, report = example_report
    by_name = {f.measurement.name: f for f in report.findings}
    # the scan starts at the lung bases: liver dome, spleen, stomach and aorta reach its top slice
    for name in ("liver", "spleen", "stomach", "aorta"):
        f = by_name[name]
        assert not f.measurement.complete and "craniocaudal" in f.measurement.edges, name
        assert "incompletely imaged" in f.sentence and "no size conclusion" in f.sentence
        assert all(j.verdict is None for j in f.judgements if j.measure == "volume_ml")
    for name in ("kidney_left", "kidney_right"):
        f = by_name[name]
        assert f.measurement.complete
        assert any(j.verdict is not None and j.measure == "max_diameter_mm" for j in f.judgements)


def test_unenhanced_example_gets_attenuation_statements(example_report) -> None:
    _, _, report = example_report
    assert report.phase.name == "unenhanced"
    liver = next(f for f in report.findings if f.measurement.name == "liver")
    assert "mean attenuation" in liver.sentence and "liver minus spleen" in liver.sentence


def test_contrast_scan_suppresses_attenuation_statements(shared_data: Path) -> None:
    case = shared_data / "ct" / "lidc_0001_chest"
    image = read_volume(case / "image.nii.gz")
    report = build_report(image, read_label(case / "label.nii.gz", image), read_label_names(case / "labels.json"))
    assert report.phase.name in ("arterial", "portal venous", "contrast-enhanced")
    for f in report.findings:
        assert "mean attenuation" not in f.sentence and "steatosis" not in f.sentence, f.sentence
    liver = next(f for f in report.findings if f.measurement.name == "liver")
    assert "attenuation not assessed" in liver.sentence


def _every_labelled_ct(shared_data: Path):
    cases = [c for c in find_cases(shared_data / "ct", require_labels=True)]
    cases += find_cases(shared_data / "ct_hn_openkbp", require_labels=True)
    return cases


@pytest.mark.slow
def test_a_report_for_every_labelled_ct(shared_data: Path) -> None:
    cases = _every_labelled_ct(shared_data)
    assert len(cases) >= 4 + 203
    for case in cases:
        image, label = case.load()
        report = build_report(image, label, case.label_names)
        text = report.to_markdown()
        assert report.modality == "CT" and report.findings and report.impression, case.name
        # every generated line of the draft carries the mark
        bullets = [ln for ln in text.splitlines() if ln.startswith("- ") or ln[:1].isdigit()]
        assert bullets and all(MARK in ln for ln in bullets), case.name
        assert all(np.isfinite(f.measurement.volume_ml) and f.measurement.volume_ml > 0 for f in report.findings)
        json.dumps(report.to_dict(), default=float)


def test_cli_report_writes_markdown_json_and_keeps_an_edited_copy(ct_example: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    args = ["report", str(ct_example / "image.nii.gz"), str(ct_example / "label.nii.gz"), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert {s["name"] for s in data["structures"]} >= {"liver", "spleen", "kidney_left", "aorta"}
    assert data["phase"]["name"] == "unenhanced" and "## Impression" in out.read_text()
    out.write_text("edited by the radiologist")
    assert runner.invoke(app, args).exit_code == 0
    kept = list((tmp_path / ".previous").glob("report-*.md"))
    assert len(kept) == 1 and kept[0].read_text() == "edited by the radiologist"


def test_cli_report_bad_inputs_exit_2_with_one_line(ct_example: Path, shared_data: Path, tmp_path: Path) -> None:
    other = shared_data / "ct" / "lidc_0001_chest" / "label.nii.gz"
    result = runner.invoke(app, ["report", str(ct_example / "image.nii.gz"), str(other), "--out",
                                 str(tmp_path / "r.md")])
    assert result.exit_code == 2 and "voxel centres that are not the image's" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    empty = tmp_path / "empty.nii.gz"
    label = read_volume(ct_example / "label.nii.gz")
    sitk.WriteImage(label.with_array(np.zeros(label.array.shape, np.uint8)).to_sitk(), str(empty))
    result = runner.invoke(app, ["report", str(ct_example / "image.nii.gz"), str(empty), "--out",
                                 str(tmp_path / "r.md")])
    assert result.exit_code == 2 and "no foreground voxel" in result.output
    result = runner.invoke(app, ["report", str(ct_example / "image.nii.gz"), str(ct_example / "label.nii.gz"),
                                 "--out", str(tmp_path / "r.md"), "--sex", "X"])
    assert result.exit_code == 2 and "--sex X" in result.output
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(64, 64, sitk.sitkInt16), str(flat))
    result = runner.invoke(app, ["report", str(flat), str(ct_example / "label.nii.gz"), "--out",
                                 str(tmp_path / "r.md")])
    assert result.exit_code == 2 and "2D image" in result.output and "flat.nii.gz" in result.output
    assert not (tmp_path / "r.md").exists()


def test_dicom_source_gets_a_tid1500_structured_report(shared_data: Path, tmp_path: Path) -> None:
    import highdicom as hd

    series = shared_data / "dicom_seg" / "ct-3slice"
    out = tmp_path / "seg.md"
    result = runner.invoke(app, ["report", str(series), str(shared_data / "dicom_seg" / "liver_spine_seg.nrrd"),
                                 "--names", str(shared_data / "dicom_seg" / "labels.json"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "sex M, age 60 years (DICOM header)" in out.read_text()
    sr = hd.sr.srread(out.with_suffix(".sr.dcm"))
    first = read_volume(series)
    assert sr.StudyInstanceUID and sr.CompletionFlag == "PARTIAL" and sr.VerificationFlag == "UNVERIFIED"
    assert sr.PatientSex == "M" and first.meta["series_uid"] in {
        s.SeriesInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence}
    data = json.loads(out.with_suffix(".json").read_text())
    volumes = {s["name"]: s["volume_ml"] for s in data["structures"]}
    found = {}
    for item in sr.ContentSequence:
        for sub in getattr(item, "ContentSequence", []):
            names = [c.TextValue for c in getattr(sub, "ContentSequence", []) if "TextValue" in c]
            vols = [float(c.MeasuredValueSequence[0].NumericValue) for c in getattr(sub, "ContentSequence", [])
                    if "MeasuredValueSequence" in c and c.ConceptNameCodeSequence[0].CodeValue == "118565006"]
            if names and vols:
                found[names[0].split(" (label")[0]] = vols[0]
    assert found.keys() == volumes.keys()
    assert all(found[k] == pytest.approx(volumes[k], rel=1e-6) for k in volumes)


def test_anonymised_series_without_uids_writes_the_draft_and_fails_the_sr(ct_dicom: Path, tmp_path: Path) -> None:
    out = tmp_path / "abd.md"
    result = runner.invoke(app, ["report", str(ct_dicom / "dicom"), str(ct_dicom / "label.nii.gz"), "--out", str(out)])
    assert result.exit_code == 1 and "DICOM SR not written" in result.output and "StudyInstanceUID" in result.output
    assert out.is_file() and out.with_suffix(".json").is_file() and not out.with_suffix(".sr.dcm").exists()
