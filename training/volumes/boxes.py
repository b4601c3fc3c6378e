"""3D bounding boxes in voxel indices (x, y, z, inclusive) and their physical extent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EmptyLabelError
from .volume import Geometry


@dataclass(frozen=True)
class Box3D:
    """Inclusive voxel box: ``lo`` and ``hi`` are (x, y, z) indices, ``lo <= hi`` on every axis."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]

    def __post_init__(self) -> None:
        lo = tuple(int(v) for v in self.lo)
        hi = tuple(int(v) for v in self.hi)
        if len(lo) != 3 or len(hi) != 3:
            raise ValueError(f"a 3D box needs 3 numbers per corner, got {self.lo} and {self.hi}")
        if any(a > b for a, b in zip(lo, hi)):
            raise ValueError(f"empty box: lo {lo} exceeds hi {hi} on some axis")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> "Box3D":
        """The tight box of the non-zero voxels of a mask indexed [z, y, x]."""
        nz = np.nonzero(mask)
        if not nz[0].size:
            raise EmptyLabelError("cannot take the bounding box of an empty mask")
        lo_zyx = [int(a.min()) for a in nz]
        hi_zyx = [int(a.max()) for a in nz]
        return cls(tuple(lo_zyx[::-1]), tuple(hi_zyx[::-1]))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel counts along (x, y, z)."""
        return tuple(b - a + 1 for a, b in zip(self.lo, self.hi))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Array slices [z, y, x] selecting the box."""
        return tuple(slice(a, b + 1) for a, b in zip(self.lo[::-1], self.hi[::-1]))

    def clip(self, size: tuple[int, int, int]) -> "Box3D":
        """Clip to a grid of size (x, y, z); raises ValueError when nothing is left."""
        lo = tuple(max(0, v) for v in self.lo)
        hi = tuple(min(n - 1, v) for n, v in zip(size, self.hi))
        if any(a > b for a, b in zip(lo, hi)):
            raise ValueError(f"box {self.lo}-{self.hi} lies entirely outside a volume of size {size}")
        return Box3D(lo, hi)

    def grow(self, margin: tuple[int, int, int] | int) -> "Box3D":
        m = (margin,) * 3 if isinstance(margin, int) else margin
        return Box3D(tuple(v - d for v, d in zip(self.lo, m)), tuple(v + d for v, d in zip(self.hi, m)))

    def corners(self) -> np.ndarray:
        """The 8 corner indices (8, 3)."""
        return _corners(np.asarray(self.lo, float), np.asarray(self.hi, float))

    def physical_bounds(self, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned LPS bounds (mm) of the voxel centres of the box corners."""
        pts = geometry.index_to_physical(self.corners())
        return pts.min(axis=0), pts.max(axis=0)

    def as_list(self) -> list[int]:
        return [*self.lo, *self.hi]


def _corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], dtype=float)


def box_from_physical(lo_mm: np.ndarray, hi_mm: np.ndarray, geometry: Geometry) -> Box3D:
    """The voxel box (nearest voxel centres) of ``geometry`` spanning an axis-aligned LPS box in mm."""
    lo, hi = np.minimum(lo_mm, hi_mm), np.maximum(lo_mm, hi_mm)
    idx = geometry.physical_to_index(_corners(lo, hi))
    return Box3D(tuple(np.floor(idx.min(0) + 0.5).astype(int)), tuple(np.floor(idx.max(0) + 0.5).astype(int)))
