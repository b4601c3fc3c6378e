"""Per-structure measurements of a label map in physical units: volume, attenuation on the eroded mask, maximum 3D
diameter, principal axes, craniocaudal extent, tube diameters, completeness, and lesions measured one by one."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist
from skimage.measure import find_contours, marching_cubes

from ..errors import DimensionError, EmptyLabelError, GeometryMismatchError
from ..localization.template_fusion import content_box
from ..progress import ProgressFn
from ..volumes.volume import Volume
from .anatomy import Anatomy, lookup

#: TotalSegmentator's completeness rule: a mask within 3 voxels of the scan's border is incompletely imaged.
EDGE_VOXELS = 3
_FULL = np.ones((3, 3, 3), bool)  # 26-connectivity: diagonal neighbours are one structure


@dataclass
class LesionMeasurement:
    """One connected component of a lesion label, measured as in RECIST/WHO on its largest axial section."""

    number: int
    volume_ml: float
    long_axis_mm: float        # longest diameter on an axial slice
    short_axis_mm: float       # its perpendicular width on the same slice
    slice_index: int           # array index (along the axial axis) of that slice
    centroid_mm: tuple[float, float, float]


@dataclass
class StructureMeasurement:
    """Everything the report says about one label value; lengths in mm, volumes in mL, LPS coordinates."""

    value: int
    name: str
    anatomy: Anatomy
    voxels: int
    volume_ml: float
    max_diameter_mm: float                     # Feret diameter of the surface (marching cubes at 0.5)
    axes_mm: tuple[float, float, float]        # equivalent-ellipsoid diameters 2*sqrt(5*lambda), largest first
    cc_extent_mm: float                        # extent along the patient's superior-inferior axis
    centroid_mm: tuple[float, float, float]
    centroid_index: tuple[float, float, float]  # (x, y, z) voxel index
    complete: bool
    edges: list[str]                           # where it meets the scan border: "in-plane", "craniocaudal"
    components: int
    intensity_mean: float | None = None        # on the mask eroded by one voxel (partial volume excluded)
    intensity_sd: float | None = None
    intensity_median: float | None = None
    intensity_eroded: bool = True
    tube_diameter_mm: float | None = None      # largest inscribed diameter over axial sections
    abdominal_diameter_mm: float | None = None  # the same, below the aortic hiatus (T12), for the aorta
    thoracic_diameter_mm: float | None = None
    lesions: list[LesionMeasurement] = field(default_factory=list)
    tube_profile: list[tuple[float, float]] = field(default_factory=list, repr=False)  # (S mm, diameter mm)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("tube_profile")
        out["anatomy"] = {"key": self.anatomy.key, "display": self.anatomy.display, "section": self.anatomy.section,
                          "kind": self.anatomy.kind, "snomed": list(self.anatomy.snomed)}
        return out




def check_inputs(image: Volume, label: Volume) -> None:
    """Refuse what cannot be measured, with the file and the problem in one line."""
    for vol in (image, label):
        if min(vol.array.shape) < 2:
            raise DimensionError(f"{vol.name}: is a 2D image of shape {vol.array.shape}; a 3D volume is needed")
    if not image.geometry.is_close(label.geometry, tol=1e-3):
        raise GeometryMismatchError(f"{label.name}: label map is not on the grid of {image.name} "
                                    f"({label.geometry.describe()} vs {image.geometry.describe()})")
    if not np.any(label.array):
        raise EmptyLabelError(f"{label.name}: the label map has no foreground voxel; nothing to report")


def axial_axis(volume: Volume) -> int:
    """Array axis (of the z, y, x array) whose direction is closest to the patient's superior-inferior axis."""
    m = volume.geometry.direction_matrix
    return 2 - int(np.argmax(np.abs(m[2, :])))


def guess_modality(volume: Volume) -> str:
    """CT when the header says so or the values reach air in Hounsfield units (MR values are not negative)."""
    if volume.meta.get("modality"):
        return str(volume.meta["modality"]).upper()
    return "CT" if volume.array.min() <= -500 else "MR"


