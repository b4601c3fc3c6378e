"""Template-to-query registration for few-shot localization and label fusion (multi-atlas), on the CPU.

Every template is registered to the query once per query, for all its targets together, on a coarse
(4 mm) grid aligned with the LPS axes:

1. **Translation search**: masked FFT normalised cross-correlation of the template's *region* (the box of
   its targets' extreme points + a margin) over the whole query, so that scans of different coverage
   (head only, neck and chest, ...) meet where their anatomy does, not where their centres are.
2. **Regional affine** from that start, metric restricted to the region mapped into the query.
3. **Deformable** (diffeomorphic demons, two resolutions) on the same region, then, per target, an affine and
   demons on the target's own neighbourhood (:func:`refine_target`): what measured best on train-pats queries
   (``docs/benchmarks.md``, section 1).

The transform maps *query* points to *template* points, which is what warping a template's masks onto the
query grid needs; template points are carried to the query by inverting it.  Registrations run under
:func:`one_itk_thread` with a fixed sampling seed, so the same inputs give the same result.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import fft as sfft

from ..volumes.volume import Volume
from .template_fusion import content_box

log = logging.getLogger(__name__)

#: the coarse grid every registration runs on (mm, isotropic)
SPACING_MM = 4.0
#: CT intensities are clipped to this window: soft tissue, fat and bone stay apart, air and metal saturate
CT_WINDOW = (-300.0, 1200.0)
#: margin (mm) around the targets' box that makes a template's region
REGION_MARGIN_MM = 30.0
#: a search placement must overlap the query's scanned content on this fraction of what the query can hold of
#: the template's region
MIN_SEARCH_OVERLAP = 0.5


@dataclass
class AtlasImage:
    """A volume on the coarse LPS-aligned grid: clipped intensities and where the scan has content."""

    image: sitk.Image  # float32
    content: sitk.Image  # uint8, 1 where the scan holds data (not the constant fill of a padded field of view)
    is_ct: bool

    @property
    def array(self) -> np.ndarray:
        return sitk.GetArrayViewFromImage(self.image)

    def index_of(self, point_mm: np.ndarray) -> np.ndarray:
        """Continuous (x, y, z) index of LPS points on this identity-direction grid."""
        return (np.asarray(point_mm, float) - np.array(self.image.GetOrigin())) / np.array(self.image.GetSpacing())

    def point_of(self, index: np.ndarray) -> np.ndarray:
        return np.array(self.image.GetOrigin()) + np.asarray(index, float) * np.array(self.image.GetSpacing())


def atlas_image(volume: Volume, spacing: float = SPACING_MM) -> AtlasImage:
    """``volume`` resampled (linear) onto an identity-direction grid of ``spacing`` mm covering it."""
    src = volume.with_array(volume.array.astype(np.float32)).to_sitk()
    g = volume.geometry
    corners = np.array([[x, y, z] for x in (0, g.size[0] - 1) for y in (0, g.size[1] - 1) for z in (0, g.size[2] - 1)],
                       float)
    pts = g.index_to_physical(corners)
    lo, hi = pts.min(0), pts.max(0)
    size = [int(np.floor((b - a) / spacing)) + 1 for a, b in zip(lo, hi)]
    arr = volume.array
    is_ct = float(np.min(arr)) < -500
    lo_v, hi_v = CT_WINDOW if is_ct else tuple(float(v) for v in np.percentile(arr, (0.5, 99.5)))
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetOrigin(tuple(float(v) for v in lo))
    ref.SetSpacing((spacing,) * 3)
    image = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, lo_v - 1.0, sitk.sitkFloat32)
    # content: the box of the scanned field of view; air inside the scan is content, the constant fill of a
    # padded or cropped scan (OpenKBP: -1000 HU around the scanned box) is not (the box the fusion uses too)
    inside = np.zeros(arr.shape, np.uint8)
    if float(np.min(arr)) != float(np.max(arr)):  # a constant image holds no scan at all (it never votes)
        lo_x, hi_x = content_box(volume)
        inside[lo_x[2]:hi_x[2] + 1, lo_x[1]:hi_x[1] + 1, lo_x[0]:hi_x[0] + 1] = 1
    inside_img = sitk.GetImageFromArray(inside)
    inside_img.CopyInformation(src)
    content = sitk.Resample(inside_img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    image = sitk.Clamp(image, sitk.sitkFloat32, lo_v, hi_v)
    return AtlasImage(image, content, is_ct)


def region_index_box(img: AtlasImage, lo_mm: np.ndarray, hi_mm: np.ndarray, margin_mm: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Voxel box (x, y, z inclusive) of an LPS box + margin on ``img``'s grid, clipped to it."""
    size = np.array(img.image.GetSize())
    a = np.floor(img.index_of(np.asarray(lo_mm) - margin_mm)).astype(int)
    b = np.ceil(img.index_of(np.asarray(hi_mm) + margin_mm)).astype(int)
    return np.clip(a, 0, size - 1), np.clip(b, 0, size - 1)


