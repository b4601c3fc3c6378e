"""Reading and writing volumes (NIfTI, NRRD, MHA, DICOM series) without losing their geometry.

SimpleITK does the reading; nibabel takes over for NIfTI files whose stored affine is slightly
non-orthonormal, which ITK rejects outright.  All errors name the file and the problem.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import (
    CorruptFileError,
    DimensionError,
    EmptyLabelError,
    GeometryMismatchError,
    NaNVoxelsError,
    UnsupportedFormatError,
    VolumeReadError,
    VolumeTooLargeError,
)
from .atomic import atomic_path, compound_suffix
from .volume import Volume

log = logging.getLogger(__name__)

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
#: Default ceiling on voxels per volume (about 512 x 512 x 2300): beyond it a read is refused
#: before any pixel is loaded, rather than exhausting memory.
MAX_VOXELS = 600_000_000
_DICOM_TAGS = {"modality": "0008|0060", "series_description": "0008|103e", "series_uid": "0020|000e",
               "patient_sex": "0010|0040", "patient_age": "0010|1010", "contrast_agent": "0018|0010"}


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"  # the DICOM file preamble
    except OSError:
        return False


def dicom_series_ids(folder: str | os.PathLike[str]) -> tuple[str, ...]:
    """The DICOM series UIDs of a folder's files; none, without asking GDCM, when no file looks like DICOM
    (GDCM warns "No Series were found" on every folder of NIfTI files otherwise)."""
    folder = Path(folder)
    try:
        files = [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return ()
    if not any(_looks_like_dicom(p) for p in files):
        return ()
    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def is_volume_path(path: str | os.PathLike[str]) -> bool:
    """True for a file with a volume extension or a folder that holds DICOM files."""
    path = Path(path)
    if path.is_dir():
        return bool(dicom_series_ids(path))
    return compound_suffix(path).lower() in READ_SUFFIXES


def read_volume(
    path: str | os.PathLike[str],
    *,
    max_voxels: int = MAX_VOXELS,
    allow_nan: bool = False,
    series_uid: str | None = None,
) -> Volume:
    """Read a 3D volume from a file or a DICOM series folder.

    Raises :class:`VolumeReadError` (missing, unknown format, corrupt), :class:`DimensionError`
    (2D, 4D, multi-component), :class:`VolumeTooLargeError`, and :class:`NaNVoxelsError` unless
    ``allow_nan``.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file or folder")
    if path.is_dir():
        volume = _read_dicom_series(path, max_voxels=max_voxels, series_uid=series_uid)
    else:
        suffix = compound_suffix(path).lower()
        if suffix not in READ_SUFFIXES:
            raise UnsupportedFormatError(
                f"{path}: unknown volume format '{suffix or path.name}'; "
                f"readable are {', '.join(READ_SUFFIXES)} and DICOM series folders"
            )
        volume = _read_file(path, max_voxels=max_voxels, allow_nan=allow_nan)
    if not allow_nan:
        volume.require_finite()
    return volume


def _check_header(path: Path, dimension: int, size: tuple[int, ...], components: int, max_voxels: int) -> None:
    if components != 1:
        raise DimensionError(f"{path}: has {components} components per voxel (colour or vector image); "
                             "a scalar 3D volume is needed")
    if dimension == 2 or (dimension == 3 and min(size) == 1):
        raise DimensionError(f"{path}: is a 2D image of size {size[:2]}; a 3D volume is needed")
    if dimension == 4 and size[3] != 1:
        raise DimensionError(f"{path}: is a 4D series of {size[3]} frames of {size[:3]}; "
                             "a single 3D volume is needed (extract one frame first)")
    if dimension not in (3, 4):
        raise DimensionError(f"{path}: has {dimension} dimensions; a 3D volume is needed")
    voxels = int(np.prod(size[:3], dtype=np.int64))
    if voxels > max_voxels:
        raise VolumeTooLargeError(
            f"{path}: {size[0]}x{size[1]}x{size[2]} = {voxels / 1e6:.0f} M voxels exceeds the limit of "
            f"{max_voxels / 1e6:.0f} M; crop or downsample it first, or raise max_voxels"
        )


