"""DICOM SEG export of a label map onto its source CT series, and import back onto the series (highdicom)."""

from __future__ import annotations

import os
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from ..errors import GeometryMismatchError, MedLSAMError
from ..report.anatomy import lookup
from ..volumes.atomic import atomic_path
from ..volumes.dicom_series import series_datasets
from ..volumes.io import read_volume
from ..volumes.volume import Volume

_ORGAN = hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure")
_ALTERED = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")


def _series(folder: Path, series_uid: str | None) -> list[pydicom.Dataset]:
    return series_datasets(folder, series_uid, pixels=True, purpose="a DICOM SEG", extra=("FrameOfReferenceUID",))


def export_dicom_seg(label: Volume, names: dict[int, str], series_folder: str | os.PathLike[str],
                     out: str | os.PathLike[str], *, algorithm: str | None = None) -> Path:
    """Write every label value as a segment (number = value order, label = name, SNOMED type where known) of a
    binary DICOM SEG referencing ``series_folder``; ``label`` must lie on that series' grid."""
    folder = Path(series_folder)
    image = read_volume(folder)
    if not image.geometry.is_close(label.geometry, tol=1e-3):
        raise GeometryMismatchError(f"{label.name}: not on the grid of the series {folder} "
                                    f"({label.geometry.describe()} vs {image.geometry.describe()})")
    sources = _series(folder, image.meta.get("series_uid"))
    values = [int(v) for v in np.unique(label.array) if v != 0]
    if not values:
        raise MedLSAMError(f"{label.name}: the label map has no foreground voxel; no segment to export")
    descriptions, masks = [], []
    for number, value in enumerate(values, start=1):
        name = names.get(value, f"label {value}")
        anatomy = lookup(name)
        code, meaning = anatomy.snomed
        kind = hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if algorithm else \
            hd.seg.SegmentAlgorithmTypeValues.MANUAL
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64],
            segmented_property_category=_ALTERED if anatomy.kind == "lesion" else _ORGAN,
            segmented_property_type=hd.sr.CodedConcept(code, "SCT", meaning),
            algorithm_type=kind,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=algorithm, version="1", family=codes.cid7162.ArtificialIntelligence) if algorithm else None,
            tracking_uid=hd.UID(), tracking_id=f"{name} (label {value})"))
        masks.append(label.array == value)
    pixels = np.stack(masks, axis=-1).astype(np.uint8)  # (frames in series order, rows, columns, segments)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9002,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medlsam-napari",
        manufacturer_model_name="medlsam-napari", software_versions="0.1.0", device_serial_number="none",
        series_description="medlsam-napari segmentation")
    out = Path(out)
    with atomic_path(out) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return out


def import_dicom_seg(path: str | os.PathLike[str], series_folder: str | os.PathLike[str]
                     ) -> tuple[Volume, dict[int, str]]:
    """(label map on the series grid, {value: segment label}); segment numbers become label values."""
    path, folder = Path(path), Path(series_folder)
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # noqa: BLE001 - any damage in an untrusted file
        raise MedLSAMError(f"{path}: not a readable DICOM SEG ({str(exc).splitlines()[0]})") from exc
    image = read_volume(folder)
    sources = _series(folder, image.meta.get("series_uid"))
    uids = [ds.SOPInstanceUID for ds in sources]
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    if not referenced & set(uids):
        raise MedLSAMError(f"{path}: references none of the images of {folder}")
    numbers = list(seg.segment_numbers)
    arr = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=numbers,
                                            combine_segments=True, skip_overlap_checks=True)
    names = {n: seg.get_segment_description(n).segment_label for n in numbers}
    return image.with_array(np.asarray(arr).astype(np.uint8 if max(numbers) < 256 else np.uint16), path=path), names
