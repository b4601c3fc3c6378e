"""Updates of one target from the axial slices an annotator corrected: the corrected slices are kept voxel for
voxel, the others follow them.

- :func:`fill_between`: ITK's morphological contour interpolation between the corrected slices (Albu et al. 2008,
  Zukić et al.; the algorithm of 3D Slicer's "Fill between slices"); slices beyond them are left as they are.
- :func:`refuse`: the atlas's warped template masks (:mod:`.votes`) fused again at the vote level whose mask agrees
  best with the corrected slices (each template can also be re-weighed by its Dice with them: :data:`AGREEMENT_POWER`);
  where the learning loop's network took part in the mask, its probability is one of the votes, so the combination
  is re-thresholded (issue 33's item 3).
- :func:`shift_toward`: each corrected slice's change (the difference of the in-plane signed distances of the
  annotator's contour and the fused one) carried to the slices between corrected ones by linear interpolation,
  and faded out beyond the last corrected slice over :data:`REACH_MM`.
- :func:`grow_from_seeds`: the boundary re-decided on the image by FastGrowCut (3D Slicer's "Grow from seeds").

Which one runs for a target (``auto``: :func:`auto_method`) was chosen with the simulated annotator on train-pats
and reported on validation-pats (``benchmarks/correction.py``, docs/benchmarks.md section 9).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..options import CorrectionUpdate
from ..volumes.boxes import Box3D
from .constraints import keep_corrected
from .votes import TemplateVotes

#: a template's weight in the re-fusion is its fusion weight times (its Dice with the corrected slices) ** power.
#: Measured with the simulated annotator on 8 train-pats (slices drawn, mean of 5 organs, refuse+shift): power 0
#: 6.6, 4: 7.3, 8: 6.7 -- re-weighing the templates did not pay on these 5.4 mm grids; the re-chosen level does
AGREEMENT_POWER = 0
#: thresholds tried for the re-fused vote; the one whose mask agrees best with the corrected slices wins
THRESHOLDS = np.round(np.arange(0.1, 0.91, 0.05), 2)
#: how far (mm, along z) a corrected slice's change reaches beyond the last corrected slice, fading linearly
REACH_MM = 10.0
#: signed distances are clipped here (mm): far from both contours, a slice's distance says nothing more
SDF_CLIP_MM = 30.0


@dataclass
class UpdateResult:
    mask: np.ndarray  # bool [z, y, x]: the target after the update, corrected slices as drawn
    method: str  # what ran (a CorrectionUpdate value)
    changed: int  # voxels that changed
    seconds: float
    network: bool = False  # the re-fusion held the learning loop's network's probability (votes.with_probability)

    def describe(self) -> str:
        """What ran, as the dock and the CLI say it."""
        return f"{self.method} (atlas + network)" if self.network else self.method


def _corrected(corrected: Sequence[int], depth: int) -> list[int]:
    zs = sorted({int(z) for z in corrected})
    bad = [z for z in zs if not 0 <= z < depth]
    if bad:
        raise ValueError(f"corrected slice(s) {bad} outside the volume's {depth} axial slices")
    return zs


def _roi(*masks: np.ndarray, margin: int = 8) -> tuple[slice, slice]:
    """In-plane (y, x) slices around everything any mask holds, + ``margin`` pixels."""
    union = np.zeros(masks[0].shape[1:], bool)
    for m in masks:
        union |= m.any(axis=0)
    if not union.any():
        return slice(0, 0), slice(0, 0)
    ys, xs = np.nonzero(union)
    h, w = union.shape
    return (slice(max(0, ys.min() - margin), min(h, ys.max() + margin + 1)),
            slice(max(0, xs.min() - margin), min(w, xs.max() + margin + 1)))


def load_itk_filters() -> None:
    """Load the ITK filters the updates use: ITK's Python wrapping loads lazily (about 10 s on the first use in a
    process on a 2-core CPU, then instant), so the annotator calls this in the background before the first update."""
    import itk

    itk.MorphologicalContourInterpolator, itk.FastGrowCut  # noqa: B018 (the attribute access is the load)


def fill_between(mask: np.ndarray, corrected: Sequence[int]) -> np.ndarray:
    """The slices between the first and last non-empty corrected slice, interpolated from the corrected ones alone
    (ITK morphological contour interpolation); every other slice as in ``mask``."""
    import itk  # ITK's Python wrapping loads lazily and slowly: only when an update runs

    mask = np.asarray(mask, bool)
    zs = [z for z in _corrected(corrected, mask.shape[0]) if mask[z].any()]
    out = mask.copy()
    if len(zs) < 2:
        return out
    ys, xs = _roi(mask[zs], margin=2)
    z0, z1 = zs[0], zs[-1]
    given = np.zeros((z1 - z0 + 1, ys.stop - ys.start, xs.stop - xs.start), np.uint8)
    for z in zs:
        given[z - z0] = mask[z, ys, xs]
    # one thread: the filter's threads race (itk-morphologicalcontourinterpolation 2.1.2 corrupted the heap within a
    # few calls in one process: "malloc(): unsorted double linked list corrupted"; its own work-unit setting is not
    # enough: the filter takes ITK's global pool as it is built); the slab between corrected slices is small
    pool = itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads()
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)
    try:
        interpolator = itk.MorphologicalContourInterpolator.New(itk.image_from_array(given))
        interpolator.SetAxis(2)  # ITK's axis 2 is the array's axis 0: axial slices
        interpolator.SetNumberOfWorkUnits(1)
        interpolator.Update()
        filled = itk.array_from_image(interpolator.GetOutput()).astype(bool)
    finally:
        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(pool)
    out[z0:z1 + 1] = False
    out[z0:z1 + 1, ys, xs] = filled
    for z in zs:
        out[z] = mask[z]
    return out


def refuse(votes: TemplateVotes, mask: np.ndarray, corrected: Sequence[int]) -> np.ndarray:
    """The atlas re-fused on the whole grid: each template weighed by its Dice with the corrected slices of
    ``mask``, at the threshold whose fusion agrees best with them (the stored one on a tie)."""
    mask = np.asarray(mask, bool)
    zs = _corrected(corrected, mask.shape[0])
    box = votes.box
    z_lo = box.lo[2]
    inside = [z - z_lo for z in zs if box.lo[2] <= z <= box.hi[2]]
    truth = mask[box.slices][inside]  # the corrected slices within the votes' box
    outside = sum(int(mask[z].sum()) for z in zs) - int(truth.sum())  # corrected voxels no template reaches

    def dice(pred: np.ndarray) -> float:
        total = int(pred.sum()) + int(truth.sum()) + outside
        return 2.0 * float((pred & truth).sum()) / total if total else 1.0

    weights = votes.weights.copy()
    if inside:
        agreement = np.array([dice(w[inside] >= 0.5) for w in votes.warped])
        weights = weights * np.maximum(agreement, 1e-3) ** AGREEMENT_POWER
    vote = votes.vote(weights)
    threshold = votes.threshold
    if inside:
        scores = {float(t): dice(vote[inside] >= t) for t in THRESHOLDS}
        best = max(scores.values())
        if scores.get(round(threshold, 2), -1.0) < best:
            threshold = min((t for t, s in scores.items() if s == best), key=lambda t: abs(t - votes.threshold))
    out = np.zeros(mask.shape, bool)
    out[box.slices] = vote >= threshold
    return out


def grow_from_seeds(image: np.ndarray, mask: np.ndarray, zs: list[int], spacing_zyx: Sequence[float],
                    band: int = 1) -> np.ndarray:
    """The boundary of ``mask`` re-decided on the image: FastGrowCut (3D Slicer's "Grow from seeds", the
    ``itk-growcut`` module) from the mask's inside eroded by ``band`` in-plane pixels (target seeds) and its
    outside dilated by ``band`` + 1 (background seeds); the corrected slices are seeds as drawn."""
    import itk

    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask.copy()
    plane = np.zeros((1, 3, 3), bool)
    plane[0] = True
    inside = ndi.binary_erosion(mask, plane, iterations=band)
    outside = ~ndi.binary_dilation(mask, plane, iterations=band + 1)
    seeds = np.zeros(mask.shape, np.uint8)
    seeds[outside] = 2
    seeds[inside] = 1
    for z in zs:
        seeds[z] = np.where(mask[z], 1, 2)
    img = itk.image_from_array(np.ascontiguousarray(image, np.float32))
    img.SetSpacing([float(v) for v in spacing_zyx[::-1]])
    seed_img = itk.image_from_array(seeds)
    seed_img.SetSpacing([float(v) for v in spacing_zyx[::-1]])
    grow = itk.FastGrowCut[itk.Image[itk.F, 3], itk.Image[itk.UC, 3]].New()
    grow.SetInput(img)
    grow.SetSeedImage(seed_img)
    grow.Update()
    return itk.array_from_image(grow.GetOutput()) == 1


def _sdf(mask2d: np.ndarray, spacing_yx: np.ndarray) -> np.ndarray:
    """In-plane signed distance (mm; negative inside), clipped to :data:`SDF_CLIP_MM`."""
    if not mask2d.any():
        return np.full(mask2d.shape, SDF_CLIP_MM, np.float32)
    if mask2d.all():
        return np.full(mask2d.shape, -SDF_CLIP_MM, np.float32)
    out = ndi.distance_transform_edt(~mask2d, sampling=spacing_yx) - ndi.distance_transform_edt(mask2d,
                                                                                                sampling=spacing_yx)
    return np.clip(out, -SDF_CLIP_MM, SDF_CLIP_MM).astype(np.float32)


def shift_toward(base: np.ndarray, mask: np.ndarray, corrected: Sequence[int], spacing_zyx: Sequence[float],
                 reach_mm: float | None = None) -> np.ndarray:
    """``base`` with each corrected slice's change (``mask`` against ``base`` there, as signed distances) carried
    to the other slices: interpolated between two corrected slices, faded over ``reach_mm`` beyond the last."""
    base, mask = np.asarray(base, bool), np.asarray(mask, bool)
    zs = _corrected(corrected, mask.shape[0])
    out = base.copy()
    if not zs:
        return out
    ys, xs = _roi(base, mask[zs], margin=int(np.ceil(SDF_CLIP_MM / min(spacing_zyx[1:]))) // 2)
    if ys.stop <= ys.start:
        return out
    sp = np.asarray(spacing_zyx[1:], float)
    residual = {z: _sdf(mask[z, ys, xs], sp) - _sdf(base[z, ys, xs], sp) for z in zs}
    reach = max(1, int(round((reach_mm or REACH_MM) / float(spacing_zyx[0]))))
    for z in range(max(0, zs[0] - reach), min(mask.shape[0], zs[-1] + reach + 1)):
        if z in residual:
            out[z] = mask[z]
            continue
        below = [c for c in zs if c < z]
        above = [c for c in zs if c > z]
        if below and above:
            a, b = below[-1], above[0]
            t = (z - a) / (b - a)
            r = (1 - t) * residual[a] + t * residual[b]
        else:
            c = below[-1] if below else above[0]
            fade = 1.0 - abs(z - c) / (reach + 1)
            r = fade * residual[c]
        out[z, ys, xs] = (_sdf(base[z, ys, xs], sp) + r) < 0
    return out


def _candidate(method: CorrectionUpdate, mask: np.ndarray, zs: list[int], votes: TemplateVotes | None,
               spacing_zyx: Sequence[float], image: np.ndarray | None) -> np.ndarray:
    if method == CorrectionUpdate.FILL:
        return fill_between(mask, zs)
    if method == CorrectionUpdate.REFUSE:
        return refuse(votes, mask, zs)
    shifted = shift_toward(refuse(votes, mask, zs), mask, zs, spacing_zyx)
    if method == CorrectionUpdate.REFUSE_SHIFT or image is None:
        return shifted
    return grow_from_seeds(image, shifted, zs, spacing_zyx)


def auto_method(target: str | None) -> CorrectionUpdate:
    """What measured best for the target's class on train-pats (docs/benchmarks.md, section 9): bones on CT, whose
    edges the image shows, grow their boundary from seeds after the shift (mandible 2.2 slices against 4.2); soft
    tissue does not (brainstem 10.0 against 5.5, parotids 7-9 against 4-6)."""
    from ..segmentation.propagate import bone_target

    return CorrectionUpdate.REFUSE_SHIFT_GROW if target and bone_target(target) else CorrectionUpdate.REFUSE_SHIFT


def update_target(mask: np.ndarray, corrected: Sequence[int], method: str | CorrectionUpdate,
                  votes: TemplateVotes | None = None, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0),
                  target: str | None = None, image: np.ndarray | None = None) -> UpdateResult:
    """One target's update from its corrected slices: the new mask (corrected slices exactly as in ``mask``).

    ``auto`` takes what measured best for the target's class (:func:`auto_method`).  An update that needs the
    atlas's votes falls back to ``fill`` when the target has none (the network or SAM made it), one that needs the
    ``image`` (grow) to the shift without it; the result says which ran.  A target in one piece keeps its largest
    piece outside the corrected slices.  The work is done on the box around the target and its votes.
    """
    t0 = time.perf_counter()
    mask = np.asarray(mask, bool)
    zs = _corrected(corrected, mask.shape[0])
    region = _work_box(mask, votes, spacing_zyx)
    if region is None:
        return UpdateResult(mask.copy(), "none", 0, time.perf_counter() - t0)
    sl = region.slices
    inner = _update_local(mask[sl], [z - region.lo[2] for z in zs], method,
                          None if votes is None else votes.moved(region.lo), spacing_zyx, target,
                          None if image is None else np.asarray(image)[sl])
    new = mask.copy()
    new[sl] = inner.mask  # corrected slices as drawn: _update_local keeps them
    return UpdateResult(new, inner.method, int((new != mask).sum()), time.perf_counter() - t0, inner.network)


def _work_box(mask: np.ndarray, votes: TemplateVotes | None, spacing_zyx: Sequence[float]) -> Box3D | None:
    """Where an update can change anything: the target and its votes, + the shift's reach and margins (never less
    than the votes' box, which the re-fusion indexes)."""
    if not mask.any() and votes is None:
        return None
    boxes = ([Box3D.from_mask(mask)] if mask.any() else []) + ([votes.box] if votes is not None else [])
    lo = [min(b.lo[a] for b in boxes) for a in range(3)]
    hi = [max(b.hi[a] for b in boxes) for a in range(3)]
    reach = int(np.ceil((REACH_MM + SDF_CLIP_MM) / float(spacing_zyx[0])))
    margin = int(np.ceil(SDF_CLIP_MM / float(min(spacing_zyx[1:])))) + 2
    size = mask.shape[::-1]
    return Box3D(tuple(lo), tuple(hi)).grow((margin, margin, reach)).clip(size)


