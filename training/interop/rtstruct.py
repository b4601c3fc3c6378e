"""DICOM RT structure sets, the radiotherapy format of contours: a label map exported onto its CT series as one
ROI per value, and a structure set read back as a label map (rt-utils draws and fills the contours).

A structure set is contours on the series' slices, so a round trip is exact up to contour rasterisation (a voxel on
an organ's edge may flip).  Where ROIs overlap (an organ inside a target volume) the label map keeps the smaller ROI
on top: every ROI stays visible, and the overlap is reported.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from ..errors import GeometryMismatchError, MedLSAMError
from ..volumes.atomic import atomic_path
from ..volumes.dicom_series import series_datasets
from ..volumes.io import dicom_series_ids, read_volume
from ..volumes.volume import Volume
from .colours import colour_for

log = logging.getLogger(__name__)
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def dicom_modality(path: str | os.PathLike[str]) -> str | None:
    """The Modality of a DICOM file (RTSTRUCT, SEG, CT, ...), None when the file is not DICOM."""
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"]).get("Modality", ""))
    except Exception:  # noqa: BLE001 - not DICOM, or damaged: either way not a structure set we can read
        return None


def _series_folder(folder: Path) -> tuple[Volume, list[pydicom.Dataset]]:
    """The one image series of ``folder`` and its headers, checked to carry the UIDs a structure set references."""
    ids = dicom_series_ids(folder)
    if not ids:
        raise MedLSAMError(f"{folder}: no DICOM image series; an RT structure set needs its CT series")
    if len(ids) > 1:
        raise MedLSAMError(f"{folder}: holds {len(ids)} DICOM series; put the structure set's series in a folder "
                           "of its own")
    headers = series_datasets(folder, ids[0], purpose="an RT structure set", extra=("FrameOfReferenceUID",))
    return read_volume(folder), headers


@contextmanager
def _rt_utils() -> Iterator[Any]:
    """rt-utils' builder; it sets header attributes that pydicom deprecates (their warning, not our users')."""
    from rt_utils import RTStructBuilder

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*is_(little_endian|implicit_VR)")
        yield RTStructBuilder


def _slice_indices(series: list[pydicom.Dataset], image: Volume) -> list[int]:
    """rt-utils' slice order (by position along the normal) -> the volume's z index of each slice."""
    out = []
    for ds in series:
        idx = image.geometry.physical_to_index(np.asarray(ds.ImagePositionPatient, float))
        z = int(round(float(idx[2])))
        if abs(idx[2] - z) > 0.1 or not 0 <= z < image.size[2]:
            raise GeometryMismatchError(f"{ds.filename}: slice at {list(ds.ImagePositionPatient)} is not a slice "
                                        f"of the series read from its folder")
        out.append(z)
    return out


def export_rtstruct(label: Volume, names: dict[int, str], series_folder: str | os.PathLike[str],
                    out: str | os.PathLike[str]) -> Path:
    """Write every label value as an ROI (name from ``names``, else 'label N'; the project's colour) of an RT
    structure set referencing the series in ``series_folder``; ``label`` must lie on that series' grid."""
    folder, out = Path(series_folder), Path(out)
    image, _ = _series_folder(folder)
    if not image.geometry.is_close(label.geometry, tol=1e-3):
        raise GeometryMismatchError(f"{label.name}: not on the grid of the series {folder} "
                                    f"({label.geometry.describe()} vs {image.geometry.describe()})")
    values = [int(v) for v in np.unique(label.array) if v != 0]
    if not values:
        raise MedLSAMError(f"{label.name}: the label map has no foreground voxel; no structure to export")
    with _rt_utils() as builder:
        try:
            rt = builder.create_new(dicom_series_path=str(folder))
        except Exception as exc:  # noqa: BLE001 - rt-utils raises bare exceptions
            raise MedLSAMError(f"{folder}: cannot start a structure set on this series ({exc})") from exc
        order = _slice_indices(rt.series_data, image)
        for value in values:
            # rt-utils takes masks as (rows, columns, slices in its order); our arrays are [z, y, x]
            mask = np.stack([label.array[z] == value for z in order], axis=-1)
            rgb = [int(round(255 * c)) for c in colour_for(value)[:3]]
            rt.add_roi(mask=mask, color=rgb, name=names.get(value, f"label {value}")[:64],
                       description=f"label {value}")
        rt.set_series_description("medlsam-napari structures")
        with atomic_path(out) as tmp:
            rt.ds.save_as(tmp, enforce_file_format=True)  # rt-utils' own save prints; ours is atomic
    return out


def _check_references(ds: pydicom.Dataset, path: Path, image: Volume, series: list[pydicom.Dataset]) -> None:
    uids = {s.SOPInstanceUID for s in series}
    series_uid = image.meta.get("series_uid")
    referenced = set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for ref in study.get("RTReferencedSeriesSequence", []):
                if series_uid and ref.get("SeriesInstanceUID") and ref.SeriesInstanceUID != series_uid:
                    raise MedLSAMError(f"{path}: references series {ref.SeriesInstanceUID}, not the series "
                                       f"{series_uid} given")
                referenced |= {c.ReferencedSOPInstanceUID for c in ref.get("ContourImageSequence", [])}
    for roi in ds.get("ROIContourSequence", []):
        for contour in roi.get("ContourSequence", []):
            referenced |= {c.ReferencedSOPInstanceUID for c in contour.get("ContourImageSequence", [])}
    if referenced - uids:
        raise MedLSAMError(f"{path}: contours reference {len(referenced - uids)} image(s) that are not in the "
                           "series given (another patient or series?)")


def import_rtstruct(path: str | os.PathLike[str], series_folder: str | os.PathLike[str]
                    ) -> tuple[Volume, dict[int, str]]:
    """(label map on the series grid, {value: ROI name}): ROIs numbered in the structure set's order, empty ones
    left out; where ROIs overlap the smaller one is kept on top."""
    path, folder = Path(path), Path(series_folder)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - any damage in an untrusted file
        raise MedLSAMError(f"{path}: not a readable DICOM file ({str(exc).splitlines()[0]})") from exc
    if ds.get("SOPClassUID") != RTSTRUCT_SOP_CLASS or "StructureSetROISequence" not in ds:
        raise MedLSAMError(f"{path}: not an RT structure set (Modality {ds.get('Modality', '?')})")
    image, headers = _series_folder(folder)
    _check_references(ds, path, image, headers)
    masks: list[tuple[int, str, np.ndarray]] = []
    with _rt_utils() as builder:
        try:
            rt = builder.create_from(dicom_series_path=str(folder), rt_struct_path=str(path))
        except Exception as exc:  # noqa: BLE001 - rt-utils raises bare exceptions
            raise MedLSAMError(f"{path}: cannot read with the series {folder} ({exc})") from exc
        order = _slice_indices(rt.series_data, image)
        for number, name in enumerate(rt.get_roi_names(), start=1):
            try:
                drawn = rt.get_roi_mask_by_name(name)  # (rows, columns, slices in rt-utils' order)
            except Exception as exc:  # noqa: BLE001 - a damaged ROI is named
                raise MedLSAMError(f"{path}: ROI {name!r} cannot be drawn ({exc})") from exc
            mask = np.zeros(image.array.shape, bool)
            for i, z in enumerate(order):
                mask[z] = drawn[:, :, i]
            if mask.any():
                masks.append((number, name, mask))
            else:
                log.info("%s: ROI %r has no contour on this series; left out", path, name)
    if not masks:
        raise MedLSAMError(f"{path}: no ROI with a contour on the series {folder}")
    arr = np.zeros(image.array.shape, np.uint8 if len(masks) < 256 else np.uint16)
    covered = np.zeros(image.array.shape, bool)
    overlap = 0
    for value, (_, _, mask) in sorted(enumerate(masks, start=1), key=lambda m: -int(m[1][2].sum())):
        overlap += int((covered & mask).sum())
        arr[mask] = value
        covered |= mask
    if overlap:
        log.warning("%s: %d voxels lie in more than one ROI; the smaller ROI is kept there", path, overlap)
    names = {value: name for value, (_, name, _) in enumerate(masks, start=1)}
    return image.with_array(arr, path=path), names


def referenced_series_uid(ds: pydicom.Dataset) -> str | None:
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for ref in study.get("RTReferencedSeriesSequence", []):
                if ref.get("SeriesInstanceUID"):
                    return str(ref.SeriesInstanceUID)
    return None


def find_series_for(path: str | os.PathLike[str]) -> Path:
    """The folder of the image series a structure set references: its own folder, a sub-folder or a sibling
    (how PACS exports and TPS exports lay them out)."""
    path = Path(path)
    try:
        wanted = referenced_series_uid(pydicom.dcmread(path, stop_before_pixels=True))
    except Exception as exc:  # noqa: BLE001
        raise MedLSAMError(f"{path}: not a readable DICOM file ({str(exc).splitlines()[0]})") from exc
    here = path.parent
    candidates = [here, *sorted(p for p in here.iterdir() if p.is_dir()),
                  *sorted(p for p in here.parent.iterdir() if p.is_dir() and p != here)]
    for folder in candidates:
        ids = dicom_series_ids(folder)
        if len(ids) == 1 and (wanted is None or ids[0] == wanted):
            return folder
    raise MedLSAMError(f"{path}: its image series ({wanted or 'unknown UID'}) is not in its folder, a sub-folder "
                       "or a sibling folder")


def structure_sets_in(folder: str | os.PathLike[str]) -> list[Path]:
    """The RT structure set files in a series folder (opened beside the series as labels)."""
    out = []
    for p in sorted(Path(folder).iterdir()):
        if p.is_file() and p.stat().st_size < 200_000_000 and dicom_modality(p) == "RTSTRUCT":
            out.append(p)
    return out
