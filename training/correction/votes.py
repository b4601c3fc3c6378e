"""The atlas's per-template warped masks of one target on one query, kept so a correction can re-fuse them.

The localizer warps every chosen template's mask into the query and votes (``localize._fuse_masks``); re-weighing
those votes by how well each template agrees with the slices an annotator corrected costs milliseconds, a new
registration tens of seconds.  Where the learning loop's network took part in the mask (``pipeline.combine``), its
probability is one more voter (:func:`with_probability`), so that a correction re-thresholds the combination the
annotator saw, not the atlas alone.  A mask no template made (LiteMedSAM, the box prior, the bone threshold) is kept as
its own one voter (:func:`own_votes`), so that an update shifts it as it shifts the atlas's.  They are stored
beside a run's masks as ``.votes/<case>.npz`` (uint8, on the tight box where any template votes), read back by
``medlsam correct`` and the annotator's "Update the rest".
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
    network: bool = False  # the last voter is the learning loop's network (its probability), not a template
    #: the one voter is the run's own mask (LiteMedSAM, the box prior, the bone threshold: no template was warped), so
    #: that an update shifts that mask toward the corrected slices instead of filling between them (section 13)
    own: bool = False

    def vote(self, weights: np.ndarray | None = None) -> np.ndarray:
        """The weighted vote in [0, 1] on ``box`` (the fusion's own weights by default)."""
        w = self.weights if weights is None else np.asarray(weights, np.float64)
        return np.tensordot(w / max(float(w.sum()), 1e-12), self.warped, axes=1).astype(np.float32)

    def moved(self, origin: tuple[int, int, int]) -> "TemplateVotes":
        """The same votes on a crop of the grid whose first voxel (x, y, z) is ``origin``."""
        o = np.asarray(origin)
        return TemplateVotes(Box3D(tuple(np.asarray(self.box.lo) - o), tuple(np.asarray(self.box.hi) - o)),
                             self.warped, self.weights, self.threshold, self.network, self.own)

    def tight(self) -> "TemplateVotes":
        """The same votes on the smallest box where any template votes (what is stored)."""
        if not self.warped.any():
            return self
        inner = Box3D.from_mask(self.warped.max(0) > 0)
        lo = tuple(a + b for a, b in zip(self.box.lo, inner.lo))
        hi = tuple(a + b for a, b in zip(self.box.lo, inner.hi))
        return TemplateVotes(Box3D(lo, hi), self.warped[(slice(None), *inner.slices)], self.weights, self.threshold,
                             self.network, self.own)


#: the stored box holds every voxel where the network's probability reaches this: beyond the atlas's votes a lower
#: probability could not make a voxel the target at any re-fusion threshold (the lowest is 0.1)
MIN_PROBABILITY = 0.05


def with_probability(votes: TemplateVotes | None, probability: np.ndarray, weight: float,
                     threshold: float) -> TemplateVotes | None:
    """``votes`` with another source's ``probability`` [z, y, x] on the query's grid (the learning loop's network)
    as one more voter of share ``weight``, so that :meth:`TemplateVotes.vote` is the pipeline's combination
    (``pipeline.combine``: weight * probability + (1 - weight) * the atlas vote) and ``threshold`` its threshold;
    the probability alone without votes or at weight 1.  None when neither holds anything."""
    probability = np.asarray(probability, np.float32)
    boxes = [votes.box] if votes is not None else []
    if (probability >= MIN_PROBABILITY).any():
        boxes.append(Box3D.from_mask(probability >= MIN_PROBABILITY))
    if not boxes:
        return None
    box = Box3D(tuple(min(b.lo[a] for b in boxes) for a in range(3)),
                tuple(max(b.hi[a] for b in boxes) for a in range(3)))
    learned = probability[box.slices][None]
    if votes is None or weight >= 1.0:  # the probability alone (a learned mix may give the atlas no share)
        return TemplateVotes(box, learned.astype(np.float32), np.ones(1), threshold, network=True)
    warped = np.zeros((len(votes.warped), *box.shape[::-1]), np.float32)
    inner = tuple(slice(a - b, c - b + 1) for a, b, c in zip(votes.box.lo[::-1], box.lo[::-1], votes.box.hi[::-1]))
    warped[(slice(None), *inner)] = votes.warped
    total = float(np.sum(votes.weights))
    weights = np.append(np.asarray(votes.weights, np.float64), total * weight / (1.0 - weight))
    return TemplateVotes(box, np.concatenate([warped, learned.astype(np.float32)]), weights, threshold, network=True)


def own_votes(mask: np.ndarray) -> TemplateVotes | None:
    """A mask no template's warped mask made (LiteMedSAM, the box prior, the bone threshold) as its own one voter, on
    its box; None for an empty mask."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return None
    box = Box3D.from_mask(mask)
    return TemplateVotes(box, mask[box.slices][None].astype(np.float32), np.ones(1), 0.5, own=True)


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
        arrays[f"t{i}_network"] = np.array(v.network)
        arrays[f"t{i}_own"] = np.array(v.own)
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
                data[f"t{i}_weights"].astype(np.float64), float(data[f"t{i}_threshold"]),
                bool(data[f"t{i}_network"]) if f"t{i}_network" in data.files else False,
                bool(data[f"t{i}_own"]) if f"t{i}_own" in data.files else False)
    return out
