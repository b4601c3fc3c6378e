"""The Volume type: a 3D array with the physical geometry that places it in the patient.

Axis convention (the one rule of this code base):
    * ``Volume.array`` is indexed ``[z, y, x]`` (SimpleITK's NumPy view, slices first).
    * Every geometric tuple -- ``spacing``, ``origin``, voxel ``index`` and physical ``point`` -- is in
      ITK order ``(x, y, z)`` and physical points are in the LPS patient frame (mm), as in DICOM,
      ITK-SNAP and 3D Slicer's files.  ``direction`` is the 3x3 ITK direction matrix whose *columns*
      are the x, y, z voxel axes in LPS.
    * An index ``(i, j, k)`` addresses ``array[k, j, i]``; the flip happens only through
      :meth:`Volume.voxel` / ``index[::-1]`` where an array is indexed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import DimensionError, GeometryMismatchError, NaNVoxelsError

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid sits in the patient: size (x, y, z), spacing, origin, direction."""

    size: tuple[int, int, int]
    spacing: Vec3
    origin: Vec3
    direction: tuple[float, ...]  # 9 numbers, row-major, ITK convention

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def index_to_physical_matrix(self) -> np.ndarray:
        """The 3x3 matrix M with point = origin + M @ index."""
        return self.direction_matrix @ np.diag(self.spacing)

    def index_to_physical(self, index: Any) -> np.ndarray:
        """Continuous voxel index/indices (..., 3) in (x, y, z) -> LPS points in mm."""
        idx = np.asarray(index, dtype=float)
        return idx @ self.index_to_physical_matrix.T + np.asarray(self.origin)

    def physical_to_index(self, point: Any) -> np.ndarray:
        """LPS points in mm (..., 3) -> continuous voxel indices (x, y, z)."""
        pts = np.asarray(point, dtype=float) - np.asarray(self.origin)
        return pts @ np.linalg.inv(self.index_to_physical_matrix).T

    def contains_index(self, index: Any, tolerance: float = 0.5) -> bool:
        """True when a (continuous) index lies inside the grid, voxel half-widths included."""
        idx = np.asarray(index, dtype=float)
        return bool(np.all(idx >= -tolerance) and np.all(idx <= np.asarray(self.size) - 1 + tolerance))

    def affine_zyx(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping array indices (z, y, x) to LPS points in (z, y, x) order.

        This is what napari's ``affine`` wants: the displayed world axes are the LPS axes reversed.
        """
        m = self.index_to_physical_matrix[::-1, ::-1]
        out = np.eye(4)
        out[:3, :3] = m
        out[:3, 3] = np.asarray(self.origin)[::-1]
        return out

    def is_close(self, other: "Geometry", tol: float = 1e-4) -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def describe(self) -> str:
        return (
            f"size {self.size}, spacing {tuple(round(s, 4) for s in self.spacing)} mm, "
            f"origin {tuple(round(o, 3) for o in self.origin)}, "
            f"direction {tuple(round(d, 4) for d in self.direction)}"
        )

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "Geometry":
        return cls(
            size=tuple(int(s) for s in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )

    @classmethod
    def from_affine_zyx(cls, affine: np.ndarray, shape_zyx: tuple[int, ...]) -> "Geometry":
        """Inverse of :meth:`affine_zyx` (used for napari layers that lost their metadata)."""
        affine = np.asarray(affine, dtype=float)
        m = affine[:3, :3][::-1, ::-1]
        spacing = np.linalg.norm(m, axis=0)
        if np.any(spacing <= 0):
            raise ValueError(f"affine {affine.tolist()} has a zero-length axis")
        direction = m / spacing
        return cls(
            size=tuple(int(s) for s in shape_zyx[::-1]),
            spacing=tuple(float(s) for s in spacing),
            origin=tuple(float(o) for o in affine[:3, 3][::-1]),
            direction=tuple(float(d) for d in direction.ravel()),
        )


@dataclass
class Volume:
    """A 3D image or label map: ``array[z, y, x]`` plus ITK geometry and where it came from."""

    array: np.ndarray
    spacing: Vec3 = (1.0, 1.0, 1.0)
    origin: Vec3 = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        name = str(self.path) if self.path else "volume"
        if self.array.ndim != 3:
            raise DimensionError(f"{name}: a 3D volume is needed, got an array of shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = tuple(float(d) for d in np.asarray(self.direction, dtype=float).ravel())
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ValueError(f"{name}: spacing/origin need 3 numbers and direction 9")
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"{name}: spacing {self.spacing} must be positive and finite")

    # --- geometry -------------------------------------------------------------------------
    @property
    def geometry(self) -> Geometry:
        return Geometry(
            size=tuple(int(s) for s in self.array.shape[::-1]),
            spacing=self.spacing,
            origin=self.origin,
            direction=self.direction,
        )

    @property
    def size(self) -> tuple[int, int, int]:
        """Grid size in (x, y, z) order."""
        return tuple(int(s) for s in self.array.shape[::-1])

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(self.spacing[::-1])

    @property
    def name(self) -> str:
        return str(self.path) if self.path else "volume"

    def index_to_physical(self, index: Any) -> np.ndarray:
        return self.geometry.index_to_physical(index)

    def physical_to_index(self, point: Any) -> np.ndarray:
        return self.geometry.physical_to_index(point)

    def voxel(self, index: Any) -> Any:
        """The voxel value at an integer index (x, y, z)."""
        i, j, k = (int(round(v)) for v in index)
        return self.array[k, j, i]

    def with_array(self, array: np.ndarray, **changes: Any) -> "Volume":
        """A new Volume with the same geometry (and provenance) and another array of the same shape."""
        array = np.asarray(array)
        if array.shape != self.array.shape and "spacing" not in changes:
            raise GeometryMismatchError(
                f"{self.name}: array of shape {array.shape} cannot take geometry of shape {self.array.shape}"
            )
        changes.setdefault("meta", dict(self.meta))
        return replace(self, array=array, **changes)

    def require_finite(self) -> "Volume":
        """Raise :class:`NaNVoxelsError` if any voxel is NaN or infinite."""
        if np.issubdtype(self.array.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(self.array)))
            if bad:
                raise NaNVoxelsError(
                    f"{self.name}: {bad} of {self.array.size} voxels are NaN or infinite; "
                    "fix or mask them before processing"
                )
        return self

    # --- SimpleITK bridge -------------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        array = self.array
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, path: Path | None = None, meta: dict[str, Any] | None = None) -> "Volume":
        if image.GetDimension() != 3:
            raise DimensionError(f"{path or 'image'}: a 3D volume is needed, got a {image.GetDimension()}D image")
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=image.GetDirection(),
            path=path,
            meta=dict(meta or {}),
        )


def require_same_grid(image: Volume, label: Volume, tol: float = 1e-3) -> None:
    """Raise :class:`GeometryMismatchError` unless both volumes share one voxel grid."""
    if not image.geometry.is_close(label.geometry, tol=tol):
        raise GeometryMismatchError(
            f"{label.name} does not lie on the grid of {image.name}:\n"
            f"  image: {image.geometry.describe()}\n  label: {label.geometry.describe()}"
        )


def orient(volume: Volume, code: str = "LPS") -> Volume:
    """Exact re-indexing (axis permutation/flips, no interpolation) so the axes point along ``code``.

    ``orient(v, "LPS")`` gives axial slices ``array[k]`` shown with the patient's right on the left
    and anterior at the top (radiological convention), whatever order the file was stored in.
    """
    image = sitk.DICOMOrient(volume.to_sitk(), code)
    return Volume.from_sitk(image, path=volume.path, meta=dict(volume.meta))