def _checked_reader(path: Path, max_voxels: int, complete: bool = True) -> sitk.ImageFileReader | None:
    """A reader of ``path`` whose header (and with ``complete``, a NIfTI's length) was checked, no voxel read; None
    for a NIfTI that ITK refuses as non-orthonormal (nibabel reads those)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        if compound_suffix(path).lower() in (".nii", ".nii.gz") and "orthonormal" in str(exc):
            return None
        raise CorruptFileError(f"{path}: not a readable volume ({_first_line(exc)})") from exc
    _check_header(path, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents(), max_voxels)
    if complete and compound_suffix(path).lower() in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    return reader


def probe_volume(path: str | os.PathLike[str], max_voxels: int = MAX_VOXELS) -> None:
    """Raise what ``read_volume`` would about a file's header, without reading its voxels (a project lists a
    corrupt volume as failed, with the reason, before anyone opens it).  Header only: checking a NIfTI's length
    decompresses all of it, too slow for every pending volume at every open; a file cut short after its header is
    refused when it is read.  Folders pass."""
    path = Path(path)
    if not path.is_dir():
        _checked_reader(path, max_voxels, complete=False)


def _read_file(path: Path, max_voxels: int, allow_nan: bool = False) -> Volume:
    reader = _checked_reader(path, max_voxels)
    if reader is None:
        return _read_nifti_nibabel(path, max_voxels)
    if compound_suffix(path).lower() in (".nii", ".nii.gz") and not allow_nan:
        _check_nifti_finite(path)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise CorruptFileError(f"{path}: the file is truncated or corrupt ({_first_line(exc)})") from exc
    if image.GetDimension() == 4:
        image = sitk.Extract(image, list(image.GetSize()[:3]) + [0], [0, 0, 0, 0])
    return Volume.from_sitk(image, path=path)


def _check_nifti_complete(path: Path) -> None:
    """ITK zero-fills a truncated NIfTI without a word; nibabel's header tells how many bytes must follow."""
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        needed = int(header.get_data_offset()) + int(np.prod(header.get_data_shape(), dtype=np.int64)) * \
            header.get_data_dtype().itemsize
        if path.suffix.lower() == ".gz":
            available = 0
            with gzip.open(path, "rb") as stream:  # decompress to the end: a cut stream raises EOFError
                while chunk := stream.read(1 << 22):
                    available += len(chunk)
        else:
            available = path.stat().st_size
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise CorruptFileError(f"{path}: the file is truncated or corrupt ({exc})") from exc
    if available < needed:
        raise CorruptFileError(f"{path}: the file is truncated ({available} of {needed} bytes)")


def _check_nifti_finite(path: Path) -> None:
    """ITK's NIfTI reader turns NaN and inf voxels into 0 before anyone can see them: look at the raw data."""
    import nibabel as nib

    img = nib.load(str(path))
    if not np.issubdtype(img.header.get_data_dtype(), np.floating):
        return
    bad = int(np.count_nonzero(~np.isfinite(np.asanyarray(img.dataobj))))
    if bad:
        raise NaNVoxelsError(f"{path}: {bad} of {int(np.prod(img.shape))} voxels are NaN or infinite; "
                             "fix or mask them before processing")


