"""The headers of a DICOM series as pydicom datasets, checked and tidied for objects that reference them
(structured reports, segmentations)."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import SimpleITK as sitk

from ..errors import MedLSAMError
from .io import dicom_series_ids

_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def series_datasets(folder: str | os.PathLike[str], series_uid: str | None = None, *, pixels: bool = False,
                    purpose: str = "a structured report", extra: tuple[str, ...] = ()) -> list[pydicom.Dataset]:
    """The series' datasets in ITK's slice order (the order of a Volume's slices read from the folder).

    A blank SOP Class UID is restored from the file meta (some anonymisers blank it) and a blank Specific Character
    Set removed (it means the default repertoire); a series without its UIDs cannot be referenced and is refused."""
    folder = Path(folder)
    ids = dicom_series_ids(folder)
    if not ids:
        raise MedLSAMError(f"{folder}: no DICOM series; {purpose} needs the source series")
    uid = series_uid if series_uid in ids else ids[0]
    out = []
    for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid):
        ds = pydicom.dcmread(f, stop_before_pixels=not pixels)
        if not ds.get("SOPClassUID") and "MediaStorageSOPClassUID" in ds.file_meta:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet
        missing = [k for k in _REQUIRED + extra if not ds.get(k)]
        if missing:
            raise MedLSAMError(f"{f}: no {', '.join(missing)} (anonymised without new UIDs?): {purpose} cannot "
                               "reference this series")
        out.append(ds)
    if len({ds.SOPInstanceUID for ds in out}) < len(out):
        raise MedLSAMError(f"{folder}: slices share one SOP Instance UID (anonymised without new UIDs?): {purpose} "
                           "cannot tell them apart")
    return out
