"""3D Slicer .seg.nrrd and DICOM SEG round trips keep geometry, names and values exactly; napari reads and
writes .seg.nrrd; the CLI imports and exports both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import slicerio
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.interop.dicom_seg import export_dicom_seg, import_dicom_seg
from medlsam_training.interop.seg_nrrd import read_seg_nrrd, write_seg_nrrd
from medlsam_training.volumes.datasets import read_label_names
from medlsam_training.volumes.io import read_label, read_volume

runner = CliRunner()
SLICER_FILE = Path(slicerio.__file__).parent / "data" / "Segmentation.seg.nrrd"  # written by 3D Slicer itself


def test_a_slicer_written_segmentation_round_trips_exactly(tmp_path: Path) -> None:
    label, names, colours = read_seg_nrrd(SLICER_FILE)
    assert names[1] == "ribs" and len(names) == 7 and label.geometry.direction[0] == -1.0
    out = write_seg_nrrd(label, names, tmp_path / "copy.seg.nrrd", colours)
    again, names2, colours2 = read_seg_nrrd(out)
    assert np.array_equal(again.array, label.array) and again.geometry.is_close(label.geometry, tol=1e-9)
    assert names2 == names and colours2 == colours
    # and 3D Slicer's reader (slicerio) sees the same segments with the same values
    original = {s["name"]: s["labelValue"] for s in slicerio.read_segmentation(str(SLICER_FILE))["segments"]}
    ours = {s["name"]: s["labelValue"] for s in slicerio.read_segmentation(str(out))["segments"]}
    assert ours == original


def test_a_nifti_label_map_exported_to_seg_nrrd_overlays_its_ct(ct_example: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["seg", "export", str(ct_example / "label.nii.gz"), "--image",
                                 str(ct_example / "image.nii.gz"), "--out", str(tmp_path / "ts.seg.nrrd")])
    assert result.exit_code == 0, result.output
    image = read_volume(ct_example / "image.nii.gz")
    truth = read_label(ct_example / "label.nii.gz", image)
    label, names, _ = read_seg_nrrd(tmp_path / "ts.seg.nrrd")
    assert label.geometry.is_close(image.geometry, tol=1e-6) and np.array_equal(label.array, truth.array)
    expected = read_label_names(ct_example / "labels.json")
    assert all(names[v] == expected[v] for v in names)
    result = runner.invoke(app, ["seg", "import", str(tmp_path / "ts.seg.nrrd"), "--out", str(tmp_path / "back.nii.gz"),
                                 "--image", str(ct_example / "image.nii.gz")])
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_label(tmp_path / "back.nii.gz", image).array, truth.array)
    assert json.loads((tmp_path / "labels.json").read_text())["5"] == "liver"


def test_dicom_seg_multi_label_round_trip_on_its_series(shared_data: Path, tmp_path: Path) -> None:
    import highdicom as hd

    series = shared_data / "dicom_seg" / "ct-3slice"
    image = read_volume(series)
    label = read_label(shared_data / "dicom_seg" / "liver_spine_seg.nrrd", image)
    out = export_dicom_seg(label, {1: "liver", 2: "spine"}, series, tmp_path / "seg.dcm")
    seg = hd.seg.segread(out)
    assert seg.get_segment_description(1).segmented_property_type.value == "10200004"  # SNOMED CT liver
    assert seg.StudyInstanceUID == read_study_uid(series)
    back, names = import_dicom_seg(out, series)
    assert names == {1: "liver", 2: "spine"}
    assert np.array_equal(back.array, label.array) and back.geometry.is_close(image.geometry, tol=1e-9)


def read_study_uid(series: Path) -> str:
    import pydicom

    return pydicom.dcmread(next(p for p in sorted(series.iterdir()) if p.is_file()), stop_before_pixels=True)[
        "StudyInstanceUID"].value


def test_dicom_seg_refused_for_a_series_without_uids(ct_dicom: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["seg", "export", str(ct_dicom / "label.nii.gz"), "--image", str(ct_dicom / "dicom"),
                                 "--out", str(tmp_path / "x.dcm")])
    assert result.exit_code == 2 and "cannot reference this series" in result.output
    assert not (tmp_path / "x.dcm").exists()
    result = runner.invoke(app, ["seg", "export", str(ct_dicom / "label.nii.gz"), "--image", str(ct_dicom / "dicom"),
                                 "--out", str(tmp_path / "x.vtk")])
    assert result.exit_code == 2 and "write .seg.nrrd" in result.output


@pytest.mark.parametrize("suffix", [".seg.nrrd"])
def test_napari_reader_and_writer_speak_seg_nrrd(tmp_path: Path, suffix: str) -> None:
    from medlsam_napari._reader import get_reader
    from medlsam_napari._writer import write_labels

    reader = get_reader(str(SLICER_FILE))
    assert reader is not None
    (data, kwargs, kind), = reader(str(SLICER_FILE))
    assert kind == "labels" and kwargs["metadata"]["label_names"]["1"] == "ribs"
    out = str(tmp_path / f"edited{suffix}")
    write_labels(out, data, kwargs)
    label, names, _ = read_seg_nrrd(out)
    original, _, _ = read_seg_nrrd(SLICER_FILE)
    assert np.array_equal(label.array, original.array) and label.geometry.is_close(original.geometry, tol=1e-9)
    assert names[1] == "ribs"
