"""The medlsam command line on real volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.volumes.io import read_volume

runner = CliRunner()


def test_info_prints_geometry_and_named_labels(ct_example: Path) -> None:
    result = runner.invoke(app, ["info", str(ct_example / "image.nii.gz"), "--label", str(ct_example / "label.nii.gz")])
    assert result.exit_code == 0, result.output
    assert "122 x 101 x 112" in result.output
    assert "liver" in result.output and "spleen" in result.output


def test_convert_dicom_series_to_nifti_keeps_geometry(ct_dicom: Path, tmp_path: Path) -> None:
    out = tmp_path / "ct.nii.gz"
    result = runner.invoke(app, ["convert", str(ct_dicom / "dicom"), str(out)])
    assert result.exit_code == 0, result.output
    src, dst = read_volume(ct_dicom / "dicom"), read_volume(out)
    assert dst.geometry.is_close(src.geometry, tol=1e-5)
    np.testing.assert_array_equal(dst.array, src.array)


def test_bad_input_exits_2_with_the_file_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.nrrd"
    bad.write_bytes(b"\x00" * 100)
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 2
    assert "broken.nrrd" in result.output


def test_phantom_command_writes_cases(tmp_path: Path) -> None:
    result = runner.invoke(app, ["phantom", str(tmp_path), "--n", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "phantom_000" / "image.nii.gz").is_file()
    assert (tmp_path / "phantom_000" / "labels.json").is_file()
