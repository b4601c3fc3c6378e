"""DICOM RT structure sets: export a label map onto its series, import it back within contour rasterisation, open
one in napari beside its series, and refuse a structure set whose series is missing or does not match."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from scipy import ndimage
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.interop.rtstruct import RTSTRUCT_SOP_CLASS, export_rtstruct, import_rtstruct
from medlsam_training.volumes.datasets import read_label_names
from medlsam_training.volumes.io import read_label, read_volume

runner = CliRunner()


def with_new_uids(src: Path, dst: Path) -> Path:
    """A copy of a DICOM series with real, unique UIDs (the shared abdomen series was anonymised to blank ones)."""
    dst.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if not ds.get("SOPClassUID"):
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.save_as(dst / f.name)
    return dst


@pytest.fixture(scope="module")
def abdomen_series(ct_dicom: Path, tmp_path_factory) -> Path:
    return with_new_uids(ct_dicom / "dicom", tmp_path_factory.mktemp("abdomen") / "series")


def far_from_edge(truth: np.ndarray, got: np.ndarray) -> int:
    """Voxels that differ more than one in-plane voxel away from the truth's contour (rasterisation may flip the
    voxels on the contour, nothing else)."""
    ring = np.ones((1, 3, 3), bool)
    edge = truth ^ ndimage.binary_erosion(truth, structure=ring)
    return int(((truth ^ got) & ~ndimage.binary_dilation(edge, structure=ring)).sum())


def test_cli_round_trip_on_the_three_slice_series(shared_data: Path, tmp_path: Path) -> None:
    series = shared_data / "dicom_seg" / "ct-3slice"
    label_file = tmp_path / "label.nii.gz"
    assert runner.invoke(app, ["convert", str(shared_data / "dicom_seg" / "liver_spine_seg.nrrd"), str(label_file),
                               "--label"]).exit_code == 0
    (tmp_path / "labels.json").write_text(json.dumps({"1": "liver", "2": "spine"}))
    rs = tmp_path / "rs.dcm"
    r = runner.invoke(app, ["seg", "export", str(label_file), "--image", str(series), "--format", "rtstruct",
                            "--out", str(rs)])
    assert r.exit_code == 0, r.output
    ds = pydicom.dcmread(rs)
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == RTSTRUCT_SOP_CLASS
    assert [roi.ROIName for roi in ds.StructureSetROISequence] == ["liver", "spine"]
    first = pydicom.dcmread(next(p for p in sorted(series.iterdir())), stop_before_pixels=True)
    assert ds.StudyInstanceUID == first.StudyInstanceUID  # the same study: PACS files it with its CT

    out = tmp_path / "back" / "label.nii.gz"
    r = runner.invoke(app, ["seg", "import", str(rs), "--image", str(series), "--out", str(out)])
    assert r.exit_code == 0, r.output
    image, truth = read_volume(series), read_label(label_file)
    back = read_label(out)
    assert back.geometry.is_close(image.geometry, tol=1e-6)
    assert read_label_names(out.parent / "labels.json") == {1: "liver", 2: "spine"}
    for value in (1, 2):
        assert far_from_edge(truth.array == value, back.array == value) == 0, value


@pytest.mark.slow
def test_every_structure_of_a_real_series_round_trips(ct_dicom: Path, abdomen_series: Path, tmp_path: Path) -> None:
    """31 structures of a real abdominal CT (its label stored in RAS, the series in LPS): names kept, every voxel
    back within one voxel of its contour."""
    image = read_volume(abdomen_series)
    label = read_label(ct_dicom / "label.nii.gz", image)
    names = read_label_names(ct_dicom / "labels.json")
    export_rtstruct(label, names, abdomen_series, tmp_path / "rs.dcm")
    back, back_names = import_rtstruct(tmp_path / "rs.dcm", abdomen_series)
    assert back.geometry.is_close(image.geometry, tol=1e-6)
    values = [int(v) for v in np.unique(label.array) if v]
    assert sorted(back_names.values()) == sorted(names[v] for v in values)
    by_name = {n: v for v, n in back_names.items()}
    for v in values:
        truth, got = label.array == v, back.array == by_name[names[v]]
        assert far_from_edge(truth, got) == 0, names[v]
        assert 2 * (truth & got).sum() / (truth.sum() + got.sum()) > 0.95, names[v]


def test_a_structure_set_without_its_series_or_of_another_series_is_one_clear_error(
        shared_data: Path, abdomen_series: Path, ct_dicom: Path, tmp_path: Path) -> None:
    image = read_volume(abdomen_series)
    label = read_label(ct_dicom / "label.nii.gz", image)
    rs = export_rtstruct(label, {}, abdomen_series, tmp_path / "rs.dcm")
    out = tmp_path / "out.nii.gz"
    cases = [
        (["--image", str(shared_data / "dicom_seg" / "ct-3slice")], "references series"),  # another patient
        (["--image", str(ct_dicom / "dicom")], "anonymised without new UIDs"),  # a series it cannot reference
        (["--image", str(tmp_path / "nowhere")], "needs --image"),
        ([], "needs --image"),
    ]
    for extra, message in cases:
        r = runner.invoke(app, ["seg", "import", str(rs), "--out", str(out), *extra])
        assert r.exit_code == 2 and message in r.output, (extra, r.output)
        assert len(r.output.strip().splitlines()) == 1, r.output
        assert not out.exists()
    r = runner.invoke(app, ["seg", "export", str(ct_dicom / "label.nii.gz"), "--image", str(ct_dicom / "dicom"),
                            "--format", "rtstruct", "--out", str(tmp_path / "x.dcm")])
    assert r.exit_code == 2 and "cannot reference this series" in r.output and not (tmp_path / "x.dcm").exists()


@pytest.mark.slow
def test_napari_opens_a_structure_set_beside_its_series_as_labels(ct_dicom: Path, abdomen_series: Path) -> None:
    from medlsam_napari._reader import get_reader

    image = read_volume(abdomen_series)
    label = read_label(ct_dicom / "label.nii.gz", image)
    names = read_label_names(ct_dicom / "labels.json")
    rs = export_rtstruct(label, names, abdomen_series, abdomen_series.parent / "RS.plan.dcm")  # beside the series
    (data, kwargs, kind), = get_reader(str(rs))(str(rs))
    assert kind == "labels" and data.shape == image.array.shape
    assert set(kwargs["metadata"]["label_names"].values()) == {names[int(v)] for v in np.unique(label.array) if v}
    # a series folder holding its structure set opens as the image and the structures
    export_rtstruct(label, names, abdomen_series, abdomen_series / "RS.dcm")
    layers = get_reader(str(abdomen_series))(str(abdomen_series))
    assert [k for _, _, k in layers] == ["image", "labels"]
    np.testing.assert_allclose(layers[0][1]["affine"], layers[1][1]["affine"])  # one patient space