def crop(image: sitk.Image, lo: np.ndarray, hi: np.ndarray) -> sitk.Image:
    return sitk.RegionOfInterest(image, [int(v) for v in hi - lo + 1], [int(v) for v in lo])


class QuerySpectrum:
    """The query's FFTs that every template's search reuses (masked NCC needs three of them)."""

    def __init__(self, query: AtlasImage, region_shape_zyx: tuple[int, int, int]):
        self.query = query
        q = np.asarray(query.array, np.float32)
        m = sitk.GetArrayViewFromImage(query.content).astype(np.float32)
        self.q_shape = q.shape
        self.shape = tuple(sfft.next_fast_len(a + b - 1, real=True) for a, b in zip(q.shape, region_shape_zyx))
        nz = np.nonzero(m)
        self.content_extent = np.array([a.max() - a.min() + 1 if a.size else 0 for a in nz])  # z, y, x voxels
        f = q * m
        self.m, self.f, self.f2 = (sfft.rfftn(a, self.shape, workers=1) for a in (m, f, f * f))


def translation_search(spectrum: QuerySpectrum, template: AtlasImage, lo: np.ndarray, hi: np.ndarray
                       ) -> tuple[np.ndarray, float]:
    """Template region ``lo..hi`` (voxels) slid over the whole query -> (shift mm template->query, NCC).

    Masked FFT normalised cross-correlation (Padfield, IEEE TIP 2012): only the scanned content of both
    images counts, and a placement must overlap the query's content on :data:`MIN_SEARCH_OVERLAP` of the
    region's (or of the query's, if smaller).  Every integer shift of the coarse grid is scored at once.
    """
    sl = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo[::-1], hi[::-1]))
    r = np.asarray(template.array[sl], np.float32)
    rm = sitk.GetArrayViewFromImage(template.content)[sl].astype(np.float32)
    n_region = float(rm.sum())
    if n_region == 0:
        raise ValueError("the template region holds no scanned content")
    if any(a + b - 1 > c for a, b, c in zip(spectrum.q_shape, r.shape, spectrum.shape)):
        spectrum = QuerySpectrum(spectrum.query, r.shape)
    g = r * rm
    # correlation = irfft(FFT(query side) * conj(FFT(region side))); shift s (region index 0 on query index s)
    # lands at s modulo the padded shape
    mm, gg, g2 = (np.conj(sfft.rfftn(a, spectrum.shape, workers=1)) for a in (rm, g, g * g))
    corr = lambda a, b: sfft.irfftn(a * b, spectrum.shape, workers=1)  # noqa: E731
    n = corr(spectrum.m, mm)
    sf, sf2 = corr(spectrum.f, mm), corr(spectrum.f2, mm)
    sg, sg2 = corr(spectrum.m, gg), corr(spectrum.m, g2)
    sfg = corr(spectrum.f, gg)
    # the overlap a placement needs: a share of the most that the query's field of view can hold of the region
    # (a 4 cm slab cannot hold a 25 cm liver region, and still holds the liver)
    attainable = float(np.prod(np.minimum(r.shape, spectrum.content_extent)))
    valid = n >= max(MIN_SEARCH_OVERLAP * min(n_region, attainable), 1.0)
    n = np.where(valid, n, 1.0)
    num = sfg - sf * sg / n
    den = np.sqrt(np.clip(sf2 - sf * sf / n, 0, None) * np.clip(sg2 - sg * sg / n, 0, None))
    ncc = np.where(valid & (den > 1e-3 * n), num / np.maximum(den, 1e-12), -1.0)
    # only shifts that exist: region index 0 from -(region - 1) to (query - 1) on each axis
    for axis, (nq, nr, ns) in enumerate(zip(spectrum.q_shape, r.shape, spectrum.shape)):
        idx = np.arange(ns)
        signed = np.where(idx < nq, idx, idx - ns)
        bad = (signed < -(nr - 1)) | (signed > nq - 1)
        ncc[(slice(None),) * axis + (bad,)] = -1.0
    k = int(np.argmax(ncc))
    peak = np.array(np.unravel_index(k, ncc.shape))
    peak = np.where(peak < np.array(spectrum.q_shape), peak, peak - np.array(spectrum.shape))  # zyx, signed
    shift_mm = spectrum.query.point_of(peak[::-1]) - template.point_of(lo)
    return shift_mm, float(ncc.flat[k])


