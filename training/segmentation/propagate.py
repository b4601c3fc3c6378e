"""From 3D boxes to a 3D mask: one SAM prompt per axial slice.

Modes (MedLSAM's names where it has them):
    * ``wpl``  -- the box's xy on every slice of its z-range (whole-patch localization).
    * ``spl``  -- several z sub-boxes, each prompting its own slices (sub-patch localization); pass the
                  sub-boxes, e.g. from the localizer's split mode.
    * ``mask`` -- start on the central slice with the box, then on each neighbour prompt with the box of
                  the previous slice's mask grown by a margin, stopping where the mask vanishes.

Work happens on the volume re-indexed to LPS (axial slices in radiological view, as SAM-family models
were trained); masks are mapped back to the volume's own grid exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import GeometryMismatchError
from ..options import PropagationMode, choose, listed
from ..progress import ProgressFn
from ..volumes.boxes import Box3D, box_from_physical
from ..volumes.io import align_label_to_image
from ..volumes.volume import Volume, orient
from .embedding_cache import SliceEmbeddings
from .segmenters import Prediction, Segmenter
from .slice_prep import Window, scale_to_unit, window_for_modality

log = logging.getLogger(__name__)
#: how a localized target becomes a mask: training/options.py, with each mode's help
Mode = PropagationMode


@dataclass
class PropagationConfig:
    mode: Mode = PropagationMode.WPL
    margin_px: int = 3  # slice pixels added around every 2D box (SAM models were trained on loose boxes)
    min_area_px: int = 10  # 'mask' mode stops where the mask falls below this
    min_score: float = 0.0  # slices whose predicted IoU is lower are left empty
    z_extend: int = 0  # 'mask' mode may go this many slices beyond the box's z-range
    #: keep only the largest 3D component: True, False, or None to decide per target by its name
    #: (:func:`single_part_target`), so that bowel, paired organs under one label and lesions keep every part
    largest_component: bool | None = None
    fill_holes: bool = True

    def __post_init__(self) -> None:
        self.mode = choose(self.mode, PropagationMode, "propagation mode")


def box_2d(box: Box3D, margin: int = 0) -> np.ndarray:
    """[x0, y0, x1, y1] of a 3D box's xy extent, grown by ``margin`` pixels."""
    return np.array([box.lo[0] - margin, box.lo[1] - margin, box.hi[0] + margin, box.hi[1] + margin])


def mask_box_2d(mask: np.ndarray, margin: int = 0) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    if not ys.size:
        return None
    return np.array([xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin])


def transform_box(box: Box3D, src: Volume, dst: Volume) -> Box3D:
    """Re-express a voxel box of ``src`` in the voxel indices of ``dst`` through physical space."""
    lo, hi = box.physical_bounds(src.geometry)
    return box_from_physical(lo, hi, dst.geometry)


#: words of target names made of several separate parts in 3D
MULTI_PART_WORDS = ("bowel", "colon", "intestin", "duoden", "lesion", "tumo", "metasta", "nodule", "lymph", "cyst",
                    "rib", "vertebrae", "kidneys", "lungs", "parotids", "glands", "vessels", "bones", "muscles",
                    "stone", "calcif", "polyp", "fragment")


def single_part_target(name: str) -> bool:
    """Whether a target is one connected organ (liver, spleen) rather than several parts (bowel, lesions)."""
    low = name.lower()
    return not any(word in low for word in MULTI_PART_WORDS)


#: words that start a token of a bone's name: from a box alone (no template mask to fuse) such a target on CT is a
#: threshold, not a SAM prompt (mandible on train-pats from its exact box: Dice 0.76 against SAM's 0.33; section 1)
BONE_WORDS = ("mandible", "bone", "skull", "vertebra", "rib", "femur", "humerus", "scapula", "clavic", "sternum",
              "sacrum", "hip", "pelvi", "spine", "tibia", "fibula", "radius", "ulna", "patella", "maxilla")
#: the CT threshold of bone for that path (HU), chosen on train-pats mandibles among 150, 250 and 350
BONE_HU = 250.0


def bone_target(name: str) -> bool:
    """Whether a target is a bone by its name (``rib_left_3``, ``vertebrae_C2``, ``mandible``; not ``spinal_cord``)."""
    tokens = [t for t in "".join(c if c.isalpha() else " " for c in name.lower()).split() if t]
    return any(tok.startswith(word) for tok in tokens for word in BONE_WORDS)