def measure_structures(image: Volume, label: Volume, names: dict[int, str] | None = None, *,
                       modality: str | None = None, progress: ProgressFn | None = None,
                       cancelled: Callable[[], bool] | None = None) -> list[StructureMeasurement]:
    """Measure every label value present in ``label`` (already on ``image``'s grid)."""
    check_inputs(image, label)
    names = names or {}
    arr = label.array
    values = [int(v) for v in np.unique(arr) if v != 0]
    boxes = ndimage.find_objects(arr.astype(np.int32, copy=False))
    if (modality or guess_modality(image)) == "CT":
        scan_lo, scan_hi = content_box(image)  # (x, y, z): a padded CT ends where its constant fill begins
    else:  # MR backgrounds are constant zero around a skull-stripped or masked body: only the array ends the scan
        scan_lo, scan_hi = np.zeros(3, int), np.array(image.geometry.size) - 1
    out = []
    for i, value in enumerate(values):
        if cancelled is not None and cancelled():
            raise InterruptedError("measurement cancelled")
        name = names.get(value, f"label {value}")
        if progress:
            progress(i, len(values), name)
        out.append(_measure_one(image, arr, value, name, boxes[value - 1], scan_lo, scan_hi))
    _split_aorta(out, image)
    if progress:
        progress(len(values), len(values), "done")
    return out


def _measure_one(image: Volume, arr: np.ndarray, value: int, name: str, box: tuple[slice, ...],
                 scan_lo: np.ndarray, scan_hi: np.ndarray) -> StructureMeasurement:
    g = image.geometry
    # one voxel of context around the structure for erosion, surfaces and distance maps
    crop = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, arr.shape))
    offset_zyx = np.array([s.start for s in crop])
    mask = arr[crop] == value
    voxels = int(mask.sum())
    zyx = np.argwhere(mask) + offset_zyx
    xyz = zyx[:, ::-1].astype(float)
    points = g.index_to_physical(xyz)
    centroid_index = xyz.mean(axis=0)
    lam = np.clip(np.linalg.eigvalsh(np.cov(points.T)) if voxels > 1 else np.zeros(3), 0, None)
    axes = tuple(float(v) for v in sorted(2 * np.sqrt(5 * lam), reverse=True))
    surface = _surface_points(mask, offset_zyx, image)
    axial = axial_axis(image)
    edges = _edges(zyx, arr.shape, scan_lo, scan_hi, axial)
    anatomy = lookup(name)
    m = StructureMeasurement(
        value=value, name=name, anatomy=anatomy, voxels=voxels, volume_ml=voxels * float(np.prod(g.spacing)) / 1000,
        max_diameter_mm=_feret(surface), axes_mm=axes, cc_extent_mm=float(np.ptp(surface[:, 2])),
        centroid_mm=tuple(float(v) for v in points.mean(axis=0)), centroid_index=tuple(map(float, centroid_index)),
        complete=not edges, edges=edges, components=int(ndimage.label(mask, _FULL)[1]))
    values = image.array[crop]
    eroded = ndimage.binary_erosion(mask)
    m.intensity_eroded = bool(eroded.any())
    sample = values[eroded if m.intensity_eroded else mask].astype(float)
    m.intensity_mean, m.intensity_sd, m.intensity_median = (float(sample.mean()), float(sample.std()),
                                                            float(np.median(sample)))
    if anatomy.kind == "tube":
        m.tube_profile = _tube_profile(mask, offset_zyx, image, axial)
        m.tube_diameter_mm = max(d for _, d in m.tube_profile) if m.tube_profile else None
    if anatomy.kind == "lesion":
        m.lesions = _lesions(mask, offset_zyx, image, axial)
    return m


def _surface_points(mask: np.ndarray, offset_zyx: np.ndarray, image: Volume) -> np.ndarray:
    """LPS points (mm) of the iso-surface halfway between inside and outside voxel centres."""
    padded = np.pad(mask, 1).astype(np.float32)
    verts = marching_cubes(padded, 0.5)[0] - 1 + offset_zyx
    return image.geometry.index_to_physical(verts[:, ::-1])


def _feret(points: np.ndarray) -> float:
    """Largest distance between two points (on the convex hull, which holds both ends)."""
    try:
        points = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        pass  # flat or tiny point sets: every pair is cheap
    return float(pdist(points).max()) if len(points) > 1 else 0.0


def _edges(zyx: np.ndarray, shape: tuple[int, ...], scan_lo: np.ndarray, scan_hi: np.ndarray,
           axial: int) -> list[str]:
    lo = np.maximum(scan_lo[::-1], 0)                       # to (z, y, x)
    hi = np.minimum(scan_hi[::-1], np.array(shape) - 1)
    near = (zyx.min(axis=0) < lo + EDGE_VOXELS) | (zyx.max(axis=0) > hi - EDGE_VOXELS)
    out = []
    if np.any(near[[a for a in range(3) if a != axial]]):
        out.append("in-plane")
    if near[axial]:
        out.append("craniocaudal")
    return out