def regional_affine(fixed: sitk.Image, fixed_mask: sitk.Image, moving: sitk.Image, init: sitk.Transform,
                    seed: int = 0, sampling: float = 0.2, iterations: int = 50) -> sitk.Transform:
    """Affine ``fixed`` (query region) -> ``moving`` (template) from ``init``; correlation metric, two levels."""
    affine = sitk.AffineTransform(3)
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    start = init.Downcast() if hasattr(init, "Downcast") else init
    if isinstance(start, sitk.AffineTransform):  # a refinement: the same map, re-centred on this region
        affine.SetMatrix(start.GetMatrix())
    affine.SetCenter(centre)
    affine.SetTranslation(tuple(np.array(init.TransformPoint(centre)) - np.array(centre)))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, seed=seed + 1)  # SimpleITK's seed 0 means 'wall clock'
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SetInitialTransform(affine, inPlace=False)
    try:
        return reg.Execute(fixed, moving)
    except RuntimeError as exc:  # too little overlap for the metric: keep the search's translation
        log.warning("regional affine failed (%s); keeping the translation", str(exc).strip().splitlines()[-1][:120])
        return init


#: diffeomorphic demons: iterations per level (coarse to fine) and the field's smoothing (SD in voxels)
DEMONS_ITERATIONS = (40, 20)
DEMONS_SIGMA = 1.5


def demons(fixed: sitk.Image, moving_warped: sitk.Image, iterations: tuple[int, ...] | None = None,
           sigma: float | None = None) -> sitk.Image:
    """Diffeomorphic demons field (on ``fixed``'s grid, fixed -> moving) over two resolutions."""
    iterations, sigma = iterations or DEMONS_ITERATIONS, sigma or DEMONS_SIGMA
    field = None
    for level, its in zip(range(len(iterations) - 1, -1, -1), iterations):
        shrink = 2 ** level
        f, m = fixed, moving_warped
        if shrink > 1:  # a coarser level: both images smoothed (sigma in mm) and sampled on a shrunk grid
            sigma_mm = 0.5 * shrink * fixed.GetSpacing()[0]
            f = sitk.Shrink(sitk.SmoothingRecursiveGaussian(fixed, sigma_mm), [shrink] * 3)
            m = sitk.Resample(sitk.SmoothingRecursiveGaussian(moving_warped, sigma_mm), f)
        filt = sitk.DiffeomorphicDemonsRegistrationFilter()
        filt.SetNumberOfIterations(its)
        filt.SetStandardDeviations(sigma)
        filt.SmoothDisplacementFieldOn()
        if field is None:
            field = filt.Execute(f, m)
        else:
            init = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = filt.Execute(f, m, init)
    if field.GetSize() != fixed.GetSize():
        field = sitk.Resample(field, fixed, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
    return field


def local_ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation of two arrays (over ``mask``)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if mask is not None:
        a, b = a[mask], b[mask]
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def invert_points(transform: sitk.Transform, targets_mm: np.ndarray, start_mm: np.ndarray,
                  iterations: int = 30) -> np.ndarray:
    """Query points x with transform(x) = the template points ``targets_mm`` (fixed-point iteration).

    ``start_mm`` is a first guess (the translation search's); a smooth, near-identity deformation on top of
    an affine converges in a few steps.  The affine part is inverted exactly first.
    """
    out = []
    for y, x in zip(np.asarray(targets_mm, float), np.asarray(start_mm, float)):
        for _ in range(iterations):
            step = np.array(transform.TransformPoint(tuple(x))) - y
            x = x - step
            if np.abs(step).max() < 0.05:
                break
        out.append(x)
    return np.array(out)


@contextmanager
def one_itk_thread():
    """ITK on one thread, its warnings off, for the duration (restored after, even on error).

    Multi-threaded metric sums vary in order between runs, and the same inputs must give the same box; ITK warns
    when a metric sample falls outside the template's grid, which a region at a scan edge does by design (the
    optimiser handles it).  Set once around a whole localization, not per thread: these are process globals.
    """
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)


@dataclass
class TemplateRegistration:
    """One template registered to one query: ``transform`` maps query points (mm) to template points."""

    transform: sitk.Transform
    shift_mm: np.ndarray  # the translation search's template -> query shift
    search_ncc: float  # the search's normalised cross-correlation at that shift
    match_ncc: float  # NCC of the query region and the template warped by the affine (the confidence)
    region: sitk.Image  # the query region the registration saw (coarse grid)
    affine: sitk.Transform | None = None  # the regional affine alone (the start of per-target refinement)
    fit_ncc: float | None = None  # NCC of the region and the template through the final transform (fusion weight)


