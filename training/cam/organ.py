"""Organ seeding from a box, not from slice tags: organs of one region share their slices, so a tag says nothing
about where an organ is in-plane (docs/benchmarks.md section 5). The localizer's box (or the registration's warped
mask) gives a prior inside the box, the annotator's ticks limit the slices, and LiteMedSAM segments each ticked
slice from the prior's box there."""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from scipy import ndimage

from ..errors import MedLSAMError
from ..options import TargetClass
from ..segmentation.propagate import PropagationConfig, VolumeSegmenter, ellipsoid_in_box, mask_box_2d
from ..volumes.boxes import Box3D
from ..volumes.volume import Volume, orient
from .gse import largest_component
from .tags import PRESENT


class Prior(StrEnum):
    """What fills the box before LiteMedSAM: the warped template masks where the localizer gives them, else an
    ellipsoid inscribed in the box (soft tissue) or a bone threshold inside it (bone)."""

    WARPED = "warped"
    ELLIPSOID = "ellipsoid"
    BONE = "bone"


#: targets whose box holds mostly other tissue around a bone (a U-shaped mandible's box holds the tongue)
BONE_TARGETS = frozenset({"mandible", "bone", "skull", "spine", "vertebrae", "femur_left", "femur_right"})
BONE_HU = 250.0


def box_prior(image: np.ndarray, box_mask: np.ndarray, kind: Prior) -> np.ndarray:
    """A prior mask inside ``box_mask`` (the box as a boolean array on the image's grid, axes z, y, x)."""
    if not box_mask.any():
        return np.zeros(box_mask.shape, bool)
    if kind == Prior.BONE:
        return largest_component((image >= BONE_HU) & box_mask)
    if kind != Prior.ELLIPSOID:
        raise ValueError(f"no box prior of kind {kind!r}")
    return ellipsoid_in_box(box_mask.shape, Box3D.from_mask(box_mask)) & box_mask


#: name parts of targets seeded from slice ticks (the CAM method's ground): radiotherapy target volumes and lesions
LESION_WORDS = ("ptv", "ctv", "gtv", "itv", "lesion", "tumour", "tumor", "metasta", "nodule", "cyst", "mass")


def target_class(name: str) -> TargetClass:
    """The seeding a target takes by its name: lesions and target volumes from ticks, anything else (an organ) from
    a box (docs/benchmarks.md section 5: a tag says nothing about where an organ is in-plane)."""
    low = name.lower()
    return TargetClass.LESION if any(word in low for word in LESION_WORDS) else TargetClass.ORGAN


def prior_kind(target: str, warped: np.ndarray | None) -> Prior:
    if warped is not None and warped.any():
        return Prior.WARPED
    return Prior.BONE if target.lower() in BONE_TARGETS else Prior.ELLIPSOID


def slice_boxes(prior: np.ndarray, ticks: np.ndarray | None = None, margin: int = 1) -> dict[int, np.ndarray]:
    """One 2D box (x0, y0, x1, y1) per slice: the prior's box on each of its slices, limited to the slices ticked
    present when ``ticks`` is given; a ticked slice the prior misses takes the box of the prior's nearest slice."""
    on = np.flatnonzero(prior.reshape(prior.shape[0], -1).any(1))
    if on.size == 0:
        return {}
    wanted = on if ticks is None else np.flatnonzero(np.asarray(ticks) == PRESENT)
    boxes = {}
    for z in wanted:
        src = int(on[np.argmin(np.abs(on - z))])
        boxes[int(z)] = mask_box_2d(prior[src], margin)
    return boxes


def seed_organ(vs: VolumeSegmenter, prior: np.ndarray, ticks: np.ndarray | None = None) -> np.ndarray:
    """LiteMedSAM (or the project's segmenter) from the prior's per-slice boxes; canonical grid of ``vs``."""
    boxes = slice_boxes(prior, ticks)
    if not boxes:
        return np.zeros(prior.shape, bool)
    mask = vs.segment_slices(boxes, PropagationConfig(mode="mask"))
    # SAM on a slice can spill outside the organ; keep its 3D component and close one-slice gaps
    return largest_component(ndimage.binary_closing(mask, np.ones((3, 1, 1), bool)) | mask)


def seed_organ_volume(volume: Volume, target: str, *, segmenter=None, warped: np.ndarray | None = None,
                      box: Box3D | None = None, own_ticks: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, Prior]:
    """(seeded mask, prior) on the volume's own grid, and the prior's kind: from the warped/fused template mask
    (``warped``, the volume's grid) when given, else from ``box`` (voxel indices of the volume) filled by the
    target's in-box prior; ``own_ticks`` (slice tags in the volume's own slice indices) limit the slices.

    The seed is the prior on the ticked slices; with ``segmenter`` LiteMedSAM re-segments each ticked slice from the
    prior's box there instead (on OpenKBP's 4 mm CT it measured worse: docs/benchmarks.md section 5.2)."""
    from .run import on_volume_grid, tags_to_canonical

    if warped is not None and warped.shape != volume.array.shape:
        raise MedLSAMError(f"{volume.name}: the prior mask has shape {warped.shape}, the image {volume.array.shape}")
    if warped is not None and not warped.any():
        raise MedLSAMError(f"{volume.name}: the prior mask of {target} is empty; give a box instead")
    if warped is None and box is None:
        raise MedLSAMError(f"{volume.name}: give the localizer's mask or a box for {target}")
    kind = prior_kind(target, warped)
    canonical = orient(volume, "LPS")
    on_canonical = lambda a: orient(volume.with_array(a.astype(np.uint8)), "LPS").array.astype(bool)  # noqa: E731
    if warped is not None:
        prior = on_canonical(warped)
    else:
        full = np.zeros(volume.array.shape, bool)
        full[box.slices] = True
        prior = box_prior(canonical.array, on_canonical(full), kind)
    ticks = tags_to_canonical(volume, own_ticks) if own_ticks is not None else None
    if ticks is not None and not np.any(ticks == PRESENT):
        raise MedLSAMError(f"{volume.name}/{target}: no slice ticked present")
    if segmenter is not None:
        mask = seed_organ(VolumeSegmenter(volume, segmenter), prior, ticks)
    if ticks is not None:
        prior = prior & (ticks == PRESENT)[:, None, None]
    if segmenter is None:
        mask = prior
    back = lambda a: on_volume_grid(canonical, a.astype(np.uint8), volume).array.astype(bool)  # noqa: E731
    return back(mask), back(prior), kind


__all__ = ["BONE_TARGETS", "Prior", "box_prior", "prior_kind", "seed_organ", "seed_organ_volume", "slice_boxes"]