def _read_nifti_nibabel(path: Path, max_voxels: int) -> Volume:
    """NIfTI whose affine ITK calls non-orthonormal: accept small numerical shear, refuse real shear."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = img.shape
        _check_header(path, len(shape), tuple(shape) + (1,) * (3 - len(shape)), 1, max_voxels)
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise CorruptFileError(f"{path}: the file is truncated or corrupt ({exc})") from exc
    if data.ndim == 4:
        data = data[..., 0]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine  # NIfTI is RAS, ITK is LPS
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    u, _, vt = np.linalg.svd(lps[:3, :3] / spacing)
    direction = u @ vt
    shear = float(np.abs(direction - lps[:3, :3] / spacing).max())
    if shear > 1e-2:
        raise CorruptFileError(f"{path}: its affine is sheared by {shear:.3f}; a sheared grid cannot be "
                               "represented without resampling")
    log.warning("%s: orthonormalised a slightly non-orthonormal NIfTI affine (deviation %.2e)", path, shear)
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), tuple(spacing), tuple(lps[:3, 3]),
                  tuple(direction.ravel()), path=path)


def _read_dicom_series(folder: Path, max_voxels: int, series_uid: str | None) -> Volume:
    reader = sitk.ImageSeriesReader()
    ids = dicom_series_ids(folder)
    if not ids:
        raise VolumeReadError(f"{folder}: the folder holds no DICOM series")
    if series_uid is None:
        # Several series in one folder: take the one with the most slices, and say so.
        counts = {uid: len(reader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in ids}
        series_uid = max(counts, key=counts.get)
        if len(ids) > 1:
            log.warning("%s: %d DICOM series found, reading %s (%d slices)", folder, len(ids), series_uid,
                        counts[series_uid])
    elif series_uid not in ids:
        raise VolumeReadError(f"{folder}: no DICOM series {series_uid} (found {', '.join(ids)})")
    files = reader.GetGDCMSeriesFileNames(str(folder), series_uid)
    if len(files) < 2:
        raise DimensionError(f"{folder}: the DICOM series has a single slice; a 3D volume is needed")
    _check_slice_positions(folder, files)
    first = sitk.ImageFileReader()
    first.SetFileName(files[0])
    try:
        first.ReadImageInformation()
    except RuntimeError as exc:
        raise CorruptFileError(f"{files[0]}: not a readable DICOM file ({_first_line(exc)})") from exc
    size = tuple(first.GetSize()[:2]) + (len(files),)
    _check_header(folder, 3, size, first.GetNumberOfComponents(), max_voxels)
    meta: dict[str, Any] = {"dicom_files": len(files)}
    for key, tag in _DICOM_TAGS.items():
        if first.HasMetaDataKey(tag):
            value = first.GetMetaData(tag).strip()
            if value:
                meta[key] = value
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise CorruptFileError(f"{folder}: the DICOM series could not be read ({_first_line(exc)})") from exc
    return Volume.from_sitk(image, path=folder, meta=meta)


#: slice gaps may differ from their median by this fraction before the series counts as uneven
SLICE_GAP_TOLERANCE = 0.1


def _check_slice_positions(folder: Path, files: tuple[str, ...] | list[str]) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing slice, mixed thicknesses, duplicates).

    ITK stacks them on a uniform grid with only a warning on stderr, which misplaces every slice after a gap.
    """
    positions, normal = [], None
    for name in files:
        r = sitk.ImageFileReader()
        r.SetFileName(name)
        try:
            r.ReadImageInformation()
            ipp = [float(v) for v in r.GetMetaData("0020|0032").split("\\")]
            if normal is None:
                iop = [float(v) for v in r.GetMetaData("0020|0037").split("\\")]
                normal = np.cross(iop[:3], iop[3:])
        except (RuntimeError, ValueError):
            return  # no usable position tags (secondary capture, some MR): nothing to check against
        positions.append(float(np.dot(ipp, normal)))
    gaps = np.diff(np.sort(positions))
    median = float(np.median(gaps))
    if median <= 0 or np.any(gaps < 1e-3):
        raise CorruptFileError(f"{folder}: the DICOM series has slices at the same position (duplicates or "
                               "several series mixed); keep one series per folder")
    bad = np.abs(gaps - median) > SLICE_GAP_TOLERANCE * median
    if bad.any():
        i = int(np.argmax(np.abs(gaps - median)))
        raise CorruptFileError(f"{folder}: the DICOM slices are unevenly spaced ({gaps.min():.2f} to "
                               f"{gaps.max():.2f} mm, median {median:.2f} mm; largest gap after slice {i + 1} of "
                               f"{len(files)}): a slice "
                               "is missing or thicknesses are mixed; a uniform grid would misplace the slices")


def read_label(
    path: str | os.PathLike[str], reference: Volume | None = None, *, allow_empty: bool = False
) -> Volume:
    """Read a label map as integers; with ``reference``, put it on the reference's voxel grid.

    Float-stored labels (common in real files) are accepted when every value is integral.
    """
    label = read_volume(path)
    label = as_label(label)
    if not allow_empty and not np.any(label.array):
        raise EmptyLabelError(f"{label.name}: the label map has no foreground voxel")
    if reference is not None:
        label = align_label_to_image(label, reference)
    return label


