"""Volume I/O and resampling: geometry survives every read, resample and write; bad input is named."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medlsam_training.errors import (
    CorruptFileError,
    DimensionError,
    EmptyLabelError,
    GeometryMismatchError,
    NaNVoxelsError,
    UnsupportedFormatError,
    VolumeReadError,
    VolumeTooLargeError,
)
from medlsam_training.volumes import io as vio
from medlsam_training.volumes.io import read_image_label, read_label, read_volume, write_mask, write_volume
from medlsam_training.volumes.resample import resample_to_reference, resample_to_spacing
from medlsam_training.volumes.volume import Volume


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


@pytest.fixture()
def oblique_ct(ct_example: Path) -> Volume:
    """A real CT block re-placed on an oblique, anisotropic grid (origin exact in float32 for NIfTI)."""
    ct = read_volume(ct_example / "image.nii.gz")
    block = ct.array[40:72, 20:80, 30:100].astype(np.int16)
    direction = _rotation(np.array([0.3, -0.5, 0.8]), 0.4)
    return Volume(block, (0.7, 0.9, 2.5), (-123.375, 56.6875, -890.125), direction.ravel())


def _assert_geometry(a: Volume, b: Volume, tol: float = 1e-5) -> None:
    assert a.size == b.size
    np.testing.assert_allclose(a.spacing, b.spacing, atol=tol)
    np.testing.assert_allclose(a.origin, b.origin, atol=tol)
    np.testing.assert_allclose(a.direction, b.direction, atol=tol)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_oblique_anisotropic_roundtrip_read_resample_write(oblique_ct: Volume, tmp_path: Path, suffix: str) -> None:
    path = write_volume(oblique_ct, tmp_path / f"ct{suffix}")
    back = read_volume(path)
    _assert_geometry(back, oblique_ct)
    np.testing.assert_array_equal(back.array, oblique_ct.array)

    iso = resample_to_spacing(back, 1.5)
    np.testing.assert_allclose(iso.direction, oblique_ct.direction, atol=1e-12)
    restored = resample_to_reference(iso, back)
    _assert_geometry(restored, oblique_ct, tol=1e-12)
    assert restored.array.shape == oblique_ct.array.shape

    out = write_volume(restored, tmp_path / f"restored{suffix}")
    _assert_geometry(read_volume(out), oblique_ct)


def test_label_resample_to_finer_grid_and_back_is_lossless(ct_example: Path) -> None:
    image, label = read_image_label(ct_example / "image.nii.gz", ct_example / "label.nii.gz")
    fine = resample_to_spacing(label, tuple(s / 2 for s in label.spacing), is_label=True)
    back = resample_to_reference(fine, label, is_label=True)
    np.testing.assert_array_equal(back.array, label.array)
    assert back.array.dtype == label.array.dtype


def test_onehot_label_downsampling_keeps_thin_structures(ct_example: Path) -> None:
    _, label = read_image_label(ct_example / "image.nii.gz", ct_example / "label.nii.gz")
    coarse_nn = resample_to_spacing(label, 7.5, is_label=True, label_mode="nearest")
    coarse_oh = resample_to_spacing(label, 7.5, is_label=True, label_mode="onehot")
    assert coarse_nn.array.shape == coarse_oh.array.shape
    # Liver volume is preserved within 10 % by one-hot interpolation.
    ml = lambda v, lab: float((v.array == lab).sum() * np.prod(v.spacing))  # noqa: E731
    assert abs(ml(coarse_oh, 5) - ml(label, 5)) / ml(label, 5) < 0.10
    assert set(np.unique(coarse_oh.array)) <= set(np.unique(label.array))


def test_float64_label_file_is_read_as_integers(ct_example: Path) -> None:
    label = read_label(ct_example / "label.nii.gz")
    assert label.array.dtype == np.uint8
    assert {1, 5, 7} <= set(np.unique(label.array).tolist())


def test_dicom_series_keeps_lps_origin(ct_dicom: Path) -> None:
    ct = read_volume(ct_dicom / "dicom")
    assert ct.size == (512, 512, 20)
    np.testing.assert_allclose(ct.spacing, (0.9765625, 0.9765625, 2.0))
    np.testing.assert_allclose(ct.origin, (-249.51171875, -437.51171875, -804.5))
    assert ct.meta["modality"] == "CT"
    assert ct.array.min() == -1024  # rescale slope/intercept applied: HU, not raw stored values


def test_ras_nifti_label_aligns_to_lps_dicom_through_physical_space(ct_dicom: Path) -> None:
    ct, label = read_image_label(ct_dicom / "dicom", ct_dicom / "label.nii.gz")
    raw = read_label(ct_dicom / "label.nii.gz")
    assert not raw.geometry.is_close(ct.geometry)  # stored flipped in y
    np.testing.assert_array_equal(label.array, raw.array[:, ::-1, :])
    assert label.geometry.is_close(ct.geometry, tol=1e-9)
    hu = lambda value: float(ct.array[label.array == value].mean())  # noqa: E731
    assert 40 < hu(5) < 150  # liver (v2 map: 5)
    assert 40 < hu(1) < 150  # spleen
    assert hu(32) > 150  # vertebra T12 is bone
    assert hu(6) < 20  # stomach holds gas and fluid


def test_three_slice_dicom_series_reads(shared_data: Path) -> None:
    ct = read_volume(shared_data / "dicom_seg" / "ct-3slice")
    assert ct.size == (512, 512, 3)
    seg = read_label(shared_data / "dicom_seg" / "liver_spine_seg.nrrd")
    assert seg.size == ct.size


# --- bad input --------------------------------------------------------------------------------

def test_truncated_nifti_names_file(ct_example: Path, tmp_path: Path) -> None:
    data = (ct_example / "image.nii.gz").read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptFileError, match="truncated.nii.gz"):
        read_volume(bad)


def test_garbage_nrrd_is_corrupt(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.nrrd"
    bad.write_bytes(b"this is not a volume" * 10)
    with pytest.raises(CorruptFileError, match="garbage.nrrd"):
        read_volume(bad)


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedFormatError, match="notes.txt"):
        read_volume(tmp_path / "notes.txt")
    with pytest.raises(VolumeReadError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    with pytest.raises(VolumeReadError, match="no DICOM series"):
        read_volume(tmp_path)


def test_2d_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image(64, 64, sitk.sitkInt16), str(path))
    with pytest.raises(DimensionError, match="2D"):
        read_volume(path)


def test_4d_series_is_refused_but_single_frame_is_read(tmp_path: Path) -> None:
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 6), np.int16), isVector=False), str(path))
    with pytest.raises(DimensionError, match="4D series of 3 frames"):
        read_volume(path)
    single = tmp_path / "single.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((1, 4, 5, 6), np.int16), isVector=False), str(single))
    assert read_volume(single).size == (6, 5, 4)


def test_nan_voxels_are_refused(tmp_path: Path) -> None:
    arr = np.zeros((4, 5, 6), np.float32)
    arr[1, 2, 3] = np.nan
    path = write_volume(Volume(arr), tmp_path / "nan.nrrd")
    with pytest.raises(NaNVoxelsError, match="1 of 120 voxels"):
        read_volume(path)
    assert np.isnan(read_volume(path, allow_nan=True).array).sum() == 1


def test_huge_volume_is_refused_before_loading(ct_example: Path) -> None:
    with pytest.raises(VolumeTooLargeError, match="exceeds the limit"):
        read_volume(ct_example / "image.nii.gz", max_voxels=1_000_000)


def test_mismatched_label_geometry_is_refused(ct_example: Path, tmp_path: Path) -> None:
    label = read_label(ct_example / "label.nii.gz")
    shifted = label.with_array(label.array, origin=tuple(o + 1.3 for o in label.origin))
    path = write_volume(shifted, tmp_path / "shifted_label.nii.gz")
    with pytest.raises(GeometryMismatchError, match="shifted_label.nii.gz"):
        read_image_label(ct_example / "image.nii.gz", path)


def test_empty_label_is_refused(tmp_path: Path) -> None:
    path = write_volume(Volume(np.zeros((4, 5, 6), np.uint8)), tmp_path / "empty_label.nii.gz")
    with pytest.raises(EmptyLabelError, match="empty_label.nii.gz"):
        read_label(path)


def test_non_integer_label_is_refused(tmp_path: Path) -> None:
    path = write_volume(Volume(np.full((4, 5, 6), 0.5, np.float32)), tmp_path / "soft.nii.gz")
    with pytest.raises(VolumeReadError, match="non-integer"):
        read_label(path)


def test_interrupted_save_keeps_previous_mask(ct_example: Path, tmp_path: Path, monkeypatch) -> None:
    image = read_volume(ct_example / "image.nii.gz")
    target = tmp_path / "mask.nii.gz"
    first = np.zeros(image.array.shape, np.uint8)
    first[10:20, 10:20, 10:20] = 1
    write_mask(first, image, target)
    before = target.read_bytes()

    def crash(img, path, *args, **kwargs):
        Path(path).write_bytes(gzip.compress(b"partial"))
        raise RuntimeError("disk full")

    monkeypatch.setattr(vio.sitk, "WriteImage", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mask(np.ones_like(first), image, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]  # no temp file left behind


def test_written_mask_carries_image_geometry(ct_dicom: Path, tmp_path: Path) -> None:
    ct = read_volume(ct_dicom / "dicom")
    mask = np.zeros(ct.array.shape, np.uint8)
    mask[5, 100:200, 50:60] = 3
    out = read_label(write_mask(mask, ct, tmp_path / "m.nrrd"))
    _assert_geometry(out, ct, tol=1e-9)
    np.testing.assert_array_equal(out.array, mask)
    with pytest.raises(GeometryMismatchError, match="does not match"):
        write_mask(mask[:, :-1], ct, tmp_path / "bad.nrrd")