def _in_plane(image: Volume, axial: int) -> tuple[list[int], np.ndarray]:
    """The two in-plane array axes and their spacings (z, y, x order)."""
    others = [a for a in range(3) if a != axial]
    spacing_zyx = np.array(image.geometry.spacing[::-1])
    return others, spacing_zyx[others]


def _tube_profile(mask: np.ndarray, offset_zyx: np.ndarray, image: Volume, axial: int) -> list[tuple[float, float]]:
    """(S coordinate, largest inscribed diameter) of every axial section of a tube.

    The inscribed diameter of an oblique section still equals the tube's, which is why it is used rather
    than the section's width (the standard axial approximation of a centreline-perpendicular diameter).
    """
    _, sampling = _in_plane(image, axial)
    profile = []
    for k in range(mask.shape[axial]):
        section = np.take(mask, k, axis=axial)
        if not section.any():
            continue
        edt = ndimage.distance_transform_edt(np.pad(section, 1), sampling=sampling)
        # the wall lies halfway between the last inside and the first outside voxel centre
        diameter = max(2 * float(edt.max()) - float(sampling.mean()), 0.0)
        idx_zyx = np.argwhere(section).mean(axis=0)
        full = np.insert(idx_zyx, axial, k) + offset_zyx
        profile.append((float(image.geometry.index_to_physical(full[::-1])[2]), diameter))
    return profile


def _lesions(mask: np.ndarray, offset_zyx: np.ndarray, image: Volume, axial: int) -> list[LesionMeasurement]:
    labelled, n = ndimage.label(mask, _FULL)
    others, sampling = _in_plane(image, axial)
    voxel_ml = float(np.prod(image.geometry.spacing)) / 1000
    out = []
    for number, sl in enumerate(ndimage.find_objects(labelled), start=1):
        comp = labelled[sl] == number
        best = (0.0, 0.0, 0)
        for k in range(comp.shape[axial]):
            section = np.take(comp, k, axis=axial)
            if section.any():
                long_axis, short_axis = _bidimensional(section, sampling)
                if long_axis > best[0]:
                    best = (long_axis, short_axis, k + sl[axial].start + offset_zyx[axial])
        zyx = np.argwhere(comp) + np.array([s.start for s in sl]) + offset_zyx
        centroid = image.geometry.index_to_physical(zyx[:, ::-1].mean(axis=0))
        out.append(LesionMeasurement(number, int(comp.sum()) * voxel_ml, best[0], best[1], int(best[2]),
                                     tuple(float(v) for v in centroid)))
    return sorted(out, key=lambda m: -m.long_axis_mm)


def _bidimensional(section: np.ndarray, sampling: np.ndarray) -> tuple[float, float]:
    """Longest diameter of a 2D region (mm) and its perpendicular width, on the contour at half height."""
    contours = find_contours(np.pad(section, 1).astype(np.float32), 0.5)
    pts = np.concatenate(contours) * sampling if contours else np.zeros((0, 2))
    if len(pts) < 2:
        return 0.0, 0.0
    try:
        pts = pts[ConvexHull(pts).vertices]
    except (QhullError, ValueError):
        pass
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    i, j = np.unravel_index(np.argmax(d), d.shape)
    u = (pts[j] - pts[i]) / max(d[i, j], 1e-9)
    width = np.ptp(pts @ np.array([-u[1], u[0]]))
    return float(d[i, j]), float(width)


_T12 = re.compile(r"^vertebra[e]?_?t12$")


def _split_aorta(measurements: list[StructureMeasurement], image: Volume) -> None:
    """Split the aorta's diameter profile at the aortic hiatus (T12; else the kidneys' upper poles)."""
    hiatus = next((m.centroid_mm[2] for m in measurements if _T12.match(m.anatomy.key)), None)
    if hiatus is None:
        tops = [m.centroid_mm[2] + m.cc_extent_mm / 2 for m in measurements
                if m.anatomy.key in ("kidney_left", "kidney_right")]
        hiatus = max(tops) if tops else None
    for m in measurements:
        if m.anatomy.key != "aorta" or not m.tube_profile or hiatus is None:
            continue
        below = [d for s, d in m.tube_profile if s < hiatus]
        above = [d for s, d in m.tube_profile if s >= hiatus]
        m.abdominal_diameter_mm = max(below) if below else None
        m.thoracic_diameter_mm = max(above) if above else None