def bone_in_box(volume: Volume, box: Box3D, target: str, hu: float = BONE_HU) -> np.ndarray:
    """A bone from its box on CT: voxels above ``hu`` inside it, the largest piece for a one-piece bone, holes
    (marrow) filled slice by slice."""
    mask = np.zeros(volume.array.shape, bool)
    mask[box.slices] = volume.array[box.slices] > hu
    return clean_mask(mask, single_part_target(target), fill_holes=True)


def ellipsoid_in_box(shape_zyx: Sequence[int], box: Box3D) -> np.ndarray:
    """The ellipsoid inscribed in ``box`` (voxel indices, inclusive) on a grid of ``shape_zyx``: the shape prior of a
    soft-tissue organ known only by its box.  From a template's own six points (an exact box) it is a better start than
    LiteMedSAM on 4 mm head-and-neck CT, where an organ is 8-15 pixels across (docs/benchmarks.md, sections 5.2, 13)."""
    mask = np.zeros(tuple(shape_zyx), bool)
    lo, hi = np.asarray(box.lo[::-1]), np.asarray(box.hi[::-1]) + 1  # z, y, x; exclusive ends
    grids = np.ogrid[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
    r = sum((((g + 0.5) - (a + b) / 2) / ((b - a) / 2)) ** 2 for g, a, b in zip(grids, lo, hi))
    mask[box.slices] = r <= 1.0
    return mask


def for_target(config: "PropagationConfig", target: str) -> "PropagationConfig":
    """The config with the largest-component choice made for this target when it was left automatic."""
    if config.largest_component is not None:
        return config
    return replace(config, largest_component=single_part_target(target))


def clean_mask(mask: np.ndarray, largest_component: bool | None = True, fill_holes: bool = True) -> np.ndarray:
    """Keep the largest 3D connected component and fill holes slice by slice."""
    if largest_component is not False and mask.any():  # None (undecided): one organ, as before
        labels, n = ndimage.label(mask)
        if n > 1:
            sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
            mask = labels == (1 + int(np.argmax(sizes)))
    if fill_holes:
        mask = np.stack([ndimage.binary_fill_holes(s) for s in mask])
    return mask


class VolumeSegmenter:
    """One volume ready for SAM prompting: canonical orientation, window, cached embeddings."""

    def __init__(self, volume: Volume, segmenter: Segmenter, window: Window | None = None,
                 cache_dir: Path | None = None, batch_size: int = 4):
        volume.require_finite()
        self.volume = volume
        self.canonical = orient(volume, "LPS")
        self.window = window or window_for_modality(volume.meta.get("modality"))
        arr = self.canonical.array
        unit = scale_to_unit(arr, self.window.bounds(arr))
        self.embeddings = SliceEmbeddings(unit, segmenter, cache_dir, batch_size, extra_key=self.window.key())
        self.segmenter = segmenter

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.canonical.array.shape

    def to_canonical(self, box: Box3D) -> Box3D:
        return transform_box(box, self.volume, self.canonical).clip(self.canonical.size)

    def to_volume_grid(self, canonical_mask: np.ndarray) -> np.ndarray:
        """A mask on the canonical grid -> the same mask on the volume's own grid (exact re-indexing)."""
        out = align_label_to_image(self.canonical.with_array(canonical_mask.astype(np.uint8)), self.volume)
        return out.array.astype(bool)

    def segment_slice(self, z: int, box: np.ndarray | None = None, points: np.ndarray | None = None,
                      point_labels: np.ndarray | None = None, mask_prompt: np.ndarray | None = None) -> Prediction:
        """Decode one canonical slice from prompts in its pixel coordinates (x, y)."""
        if box is not None:
            h, w = self.shape[1:]
            box = np.clip(np.asarray(box), 0, [w - 1, h - 1, w - 1, h - 1])
        return self.segmenter.decode(self.embeddings.get(z), self.embeddings.frame, box=box, points=points,
                                     point_labels=point_labels, mask_prompt=mask_prompt)

    def segment_slices(self, prompts: dict[int, np.ndarray], config: PropagationConfig,
                       progress: ProgressFn | None = None, cancelled: Callable[[], bool] | None = None) -> np.ndarray:
        """One box per listed slice (canonical indices) -> boolean canonical mask."""
        mask = np.zeros(self.shape, bool)
        self.embeddings.ensure(prompts, progress, cancelled)
        for i, (z, box) in enumerate(sorted(prompts.items())):
            if cancelled and cancelled():
                raise InterruptedError("cancelled while decoding slices")
            pred = self.segment_slice(z, box)
            if pred.score >= config.min_score:
                mask[z] |= pred.mask
            if progress:
                progress(i + 1, len(prompts), "segmenting slices")
        return mask

    def propagate(self, boxes: Sequence[Box3D], config: PropagationConfig | None = None,
                  progress: ProgressFn | None = None, cancelled: Callable[[], bool] | None = None) -> np.ndarray:
        """3D mask (on the volume's own grid) of the target inside ``boxes`` (volume voxel indices)."""
        config = config or PropagationConfig()
        if not boxes:
            raise ValueError("no box given")
        boxes = [self.to_canonical(b) for b in boxes]
        if config.mode in ("wpl", "spl"):
            if config.mode == "wpl" and len(boxes) > 1:
                boxes = [Box3D(tuple(np.min([b.lo for b in boxes], 0)), tuple(np.max([b.hi for b in boxes], 0)))]
            prompts: dict[int, np.ndarray] = {}
            for b in boxes:
                for z in range(b.lo[2], b.hi[2] + 1):
                    xy = box_2d(b, config.margin_px)
                    prompts[z] = xy if z not in prompts else np.r_[np.minimum(prompts[z][:2], xy[:2]),
                                                                     np.maximum(prompts[z][2:], xy[2:])]
            mask = self.segment_slices(prompts, config, progress, cancelled)
        elif config.mode in ("mask", "atlas"):  # 'atlas' without template masks: SAM from the box
            mask = self._propagate_from_centre(boxes, config, progress, cancelled)
        else:
            raise ValueError(f"unknown propagation mode {config.mode!r} ({listed(PropagationMode)})")
        mask = clean_mask(mask, config.largest_component, config.fill_holes)
        return self.to_volume_grid(mask)

    def _propagate_from_centre(self, boxes: list[Box3D], config: PropagationConfig,
                               progress: ProgressFn | None, cancelled: Callable[[], bool] | None) -> np.ndarray:
        union = Box3D(tuple(np.min([b.lo for b in boxes], 0)), tuple(np.max([b.hi for b in boxes], 0)))
        centre = (union.lo[2] + union.hi[2]) // 2
        start_box = next((b for b in boxes if b.lo[2] <= centre <= b.hi[2]), union)
        z_lo, z_hi = max(0, union.lo[2] - config.z_extend), min(self.shape[0] - 1, union.hi[2] + config.z_extend)
        self.embeddings.ensure(range(z_lo, z_hi + 1), progress, cancelled)
        seed = self.segment_slice(centre, box_2d(start_box, config.margin_px)).mask
        return self._propagate_from(centre, seed, z_lo, z_hi, union, config, progress, cancelled)

    def _propagate_from(self, z0: int, seed: np.ndarray, z_lo: int, z_hi: int, bounds: Box3D | None,
                        config: PropagationConfig, progress: ProgressFn | None = None,
                        cancelled: Callable[[], bool] | None = None) -> np.ndarray:
        """Mask-guided propagation up and down from slice ``z0`` whose mask is ``seed`` (canonical grid).

        Each slice is prompted with the previous slice's mask box grown by the margin; a box may not
        wander more than a quarter of ``bounds``' size outside it; propagation stops where the mask
        vanishes or the model's own score falls below ``min_score``.
        """
        h, w = self.shape[1:]
        if bounds is not None:
            slack = np.array([(bounds.hi[0] - bounds.lo[0]) // 4, (bounds.hi[1] - bounds.lo[1]) // 4])
            limit = np.r_[np.array(bounds.lo[:2]) - slack, np.array(bounds.hi[:2]) + slack]
        else:
            limit = np.array([0, 0, w - 1, h - 1])
        mask = np.zeros(self.shape, bool)
        mask[z0] = seed
        done, total = 1, z_hi - z_lo + 1
        for step in (1, -1):
            prev, z = seed, z0 + step
            while z_lo <= z <= z_hi:
                if cancelled and cancelled():
                    raise InterruptedError("cancelled while propagating")
                box = mask_box_2d(prev, config.margin_px)
                if box is None or prev.sum() < config.min_area_px:
                    break
                box = np.r_[np.maximum(box[:2], limit[:2]), np.minimum(box[2:], limit[2:])]
                pred = self.segment_slice(z, box)
                if pred.score < config.min_score:
                    break
                mask[z] = prev = pred.mask
                done += 1
                if progress:
                    progress(done, total, "propagating")
                z += step
        return mask

    # --- prompting on the volume's own slices (napari review) ----------------------------------
    def _slice_map(self, z: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Canonical slice index and, for every pixel (y, x) of the volume's slice z, its canonical (y, x)."""
        ny, nx = self.volume.array.shape[1:]
        yy, xx = np.mgrid[0:ny, 0:nx]
        idx = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, z)], 1).astype(float)
        canon = np.round(self.canonical.physical_to_index(self.volume.index_to_physical(idx))).astype(int)
        zs = np.unique(canon[:, 2])
        if zs.size != 1:
            raise ValueError(f"{self.volume.name}: slice {z} is not an axial slice of the volume; "
                             "prompt on an axial view")
        return int(zs[0]), canon[:, 1].reshape(ny, nx), canon[:, 0].reshape(ny, nx)

    def segment_volume_slice(self, z: int, box: np.ndarray | None = None, points: np.ndarray | None = None,
                             point_labels: np.ndarray | None = None) -> np.ndarray:
        """Re-segment slice ``z`` of the volume's own array from a box [x0, y0, x1, y1] and/or points (x, y)."""
        kz, cy, cx = self._slice_map(z)
        h, w = cy.shape
        to_c = lambda x, y: (cx[y, x], cy[y, x])  # noqa: E731
        cbox = None
        if box is not None:
            # a box dragged past the slice's edge is clipped to it (a negative index would wrap around)
            x0, x1 = np.clip(np.round([min(box[0], box[2]), max(box[0], box[2])]), 0, w - 1).astype(int)
            y0, y1 = np.clip(np.round([min(box[1], box[3]), max(box[1], box[3])]), 0, h - 1).astype(int)
            if x0 == x1 or y0 == y1:
                raise ValueError(f"the box {np.round(box, 1).tolist()} lies outside the {w}x{h} slice")
            (ax, ay), (bx, by) = to_c(x0, y0), to_c(x1, y1)
            cbox = np.array([min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)])
        cpts = None
        if points is not None:
            pts = np.round(np.asarray(points, float)).astype(int)
            inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
            if not inside.all():
                log.warning("%d prompt point(s) outside the slice ignored", int((~inside).sum()))
            if inside.any():
                cpts = np.array([to_c(x, y) for x, y in pts[inside]])
                point_labels = None if point_labels is None else np.asarray(point_labels)[inside]
        if cbox is None and cpts is None:
            raise ValueError("no prompt inside the slice")
        pred = self.segment_slice(kz, cbox, cpts, point_labels)
        return pred.mask[cy, cx]

    def repropagate_from_slice(self, z: int, slice_mask: np.ndarray, z_range: tuple[int, int] | None = None,
                               config: PropagationConfig | None = None, progress: ProgressFn | None = None,
                               cancelled: Callable[[], bool] | None = None) -> np.ndarray:
        """Mask-guided propagation from a corrected slice of the volume -> 3D mask on the volume's grid."""
        config = config or PropagationConfig(mode="mask")
        kz, cy, cx = self._slice_map(z)
        seed = np.zeros(self.shape[1:], bool)
        seed[cy[slice_mask], cx[slice_mask]] = True
        lo, hi = (0, self.shape[0] - 1) if z_range is None else sorted(
            self._slice_map(int(np.clip(v, 0, self.volume.array.shape[0] - 1)))[0] for v in z_range)
        self.embeddings.ensure(range(lo, hi + 1), progress, cancelled)
        mask = self._propagate_from(kz, seed, lo, hi, None, config, progress, cancelled)
        return self.to_volume_grid(clean_mask(mask, config.largest_component, config.fill_holes))


def segment_targets(volume_segmenter: VolumeSegmenter, targets: dict[int, Sequence[Box3D]],
                    config: PropagationConfig | None = None, progress: ProgressFn | None = None,
                    cancelled: Callable[[], bool] | None = None) -> np.ndarray:
    """Several targets into one label map on the volume's grid; later targets win overlaps.

    Slices shared by several targets are embedded once (the embedding cache is per slice).
    """
    shape = volume_segmenter.volume.array.shape
    labels = np.zeros(shape, np.uint16 if max(targets, default=0) > 255 else np.uint8)
    for value, boxes in targets.items():
        mask = volume_segmenter.propagate(boxes, config, progress, cancelled)
        if mask.shape != shape:
            raise GeometryMismatchError("internal: mask grid differs from the volume grid")
        labels[mask] = value
    return labels