def register_template(spectrum: QuerySpectrum, template: AtlasImage, lo_mm: np.ndarray, hi_mm: np.ndarray,
                      deformable: bool = True, seed: int = 0) -> TemplateRegistration:
    """Register ``template``'s region (its targets' box ``lo_mm..hi_mm`` + margin) into the query.

    Translation search -> regional affine -> diffeomorphic demons on the region (``deformable``).  Run it under
    :func:`one_itk_thread` for results that do not depend on the machine.
    """
    query = spectrum.query
    lo, hi = region_index_box(template, lo_mm, hi_mm, REGION_MARGIN_MM)
    shift, search_ncc = translation_search(spectrum, template, lo, hi)
    qlo, qhi = region_index_box(query, template.point_of(lo) + shift, template.point_of(hi) + shift, 10.0)
    fixed, fixed_mask = crop(query.image, qlo, qhi), crop(query.content, qlo, qhi)
    init = sitk.TranslationTransform(3, tuple(float(-v) for v in shift))
    affine = regional_affine(fixed, fixed_mask, template.image, init, seed=seed)
    background = float(np.min(template.array))
    warped = sitk.Resample(template.image, fixed, affine, sitk.sitkLinear, background)
    inside = sitk.GetArrayViewFromImage(fixed_mask).astype(bool) & _inside(template, affine, fixed)
    match = local_ncc(sitk.GetArrayViewFromImage(fixed), sitk.GetArrayViewFromImage(warped), inside) \
        if inside.sum() > 64 else -1.0
    transform: sitk.Transform = affine
    if deformable and min(fixed.GetSize()) >= 8:
        field = demons(fixed, warped)
        transform = sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(
            sitk.Cast(field, sitk.sitkVectorFloat64))])
    return TemplateRegistration(transform, shift, search_ncc, match, fixed, affine)


#: margin (mm) around one target's box for its own affine + demons, after the template-wide alignment
TARGET_MARGIN_MM = 20.0


def refine_target(query: AtlasImage, template: AtlasImage, reg: TemplateRegistration, lo_mm: np.ndarray,
                  hi_mm: np.ndarray, deformable: bool = True, seed: int = 0) -> TemplateRegistration:
    """One target's own alignment: affine on its box + :data:`TARGET_MARGIN_MM` (from the regional affine), then
    demons there.  Organs move against each other between patients (head tilt, mouth open, neck flexion),
    which one transform for the whole region cannot follow.  Run it under :func:`one_itk_thread`."""
    inverse = reg.affine.GetInverse()
    corners = np.array([[x, y, z] for x in (lo_mm[0], hi_mm[0]) for y in (lo_mm[1], hi_mm[1])
                        for z in (lo_mm[2], hi_mm[2])])
    in_query = np.array([inverse.TransformPoint(tuple(c)) for c in corners])
    qlo, qhi = region_index_box(query, in_query.min(0), in_query.max(0), TARGET_MARGIN_MM)
    if np.any(qhi - qlo < 4):  # the target lands at the scan's edge: keep the regional result
        return reg
    fixed, fixed_mask = crop(query.image, qlo, qhi), crop(query.content, qlo, qhi)
    affine = regional_affine(fixed, fixed_mask, template.image, reg.affine, seed=seed)
    transform: sitk.Transform = affine
    background = float(np.min(template.array))
    if deformable and min(fixed.GetSize()) >= 8:
        warped = sitk.Resample(template.image, fixed, affine, sitk.sitkLinear, background)
        field = demons(fixed, warped)
        transform = sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(
            sitk.Cast(field, sitk.sitkVectorFloat64))])
    final = sitk.Resample(template.image, fixed, transform, sitk.sitkLinear, background)
    inside = sitk.GetArrayViewFromImage(fixed_mask).astype(bool) & _inside(template, transform, fixed)
    fit = local_ncc(sitk.GetArrayViewFromImage(fixed), sitk.GetArrayViewFromImage(final), inside) \
        if inside.sum() > 64 else 0.0
    return TemplateRegistration(transform, reg.shift_mm, reg.search_ncc, reg.match_ncc, fixed, affine, fit)


def _inside(template: AtlasImage, transform: sitk.Transform, grid: sitk.Image) -> np.ndarray:
    """Voxels of ``grid`` that ``transform`` sends inside the template's scanned content."""
    # a copy, not a view: a view of the temporary resampled image would read memory freed when it is collected
    # (the result then depended on the allocator: MALLOC_TRIM_THRESHOLD_, set by Dask's workers, changed it)
    return sitk.GetArrayFromImage(
        sitk.Resample(template.content, grid, transform, sitk.sitkNearestNeighbor, 0)).astype(bool)


def warp_mask(mask: sitk.Image, transform: sitk.Transform, reference: sitk.Image) -> np.ndarray:
    """A template's binary mask carried onto ``reference``'s grid: a [0, 1] float array [z, y, x] (linear)."""
    out = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), reference, transform, sitk.sitkLinear, 0.0,
                        sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)
