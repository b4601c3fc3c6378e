"""Template-to-query registration that survives different fields of view.

A plain moments initialiser puts the centres of mass of two scans together, which is wrong as soon as one
scan covers the head and neck and the other the neck and chest.  Here the start is found by sliding the
template's craniocaudal profile (body area and bone area per slice) along the query's, then centring the
body in-plane over the overlapping slices; an affine registration restricted to the body, coarse to fine,
takes it from there (optionally followed by a B-spline).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..volumes.resample import resample_to_spacing
from ..volumes.volume import Volume, orient

log = logging.getLogger(__name__)
BODY_HU = -500.0
BONE_HU = 200.0
#: the template and query profiles must overlap over at least this fraction of the shorter one
MIN_OVERLAP = 0.3


@dataclass
class RegistrationImage:
    image: sitk.Image  # clipped intensities at the registration spacing
    mask: sitk.Image  # body
    z_mm: np.ndarray  # LPS z of each slice of the LPS-oriented profile
    profile: np.ndarray  # (n_slices, 3): body, bone and enclosed-air areas (cm^2) per slice
    body_xy: np.ndarray  # (n_slices, 2): body centroid (mm) per slice, NaN where no body


def registration_image(volume: Volume, spacing: float) -> RegistrationImage:
    low = resample_to_spacing(volume.with_array(volume.array.astype(np.float32)), spacing)
    arr = low.array
    is_ct = arr.min() < -500
    lo, hi = (-1000.0, 1500.0) if is_ct else tuple(np.percentile(arr, (0.5, 99.5)))
    clipped = low.with_array(np.clip(arr, lo, hi).astype(np.float32))
    body_thr = BODY_HU if is_ct else float(np.percentile(arr, 30))
    body = low.with_array((arr > body_thr).astype(np.uint8))
    mask = sitk.BinaryDilate(body.to_sitk(), [2, 2, 2])
    # craniocaudal profile on the LPS-oriented grid
    lps = orient(clipped, "LPS")
    a = lps.array
    area = spacing * spacing / 100.0
    body_lps = a > body_thr
    bone_lps = a > (BONE_HU if is_ct else float(np.percentile(arr, 90)))
    # air enclosed by the body (lungs, airway) tells thorax from abdomen and neck from head
    inside = np.stack([ndimage.binary_fill_holes(m) for m in body_lps]) & ~body_lps
    profile = np.stack([body_lps.sum((1, 2)), bone_lps.sum((1, 2)), inside.sum((1, 2))], 1).astype(float) * area
    z_mm = lps.index_to_physical(np.c_[np.zeros(a.shape[0]), np.zeros(a.shape[0]), np.arange(a.shape[0])])[:, 2]
    yy, xx = np.mgrid[0:a.shape[1], 0:a.shape[2]]
    cx = np.array([xx[m].mean() if m.any() else np.nan for m in body_lps])
    cy = np.array([yy[m].mean() if m.any() else np.nan for m in body_lps])
    xy0 = lps.index_to_physical([0, 0, 0])[:2]
    body_xy = np.c_[xy0[0] + cx * spacing, xy0[1] + cy * spacing]
    return RegistrationImage(clipped.to_sitk(), mask, z_mm, profile, body_xy)


def z_shift_by_profile(template: RegistrationImage, query: RegistrationImage) -> tuple[float, float]:
    """The craniocaudal shift (mm, query z - template z) that best aligns the two slice profiles -> (shift, score).

    Normalised cross-correlation of the (body, bone) area profiles over every shift that keeps at least
    :data:`MIN_OVERLAP` of the shorter scan overlapping.  Both profiles are on LPS grids of one spacing.
    """
    t, q = template.profile, query.profile
    step = abs(template.z_mm[1] - template.z_mm[0]) if len(template.z_mm) > 1 else 1.0
    nt, nq = len(t), len(q)
    need = max(2, int(MIN_OVERLAP * min(nt, nq)))
    best, best_score = 0, -np.inf
    for s in range(-(nt - need), nq - need + 1):  # template slice i sits on query slice i + s
        i0, i1 = max(0, -s), min(nt, nq - s)
        if i1 - i0 < need:
            continue
        a, b = t[i0:i1], q[i0 + s:i1 + s]
        score = 0.0
        for c in range(a.shape[1]):
            x, y = a[:, c] - a[:, c].mean(), b[:, c] - b[:, c].mean()
            den = np.sqrt((x * x).sum() * (y * y).sum())
            score += (x * y).sum() / den if den > 0 else 0.0
        if score > best_score:
            best, best_score = s, score
    shift = query.z_mm[0] + best * step - template.z_mm[0]
    return float(shift), float(best_score / t.shape[1])


def initial_translation(template: RegistrationImage, query: RegistrationImage) -> np.ndarray:
    """Template -> query translation (mm, x y z): profile match along z, body centroids in-plane."""
    dz, _ = z_shift_by_profile(template, query)
    q_at = np.interp(template.z_mm + dz, query.z_mm, np.arange(len(query.z_mm)), left=-1, right=-1)
    pairs = [(template.body_xy[i], query.body_xy[int(round(j))]) for i, j in enumerate(q_at) if j >= 0]
    pairs = [(a, b) for a, b in pairs if np.all(np.isfinite(a)) and np.all(np.isfinite(b))]
    dxy = np.median([b - a for a, b in pairs], axis=0) if pairs else np.zeros(2)
    return np.array([dxy[0], dxy[1], dz])


def register(template: RegistrationImage, query: RegistrationImage, deformable: bool = False,
             seed: int = 0) -> sitk.Transform:
    """A transform mapping template points (mm) to query points (mm); the same inputs give the same transform.

    ITK splits the metric's and the scale estimator's sums over threads in a varying order, so two runs
    drift apart (a box one voxel off); the registration runs on one ITK thread for that reason.
    """
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        return _register(template, query, deformable, seed)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _register(template: RegistrationImage, query: RegistrationImage, deformable: bool, seed: int) -> sitk.Transform:
    fixed, moving = template.image, query.image
    translation = initial_translation(template, query)
    init = sitk.AffineTransform(3)
    # centre of rotation on the template's body, so that rotations do not swing the far end of the scan
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(template.mask)
    init.SetCenter(stats.GetCentroid(1) if stats.HasLabel(1) else fixed.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in fixed.GetSize()]))
    init.SetTranslation(tuple(float(v) for v in translation))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed=seed + 1)  # SimpleITK's seed 0 means 'wall clock'
    reg.SetMetricFixedMask(template.mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=100,
                                                 relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SetInitialTransform(init, inPlace=False)
    try:
        affine = reg.Execute(fixed, moving)
    except RuntimeError as exc:
        # too little overlap for the metric (a thin slab against a long scan): the profile-matched start
        # is the best estimate there is; keep it rather than failing the whole query
        log.warning("affine registration failed (%s); using the profile-matched translation",
                    str(exc).strip().splitlines()[-1][:160])
        return init
    if not deformable:
        return affine
    bspline = sitk.BSplineTransformInitializer(fixed, [4, 4, 4])
    reg2 = sitk.ImageRegistrationMethod()
    reg2.SetMetricAsMattesMutualInformation(32)
    reg2.SetMetricSamplingStrategy(reg2.RANDOM)
    reg2.SetMetricSamplingPercentage(0.2, seed=seed + 1)
    reg2.SetMetricFixedMask(template.mask)
    reg2.SetOptimizerAsLBFGSB(numberOfIterations=50)
    reg2.SetMovingInitialTransform(affine)
    reg2.SetInitialTransform(bspline, inPlace=True)
    reg2.SetInterpolator(sitk.sitkLinear)
    reg2.Execute(fixed, moving)
    return sitk.CompositeTransform([affine, bspline])