def _update_local(mask: np.ndarray, zs: list[int], method: str | CorrectionUpdate, votes: TemplateVotes | None,
                  spacing_zyx: Sequence[float], target: str | None, image: np.ndarray | None) -> UpdateResult:
    from ..segmentation.propagate import clean_mask, single_part_target

    method = CorrectionUpdate(method)
    if method == CorrectionUpdate.AUTO:
        method = auto_method(target)
    if method != CorrectionUpdate.FILL and votes is None:
        method = CorrectionUpdate.FILL
    if method == CorrectionUpdate.REFUSE_SHIFT_GROW and image is None:
        method = CorrectionUpdate.REFUSE_SHIFT
    # corrected slices as drawn before the largest piece is taken (they may join its parts) and after it
    new = keep_corrected(mask, _candidate(method, mask, zs, votes, spacing_zyx, image), zs)
    if target is None or single_part_target(target):
        new = keep_corrected(mask, clean_mask(new, True, fill_holes=False), zs)
    return UpdateResult(new, method.value, 0, 0.0, method != CorrectionUpdate.FILL and bool(votes.network))


def correct_label_map(label_map: np.ndarray, value: int, corrected: Sequence[int], method: str | CorrectionUpdate,
                      votes: TemplateVotes | None, spacing_zyx: Sequence[float], target: str | None = None,
                      keep: Iterable[int] = (), image: np.ndarray | None = None
                      ) -> tuple[np.ndarray, UpdateResult]:
    """The label map with target ``value`` updated from its ``corrected`` slices: the update only turns background
    into the target or the target into background (other labels, locked ones among them, are never painted over),
    and every slice in ``keep`` (every target's corrected slices) stays as it was."""
    label_map = np.asarray(label_map)
    result = update_target(label_map == value, corrected, method, votes, spacing_zyx, target, image)
    new = label_map.copy()
    new[result.mask & (label_map == 0)] = value
    new[~result.mask & (label_map == value)] = 0
    new = keep_corrected(label_map, new, [*keep, *corrected])
    result.changed = int((new != label_map).sum())
    return new, result
