"""The atlas's per-template warped masks of one target on one query, kept so a correction can re-fuse them.

The localizer warps every chosen template's mask into the query and votes (``localize._fuse_masks``); re-weighing
those votes by how well each template agrees with the slices an annotator corrected costs milliseconds, a new
registration tens of seconds.  They are stored beside a run's masks as ``.votes/<case>.npz`` (uint8, on the tight
box where any template votes), read back by ``medlsam correct`` and the annotator's "Update the rest".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..volumes.atomic import atomic_path
from ..volumes.boxes import Box3D

VOTES_DIR = ".votes"


@dataclass
class TemplateVotes:
    """Each template's warped mask of one target (``warped[k]`` in [0, 1] on ``box``) and its fusion weight."""

    box: Box3D
    warped: np.ndarray  # (K, z, y, x) float32 in [0, 1]
    weights: np.ndarray  # (K,) the fusion's fit weights
    threshold: float  # the share of the weighted votes that makes a voxel the target

    def vote(self, weights: np.ndarray | None = None) -> np.ndarray:
        """The weighted vote in [0, 1] on ``box`` (the fusion's own weights by default)."""
        w = self.weights if weights is None else np.asarray(weights, np.float64)
        return np.tensordot(w / max(float(w.sum()), 1e-12), self.warped, axes=1).astype(np.float32)

    def moved(self, origin: tuple[int, int, int]) -> "TemplateVotes":
        """The same votes on a crop of the grid whose first voxel (x, y, z) is ``origin``."""
        o = np.asarray(origin)
        return TemplateVotes(Box3D(tuple(np.asarray(self.box.lo) - o), tuple(np.asarray(self.box.hi) - o)),
                             self.warped, self.weights, self.threshold)

    def tight(self) -> "TemplateVotes":
        """The same votes on the smallest box where any template votes (what is stored)."""
        if not self.warped.any():
            return self
        inner = Box3D.from_mask(self.warped.max(0) > 0)
        lo = tuple(a + b for a, b in zip(self.box.lo, inner.lo))
        hi = tuple(a + b for a, b in zip(self.box.lo, inner.hi))
        return TemplateVotes(Box3D(lo, hi), self.warped[(slice(None), *inner.slices)], self.weights, self.threshold)


def votes_path(out_dir: Path, case: str) -> Path:
    return Path(out_dir) / VOTES_DIR / f"{case}.npz"


def save_votes(votes: dict[str, TemplateVotes], path: Path) -> Path:
    """Every target's votes in one compressed file, written atomically."""
    arrays: dict[str, np.ndarray] = {}
    for i, (name, v) in enumerate(sorted(votes.items())):
        v = v.tight()
        arrays[f"t{i}_name"] = np.array(name)
        arrays[f"t{i}_box"] = np.array(v.box.as_list(), np.int32)
        arrays[f"t{i}_warped"] = np.round(np.clip(v.warped, 0, 1) * 255).astype(np.uint8)
        arrays[f"t{i}_weights"] = np.asarray(v.weights, np.float64)
        arrays[f"t{i}_threshold"] = np.array(v.threshold)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_votes(path: Path) -> dict[str, TemplateVotes]:
    """The votes saved by :func:`save_votes` ({} when there is no file: the run fused no masks)."""
    if not Path(path).is_file():
        return {}
    out = {}
    with np.load(path, allow_pickle=False) as data:
        for i in range(sum(1 for k in data.files if k.endswith("_name"))):
            box = [int(v) for v in data[f"t{i}_box"]]
            out[str(data[f"t{i}_name"])] = TemplateVotes(
                Box3D(tuple(box[:3]), tuple(box[3:])), data[f"t{i}_warped"].astype(np.float32) / 255.0,
                data[f"t{i}_weights"].astype(np.float64), float(data[f"t{i}_threshold"]))
    return out
