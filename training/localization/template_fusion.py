"""Several templates' estimates of one target fused into one box, with a spread, flags and a status.

Each template gives six extreme points.  Every box face (the x of the right and left points, the y of
the anterior and posterior ones, the z of the inferior and superior ones) is the median of the
templates' values for it after dropping outliers, and faces that a template cannot know (its organ is
cut by its own scan edge) are left out.  The spread of the kept values is the confidence a user sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..volumes.boxes import Box3D, box_from_physical
from ..volumes.identity_cache import IdentityCache
from ..volumes.volume import Geometry, Volume
from .extreme_points import POINT_NAMES

#: a face value this far (mm) from the median is an outlier when the templates otherwise agree
MIN_OUTLIER_MM = 10.0
MAD_TO_SIGMA = 1.4826

EDGE_VOXELS = 2
FOUND, PARTLY_OUTSIDE, NOT_FOUND = "found", "partly outside the scan", "not found"


@dataclass
class FusedPoints:
    points_mm: np.ndarray  # (6, 3) LPS
    spread_mm: float  # median over faces of the robust spread (1.4826 MAD) across templates
    outliers: int  # face values dropped as outliers
    unknown_faces: list[str] = field(default_factory=list)  # faces every template had cut by its scan edge


def face_value(points: np.ndarray, face: int) -> float:
    return float(points[face, face // 2])


_CONTENT = IdentityCache(32)


def content_box(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """First and last voxel index (x, y, z) of the scanned content: planes that hold one constant value
    (the -1000 HU fill outside a cropped or padded field of view) are not part of the scan."""
    return _CONTENT.get((volume,), lambda: _content_box(volume.array))


def _content_box(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = [], []
    for axis in (2, 1, 0):  # x, y, z of the [z, y, x] array
        others = tuple(a for a in range(3) if a != axis)
        varying = np.nonzero(arr.max(axis=others) != arr.min(axis=others))[0]
        lo.append(int(varying[0]) if varying.size else 0)
        hi.append(int(varying[-1]) if varying.size else arr.shape[axis] - 1)
    return np.array(lo), np.array(hi)


def edge_faces(points_mm: np.ndarray, volume: Volume | Geometry) -> np.ndarray:
    """(6,) True where the point lies on its template's scan edge: a voxel further out leaves the scanned
    content (the volume, or its non-constant part when the scan was padded).

    Such a face is where the scan stopped, not where the organ ends.
    """
    geometry = volume.geometry if isinstance(volume, Volume) else volume
    lo, hi = content_box(volume) if isinstance(volume, Volume) else (np.zeros(3), np.array(geometry.size) - 1)
    out = np.zeros(6, bool)
    for f in range(6):
        probe = np.array(points_mm[f], float)
        # two voxels of margin: contours commonly stop one slice short of where the scan does
        step = EDGE_VOXELS * geometry.spacing[int(np.argmax(np.abs(geometry.direction_matrix[f // 2])))]
        probe[f // 2] += step if f % 2 else -step
        idx = geometry.physical_to_index(probe)
        out[f] = bool(np.any(idx < lo - 0.5) or np.any(idx > hi + 0.5))
    return out


def fuse_points(estimates: list[np.ndarray], usable: list[np.ndarray] | None = None) -> FusedPoints:
    """Per-face robust median of several (6, 3) estimates; ``usable`` (6,) masks faces per estimate."""
    pts = np.stack([np.asarray(e, float) for e in estimates])  # (K, 6, 3)
    ok = np.ones(pts.shape[:2], bool) if usable is None else np.stack(usable)
    fused = np.median(pts, axis=0)
    spreads, outliers, unknown = [], 0, []
    for f in range(6):
        vals = pts[:, f, f // 2]
        if ok[:, f].any():
            vals = vals[ok[:, f]]
        else:
            unknown.append(POINT_NAMES[f])
        med = np.median(vals)
        mad = np.median(np.abs(vals - med))
        keep = np.abs(vals - med) <= max(3 * MAD_TO_SIGMA * mad, MIN_OUTLIER_MM)
        outliers += int((~keep).sum())
        fused[f, f // 2] = np.median(vals[keep])
        spreads.append(MAD_TO_SIGMA * float(np.median(np.abs(vals[keep] - fused[f, f // 2]))))
    return FusedPoints(fused, float(np.median(spreads)), outliers, unknown)


def box_status(points_mm: np.ndarray, geometry: Geometry) -> tuple[Box3D | None, str]:
    """The query box of six points clipped to the scan, and whether the target is found there.

    A box entirely outside the scan is ``not found``; one whose faces reach a voxel or more beyond it is
    ``partly outside the scan`` (the clipped box is still returned).
    """
    pts = np.asarray(points_mm, float)
    lo, hi = np.array([pts[2 * a, a] for a in range(3)]), np.array([pts[2 * a + 1, a] for a in range(3)])
    box = box_from_physical(lo, hi, geometry)
    try:
        clipped = box.clip(geometry.size)
    except ValueError:
        return None, NOT_FOUND
    return clipped, FOUND if clipped == box else PARTLY_OUTSIDE
