"""Six extreme points of a target on a template volume, and their JSON file format.

The six points are the target's extremes along the patient axes, in this fixed order::

    right (min x), left (max x), anterior (min y), posterior (max y), inferior (min z), superior (max z)

(LPS: x grows to the patient's left, y to posterior, z to superior).  Each point is stored both in
physical coordinates (mm, LPS) and in the template's voxel indices (x, y, z), with the template's
path and geometry, so a file is self-describing and can be checked against its volume.

JSON layout (``version`` 1)::

    {"format": "medlsam-extreme-points", "version": 1,
     "target": "liver", "label": 5,
     "template": {"path": "...", "size": [...], "spacing": [...], "origin": [...], "direction": [...]},
     "points": [{"name": "right", "mm": [x, y, z], "index": [i, j, k]}, ...],   # six, in the order above
     "slabs": [[six points], ...],   # optional: per z-slab extreme points (SPL mode), from a mask
     "mask": {"path": "...", "label": 5}}   # optional: the label map the points came from (label fusion)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmptyLabelError, MedLSAMError
from ..volumes.atomic import write_json_atomic
from ..volumes.volume import Geometry, Volume, orient

FORMAT = "medlsam-extreme-points"
VERSION = 1
POINT_NAMES = ("right", "left", "anterior", "posterior", "inferior", "superior")
#: Guided prompts for the annotator, in click order.
POINT_PROMPTS = {
    "right": "the point of the {t} furthest to the patient's RIGHT",
    "left": "the point of the {t} furthest to the patient's LEFT",
    "anterior": "the most ANTERIOR point of the {t} (towards the front of the body: face, chest)",
    "posterior": "the most POSTERIOR point of the {t} (towards the back)",
    "inferior": "the most INFERIOR point of the {t} (towards the feet)",
    "superior": "the most SUPERIOR point of the {t} (towards the head)",
}


class ExtremePointsError(MedLSAMError, ValueError):
    """Extreme points that are missing, outside their volume, or inconsistent."""


def template_volume_path(json_path: str | os.PathLike[str], template_path: str) -> Path:
    """Where an extreme-points file's template volume is: a relative path is read from the file's own folder
    first (files written by the annotator, portable with their project), then from the working folder."""
    path = Path(template_path)
    if path.is_absolute():
        return path
    beside = Path(json_path).parent / path
    return beside if beside.exists() else path


def validate_points(points_mm: np.ndarray, geometry: Geometry | None = None, where: str = "extreme points"
                    ) -> np.ndarray:
    """Check six LPS points: finite, min < max on each axis, inside the volume when its geometry is known."""
    pts = np.asarray(points_mm, dtype=float)
    if pts.shape != (6, 3):
        raise ExtremePointsError(f"{where}: six points of three coordinates are needed, got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ExtremePointsError(f"{where}: points contain NaN or infinite coordinates")
    for axis, (lo_name, hi_name) in enumerate((("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))):
        lo, hi = pts[2 * axis, axis], pts[2 * axis + 1, axis]
        if not lo < hi:
            raise ExtremePointsError(
                f"{where}: the {lo_name} point ({lo:.1f} mm) must lie before the {hi_name} point ({hi:.1f} mm) "
                f"along {'xyz'[axis]}; were two points swapped?")
    if geometry is not None:
        for name, p in zip(POINT_NAMES, pts):
            idx = geometry.physical_to_index(p)
            if not geometry.contains_index(idx):
                raise ExtremePointsError(f"{where}: the {name} point {np.round(p, 1).tolist()} mm (voxel "
                                         f"{np.round(idx, 1).tolist()}) lies outside the volume of size "
                                         f"{geometry.size}")
    return pts


def point_conflict(points_mm: list[np.ndarray | None], which: int, point_mm: np.ndarray,
                   tolerance_mm: float = 0.5) -> str | None:
    """Why a new extreme point cannot stand beside those already set (None when it can).

    Each extreme point is the target's most right / left / anterior / posterior / inferior / superior voxel, so
    it cannot coincide with another point, and along its own axis no other point may lie beyond it (the left point
    left of the right one, every point between the superior and inferior ones, ...).
    """
    new = np.asarray(point_mm, float)
    for other, p in enumerate(points_mm):
        if p is None or other == which:
            continue
        p = np.asarray(p, float)
        if np.linalg.norm(p - new) < 2 * tolerance_mm:
            return f"the {POINT_NAMES[which]} point falls on the {POINT_NAMES[other]} point"
        # q is extreme along f's axis: r may not lie beyond it; the new point passing one set before is said first
        for f, q, r in ((other, p, new), (which, new, p)):
            axis, low = f // 2, f % 2 == 0
            if (r[axis] < q[axis] - tolerance_mm) if low else (r[axis] > q[axis] + tolerance_mm):
                side = {0: ("right", "left"), 1: ("anterior", "posterior"), 2: ("inferior", "superior")}[axis]
                beyond = side[0] if low else side[1]
                new_name, old_name = POINT_NAMES[which], POINT_NAMES[other]
                if f == other:  # the new point passes a point set before, which bounds the target that way
                    return (f"the {new_name} point would lie further {beyond} than the {old_name} point, which marks "
                            f"the target's {EXTREME_WORDS[old_name]} voxel: click nearer, or clear the {old_name} "
                            "point first")
                return (f"the {old_name} point (set before) lies further {beyond} than this {new_name} point, which "
                        f"must mark the target's {EXTREME_WORDS[new_name]} voxel: click further {beyond}, or clear "
                        f"the {old_name} point first")
    return None


#: how a message names the voxel each point marks
EXTREME_WORDS = {"right": "rightmost", "left": "leftmost", "anterior": "most anterior (front)",
                 "posterior": "most posterior (back)", "inferior": "lowest (towards the feet)",
                 "superior": "highest (towards the head)"}


@dataclass
class ExtremePoints:
    """A target's six extreme points on one template (LPS mm), optionally per z-slab."""

    target: str
    label: int | None
    points_mm: np.ndarray
    template_path: str | None = None
    template_geometry: Geometry | None = None
    slabs_mm: list[np.ndarray] = field(default_factory=list)
    #: the template's label map holding the target (value ``mask_label``): its warped copies are fused in queries
    mask_path: str | None = None
    mask_label: int | None = None

    def __post_init__(self) -> None:
        where = f"{self.target} on {self.template_path or 'template'}"
        self.points_mm = validate_points(self.points_mm, self.template_geometry, where)
        self.slabs_mm = [validate_points(s, self.template_geometry, f"{where} (slab {i})")
                         for i, s in enumerate(self.slabs_mm)]

    def indices(self) -> np.ndarray:
        if self.template_geometry is None:
            raise ExtremePointsError(f"{self.target}: no template geometry to convert points to voxels")
        return self.template_geometry.physical_to_index(self.points_mm)

    # --- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        def pts(arr: np.ndarray) -> list[dict[str, Any]]:
            idx = self.template_geometry.physical_to_index(arr) if self.template_geometry else [None] * 6
            return [{"name": n, "mm": [round(float(v), 4) for v in p],
                     "index": None if i is None else [round(float(v), 3) for v in i]}
                    for n, p, i in zip(POINT_NAMES, arr, idx)]

        g = self.template_geometry
        return {
            "format": FORMAT, "version": VERSION, "target": self.target, "label": self.label,
            "template": None if g is None else {"path": self.template_path, "size": list(g.size),
                                                "spacing": list(g.spacing), "origin": list(g.origin),
                                                "direction": list(g.direction)},
            "points": pts(self.points_mm),
            "slabs": [pts(s) for s in self.slabs_mm],
            **({"mask": {"path": self.mask_path, "label": self.mask_label}} if self.mask_path else {}),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_json_atomic(self.to_json(), path)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "extreme points") -> "ExtremePoints":
        if data.get("format") != FORMAT:
            raise ExtremePointsError(f"{where}: not a {FORMAT} file")
        if data.get("version") != VERSION:
            raise ExtremePointsError(f"{where}: version {data.get('version')} is not supported (expected {VERSION})")
        tpl = data.get("template")
        if not tpl or not tpl.get("spacing"):
            raise ExtremePointsError(f"{where}: the template has no geometry (spacing/origin/direction)")
        geometry = Geometry(tuple(tpl["size"]), tuple(tpl["spacing"]), tuple(tpl["origin"]), tuple(tpl["direction"]))

        def pts(items: list[dict[str, Any]]) -> np.ndarray:
            if len(items) != 6:
                raise ExtremePointsError(f"{where}: six points are needed, the file has {len(items)}")
            names = [p.get("name") for p in items]
            if names != list(POINT_NAMES):
                raise ExtremePointsError(f"{where}: points must be named {list(POINT_NAMES)} in that order, "
                                         f"got {names}")
            return np.array([p["mm"] for p in items], dtype=float)

        mask = data.get("mask") or {}
        if mask and not (isinstance(mask, dict) and isinstance(mask.get("path"), str)
                         and isinstance(mask.get("label"), int)):
            raise ExtremePointsError(f"{where}: 'mask' must be {{\"path\": ..., \"label\": <integer>}}")
        return cls(data.get("target", "target"), data.get("label"), pts(data.get("points", [])), tpl.get("path"),
                   geometry, [pts(s) for s in data.get("slabs", [])], mask.get("path"), mask.get("label"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ExtremePoints":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ExtremePointsError(f"{path}: not an extreme-points JSON file (binary content: an image or a "
                                     "label map? make one with 'medlsam extreme-points')") from exc
        except IsADirectoryError as exc:
            raise ExtremePointsError(f"{path}: a folder, not an extreme-points JSON file") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise ExtremePointsError(f"{path}: not a readable extreme-points JSON file ({exc})") from exc
        if not isinstance(data, dict):
            raise ExtremePointsError(f"{path}: not an extreme-points JSON file (it holds a {type(data).__name__})")
        return cls.from_json(data, str(path))

    @classmethod
    def from_index_points(cls, target: str, label: int | None, volume: Volume, indices: np.ndarray) -> "ExtremePoints":
        """Six clicked voxel indices (x, y, z) on ``volume`` in POINT_NAMES order."""
        idx = np.asarray(indices, dtype=float)
        if idx.shape != (6, 3):
            raise ExtremePointsError(f"{target}: six points are needed, got {len(idx)}")
        if not all(volume.geometry.contains_index(i) for i in idx):
            raise ExtremePointsError(f"{target}: a clicked point lies outside {volume.name} of size {volume.size}")
        return cls(target, label, volume.index_to_physical(idx), str(volume.path) if volume.path else None,
                   volume.geometry)


def _mask_extremes_lps(mask_lps: np.ndarray) -> np.ndarray:
    """Extreme points (LPS-oriented array [z, y, x]) as indices (x, y, z): the middle voxel of each box face."""
    nz = np.nonzero(mask_lps)
    if not nz[0].size:
        raise EmptyLabelError("cannot take extreme points of an empty mask")
    out = []
    for axis_xyz in range(3):
        arr_axis = 2 - axis_xyz
        for extreme in (nz[arr_axis].min(), nz[arr_axis].max()):
            on_face = nz[arr_axis] == extreme
            face = np.stack([a[on_face] for a in nz], axis=1)  # (n, 3) in [z, y, x]
            order = np.lexsort(face.T[::-1])
            zyx = face[order[len(order) // 2]]
            out.append(zyx[::-1].astype(float))
    return np.array(out)


def extreme_points_from_mask(target: str, label: int, image: Volume, label_map: Volume,
                             n_slabs: int = 0) -> ExtremePoints:
    """The six extreme points of ``label`` in ``label_map`` (on ``image``'s grid); optional z-slabs."""
    mask = label_map.with_array((label_map.array == label).astype(np.uint8))
    if not mask.array.any():
        raise EmptyLabelError(f"{label_map.name}: label {label} ({target}) is absent")
    lps = orient(mask, "LPS")
    arr = lps.array.astype(bool)
    points = lps.index_to_physical(_mask_extremes_lps(arr))
    slabs = []
    if n_slabs > 1:
        zs = np.nonzero(arr.any(axis=(1, 2)))[0]
        edges = np.linspace(zs.min(), zs.max() + 1, n_slabs + 1).round().astype(int)
        for a, b in zip(edges[:-1], edges[1:]):
            slab = np.zeros_like(arr)
            slab[a:b] = arr[a:b]
            if slab.any():
                try:
                    slabs.append(validate_points(lps.index_to_physical(_mask_extremes_lps(slab))))
                except ExtremePointsError:
                    continue  # a one-slice-thin slab has no extent along z
    # absolute (not resolved: a symlink stays as the user made it), so the file works from any working folder
    return ExtremePoints(target, label, points, os.path.abspath(image.path) if image.path else None, image.geometry,
                         slabs, os.path.abspath(label_map.path) if label_map.path else None, int(label))