def as_label(volume: Volume) -> Volume:
    """Cast a volume to the smallest integer dtype that holds its labels; refuse non-integral values."""
    arr = volume.array
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise VolumeReadError(f"{volume.name}: label map holds non-integer values; is it an image?")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0:
        raise VolumeReadError(f"{volume.name}: label map holds negative value {lo}")
    dtype = np.uint8 if hi <= 255 else np.uint16 if hi <= 65535 else np.uint32
    return volume.with_array(arr.astype(dtype, copy=False))


def align_label_to_image(label: Volume, image: Volume, tol: float = 1e-3) -> Volume:
    """Return ``label`` on exactly ``image``'s grid.

    Identical grids (up to ``tol`` mm) pass through.  A grid whose voxel centres are the image's, in another
    axis order or orientation (e.g. a RAS-stored NIfTI label over an LPS DICOM series), larger than the image or a
    sub-grid of it (a crop: the rest is background), is re-indexed exactly.  Anything needing interpolation, or a
    grid with no voxel in the image, raises :class:`GeometryMismatchError`.
    """
    ig, lg = image.geometry, label.geometry
    if ig.is_close(lg, tol=tol):
        return image.with_array(label.array, path=label.path, meta=dict(label.meta))
    # label index = A @ image index + t must be a signed permutation plus an integer shift.
    inv_l = np.linalg.inv(lg.index_to_physical_matrix)
    a = inv_l @ ig.index_to_physical_matrix
    t = inv_l @ (np.asarray(ig.origin) - np.asarray(lg.origin))
    aligned = np.allclose(a, np.round(a), atol=tol) and np.allclose(t, np.round(t), atol=tol)
    aligned = aligned and np.allclose(np.abs(np.round(a)).sum(axis=0), 1)
    corners = np.array([[x, y, z] for x in (0, ig.size[0] - 1) for y in (0, ig.size[1] - 1)
                        for z in (0, ig.size[2] - 1)], dtype=float)
    mapped = corners @ a.T + t  # the image's corners in label indices: the two boxes must share a voxel
    overlap = np.all(mapped.max(axis=0) > -0.5) and np.all(mapped.min(axis=0) < np.asarray(lg.size) - 0.5)
    if not (aligned and overlap):
        why = "no voxel inside the image" if aligned else "voxel centres that are not the image's"
        raise GeometryMismatchError(f"{label.name}: label map has {why} (label {lg.describe()}; "
                                    f"image {ig.describe()})")
    resampled = sitk.Resample(label.to_sitk(), image.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return image.with_array(sitk.GetArrayFromImage(resampled).astype(label.array.dtype), path=label.path,
                            meta=dict(label.meta))


def read_image_label(
    image_path: str | os.PathLike[str], label_path: str | os.PathLike[str], *, allow_empty: bool = False
) -> tuple[Volume, Volume]:
    """Read an image and its label map, the label put on the image's grid."""
    image = read_volume(image_path)
    return image, read_label(label_path, image, allow_empty=allow_empty)


def write_volume(volume: Volume, path: str | os.PathLike[str], *, compress: bool = True) -> Path:
    """Write a volume atomically; its spacing, origin and direction are written exactly as held."""
    path = Path(path)
    suffix = compound_suffix(path).lower()
    if suffix not in WRITE_SUFFIXES:
        raise UnsupportedFormatError(f"{path}: cannot write '{suffix or path.name}'; "
                                     f"writable are {', '.join(WRITE_SUFFIXES)}")
    image = volume.to_sitk()
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress and suffix != ".nii")
    return path


def write_mask(mask: np.ndarray, reference: Volume, path: str | os.PathLike[str]) -> Path:
    """Write a label array (z, y, x) with the reference image's exact geometry."""
    mask = np.asarray(mask)
    if mask.shape != reference.array.shape:
        raise GeometryMismatchError(
            f"{path}: mask of shape {mask.shape} does not match image {reference.name} of shape "
            f"{reference.array.shape}"
        )
    label = as_label(reference.with_array(mask, path=Path(path), meta={}))
    return write_volume(label, path)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages start with a file/line banner; the useful text is the last line.
    return lines[-1] if lines else type(exc).__name__
