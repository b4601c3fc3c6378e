"""Few-shot localization: a target's six extreme points on templates -> its 3D box in every query.

Localizers share one interface (:class:`Localizer`):
    * ``medlam``       -- MedLAM: coarse relative-distance step, then multi-scale similarity refinement.
    * ``registration`` -- SimpleITK affine (optionally + B-spline) registration of each template to the
                          query, mapping the template's points; works for any modality.
    * ``medlam+reg``   -- registration's points refined by MedLAM's similarity step.
Points from several templates are averaged.  Boxes come back in the query's own voxel indices.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .boxes import Box3D, box_from_physical
from .errors import MedLSAMError
from .extreme_points import ExtremePoints, validate_points
from .medlam.network import MedLAMNet
from .medlam.preprocess import PATCH, PreparedCT, crop, prepare_ct
from .resample import resample_to_spacing
from .segmenters import default_device, load_state_dict
from .volume import Volume

log = logging.getLogger(__name__)
SHIPPED_WEIGHTS = "medlam_ct_3mm.pt"


class LocalizationError(MedLSAMError, ValueError):
    """A target could not be placed in a query (box outside the volume, no templates, ...)."""


@dataclass
class Template:
    """A template volume with the extreme points of one or more targets on it."""

    volume: Volume
    targets: list[ExtremePoints]


@dataclass
class LocalizedTarget:
    target: str
    label: int | None
    points_mm: np.ndarray  # (6, 3) LPS, POINT_NAMES order
    box: Box3D  # query voxel indices
    sub_boxes: list[Box3D] = field(default_factory=list)  # z-slabs (SPL), when the templates have them
    method: str = ""
    seconds: float = 0.0


def box_from_points(points_mm: np.ndarray, query: Volume) -> Box3D:
    """The query voxel box spanned by six LPS extreme points (min/max of each axis' pair of points)."""
    pts = np.asarray(points_mm, float)
    box = box_from_physical(np.array([pts[2 * a, a] for a in range(3)]), np.array([pts[2 * a + 1, a] for a in range(3)]),
                            query.geometry)
    try:
        clipped = box.clip(query.size)
    except ValueError as exc:
        raise LocalizationError(f"{query.name}: the localized box {box.as_list()} lies outside the volume "
                                f"of size {query.size}; is the target in this field of view?") from exc
    if clipped != box:
        log.warning("%s: localized box %s clipped to the volume: %s", query.name, box.as_list(), clipped.as_list())
    return clipped


def sub_boxes_in_view(slab_points_mm: list[np.ndarray], query: Volume) -> list[Box3D]:
    """SPL sub-boxes inside the query's field of view; a slab of the target beyond the scan is dropped.

    A partial scan (a slab through the abdomen) legitimately cuts an organ, so a sub-box outside it is
    expected and not an error, unlike the whole target's box.
    """
    boxes = []
    for pts in slab_points_mm:
        try:
            boxes.append(box_from_points(pts, query))
        except LocalizationError:
            log.info("%s: one SPL sub-box lies outside the field of view; dropped", query.name)
    return boxes


def _targets_by_name(templates: list[Template]) -> dict[str, list[tuple[Template, ExtremePoints]]]:
    out: dict[str, list[tuple[Template, ExtremePoints]]] = {}
    for tpl in templates:
        for ep in tpl.targets:
            out.setdefault(ep.target, []).append((tpl, ep))
    if not out:
        raise LocalizationError("no template with extreme points was given")
    return out


class Localizer(Protocol):
    name: str

    def localize(self, query: Volume, templates: list[Template]) -> list[LocalizedTarget]: ...


# --------------------------------------------------------------------------------------------------
# MedLAM
# --------------------------------------------------------------------------------------------------

def shipped_weights() -> Path:
    return Path(str(resources.files("training.medlam").joinpath("weights", SHIPPED_WEIGHTS)))


def load_medlam(weights: str | os.PathLike[str] | None = None, device: torch.device | str | None = None) -> MedLAMNet:
    state = load_state_dict(weights or shipped_weights())
    net = MedLAMNet()
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.to(device or default_device()).eval()


@dataclass
class _PointCodes:
    """Per target: mean position codes (6, 3) and summed similarity kernels per scale [(6, C, k, k, k)]."""

    codes: np.ndarray
    kernels: list[torch.Tensor]


class MedLAMLocalizer:
    name = "medlam"
    #: Template feature crop size per scale (1/4 -> 2^3, 1/2 -> 4^3), as in MedLAM.
    KERNEL_SIZES = (2, 4)

    def __init__(self, weights: str | os.PathLike[str] | None = None, device: torch.device | str | None = None,
                 coarse_crops: int = 6, refine_iterations: int = 1, seed: int = 0, batch: int = 12):
        self.device = torch.device(device) if device else default_device()
        self.net = load_medlam(weights, self.device)
        self.coarse_crops = coarse_crops
        # One MSS pass, as in MedLAM: 2 or 3 passes were no more accurate on the leave-one-out benchmark
        # (docs/benchmarks.md, section 1) and cost one more 64^3 forward per point each.
        self.refine_iterations = refine_iterations
        self.batch = batch  # 64^3 patches per forward: bounds memory (~1 GB at 12), not the result
        self.seed = seed
        self._prepared: dict[int, PreparedCT] = {}
        self._codes: dict[tuple[int, ...], _PointCodes] = {}

    def _prepare(self, volume: Volume) -> PreparedCT:
        key = id(volume)
        if key not in self._prepared:
            self._prepared[key] = prepare_ct(volume)
        return self._prepared[key]

    @torch.inference_mode()
    def _run(self, prepared: PreparedCT, centres_zyx: np.ndarray, features: bool = True):
        patches = torch.from_numpy(np.stack([crop(prepared.array, c) for c in centres_zyx]))[:, None].to(self.device)
        if not features:
            return self.net.position(patches).cpu(), None
        codes, feats = self.net(patches)
        return codes.cpu(), [f.cpu() for f in feats]

    def _template_codes(self, pairs: list[tuple[Template, ExtremePoints]], slab: int | None) -> _PointCodes:
        key = tuple(id(ep) for _, ep in pairs) + (-1 if slab is None else slab,)
        if key in self._codes:
            return self._codes[key]
        codes, kernels = [], [torch.zeros(0)] * len(self.KERNEL_SIZES)
        for tpl, ep in pairs:
            prepared = self._prepare(tpl.volume)
            pts = ep.points_mm if slab is None else ep.slabs_mm[slab]
            f, feats = self._run(prepared, prepared.index_zyx(pts))
            codes.append(f.numpy())
            for s, (feat, k) in enumerate(zip(feats, self.KERNEL_SIZES)):
                c = feat.shape[-1] // 2
                ker = F.normalize(feat[..., c - k // 2:c + k // 2, c - k // 2:c + k // 2, c - k // 2:c + k // 2], dim=1)
                kernels[s] = ker if kernels[s].numel() == 0 else kernels[s] + ker
        result = _PointCodes(np.mean(codes, axis=0), kernels)
        self._codes[key] = result
        return result

    def prepare_templates(self, templates: list[Template]) -> None:
        """Compute (and keep) the templates' point codes and kernels, so queries pay only for themselves."""
        for pairs in _targets_by_name(templates).values():
            self._template_codes(pairs, None)
            for s in range(min(len(ep.slabs_mm) for _, ep in pairs)):
                self._template_codes(pairs, s)

    def _query_code(self, prepared: PreparedCT) -> tuple[torch.Tensor, np.ndarray]:
        """Mean position code and mean centre (mm) of a few crops around the query's centre."""
        rng = np.random.default_rng(self.seed)
        centre = (np.array(prepared.array.shape) - 1) / 2
        crops = centre + rng.integers(-10, 11, size=(self.coarse_crops, 3))
        f, _ = self._run(prepared, crops, features=False)
        return f.mean(0, keepdim=True).float(), prepared.mm(crops).mean(0)

    def _coarse(self, query_code: tuple[torch.Tensor, np.ndarray], codes: np.ndarray) -> np.ndarray:
        f_q, c_q = query_code
        return c_q + self.net.offset_mm(torch.from_numpy(codes).float(), f_q).numpy()

    def refine(self, prepared: PreparedCT, points_mm: np.ndarray, kernels: list[torch.Tensor]) -> np.ndarray:
        """Move each point to the best match of its template features within a patch around it.

        ``points_mm`` (N, 3) and ``kernels`` [(N, C, k, k, k)] per scale; all N run as one batch.
        """
        pts = np.asarray(points_mm, float)
        for _ in range(self.refine_iterations):
            centres = np.round(prepared.index_zyx(pts))
            best = np.concatenate([self._best_match(prepared, centres[i:i + self.batch],
                                                    [k[i:i + self.batch] for k in kernels])
                                   for i in range(0, len(centres), self.batch)])
            shift = np.stack(np.unravel_index(best, (PATCH,) * 3), 1) - PATCH // 2
            pts = prepared.mm(centres + shift)
        return pts

    @torch.inference_mode()
    def _best_match(self, prepared: PreparedCT, centres: np.ndarray, kernels: list[torch.Tensor]) -> np.ndarray:
        """Flat index of the best kernel match in each centre's patch.  Runs in chunks of ``batch`` points:
        a query with many targets and SPL slabs has hundreds, whose activations at once take gigabytes."""
        _, feats = self._run(prepared, centres)
        score = torch.zeros(len(centres), 1, PATCH, PATCH, PATCH)
        for feat, ker in zip(feats, kernels):
            # one grouped correlation: point i's features with point i's kernel.  An even kernel is
            # centred half a voxel before its point: pad k/2 and keep the first S outputs.
            n, c, size, k = feat.shape[0], feat.shape[1], feat.shape[-1], ker.shape[-1]
            sim = F.conv3d(feat.reshape(1, n * c, size, size, size), ker, padding=k // 2, groups=n)
            sim = sim[..., :size, :size, :size].reshape(n, 1, size, size, size) / float(k**3)
            score += F.interpolate(sim, size=(PATCH,) * 3, mode="trilinear", align_corners=False)
        return score.flatten(1).argmax(1).numpy()

    def localize(self, query: Volume, templates: list[Template],
                 init_points: dict[str, np.ndarray] | None = None) -> list[LocalizedTarget]:
        prepared = prepare_ct(query)
        t0 = time.perf_counter()
        groups = _targets_by_name(templates)
        query_code = self._query_code(prepared) if not init_points or set(groups) - set(init_points) else None
        # Every target's points (and slab points) are refined together in one batch.
        jobs: list[tuple[str, int | None, np.ndarray, _PointCodes]] = []
        for name, pairs in groups.items():
            codes = self._template_codes(pairs, None)
            start = init_points[name] if init_points and name in init_points else self._coarse(query_code, codes.codes)
            jobs.append((name, None, start, codes))
            for s in range(min(len(ep.slabs_mm) for _, ep in pairs)):
                slab_codes = self._template_codes(pairs, s)
                jobs.append((name, s, self._coarse(query_code or self._query_code(prepared), slab_codes.codes), slab_codes))
        refined = self.refine(prepared, np.concatenate([j[2] for j in jobs]),
                              [torch.cat([j[3].kernels[s] for j in jobs]) for s in range(len(self.KERNEL_SIZES))])
        seconds = (time.perf_counter() - t0) / len(groups)
        results = {}
        for i, (name, slab, _, _) in enumerate(jobs):
            pts = _ordered(refined[6 * i:6 * i + 6])
            if slab is None:
                results[name] = LocalizedTarget(name, groups[name][0][1].label, pts, box_from_points(pts, query), [],
                                                "medlam+reg" if init_points and name in init_points else self.name, seconds)
            else:
                results[name].sub_boxes.extend(sub_boxes_in_view([pts], query))
        return list(results.values())


def _ordered(points: np.ndarray) -> np.ndarray:
    """Keep each axis' pair ordered (min first): a swapped pair would otherwise make an empty box."""
    pts = np.array(points, float)
    for a in range(3):
        if pts[2 * a, a] > pts[2 * a + 1, a]:
            pts[[2 * a, 2 * a + 1], a] = pts[[2 * a + 1, 2 * a], a]
        if pts[2 * a, a] == pts[2 * a + 1, a]:
            pts[2 * a + 1, a] += 1e-3
    return pts


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------

def _registration_image(volume: Volume, spacing: float) -> sitk.Image:
    low = resample_to_spacing(volume.with_array(volume.array.astype(np.float32)), spacing)
    arr = low.array
    lo, hi = (-1000.0, 1500.0) if arr.min() < -500 else tuple(np.percentile(arr, (0.5, 99.5)))
    return low.with_array(np.clip(arr, lo, hi).astype(np.float32)).to_sitk()


class RegistrationLocalizer:
    name = "registration"

    def __init__(self, deformable: bool = False, spacing_mm: float = 4.0, seed: int = 0):
        self.deformable = deformable
        self.spacing_mm = spacing_mm
        self.seed = seed
        self._images: dict[int, sitk.Image] = {}
        self._transforms: dict[tuple[int, int], sitk.Transform] = {}

    def _image(self, volume: Volume) -> sitk.Image:
        if id(volume) not in self._images:
            self._images[id(volume)] = _registration_image(volume, self.spacing_mm)
        return self._images[id(volume)]

    def transform(self, template: Volume, query: Volume) -> sitk.Transform:
        """A transform mapping template points (mm) to query points (mm); the last few are remembered."""
        key = (id(template), id(query))
        if key not in self._transforms:
            if len(self._transforms) > 64:
                self._transforms.clear()
            self._transforms[key] = self._register(template, query)
        return self._transforms[key]

    def _register(self, template: Volume, query: Volume) -> sitk.Transform:
        fixed, moving = self._image(template), self._image(query)
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(0.25, seed=self.seed)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=150,
                                                     relaxationFactor=0.6)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([2, 1])
        reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
        init = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                 sitk.CenteredTransformInitializerFilter.MOMENTS)
        reg.SetInitialTransform(init, inPlace=False)
        affine = reg.Execute(fixed, moving)
        if not self.deformable:
            return affine
        bspline = sitk.BSplineTransformInitializer(fixed, [4, 4, 4])
        reg2 = sitk.ImageRegistrationMethod()
        reg2.SetMetricAsMattesMutualInformation(32)
        reg2.SetMetricSamplingStrategy(reg2.RANDOM)
        reg2.SetMetricSamplingPercentage(0.25, seed=self.seed)
        reg2.SetOptimizerAsLBFGSB(numberOfIterations=50)
        reg2.SetMovingInitialTransform(affine)
        reg2.SetInitialTransform(bspline, inPlace=True)
        reg2.SetInterpolator(sitk.sitkLinear)
        reg2.Execute(fixed, moving)
        return sitk.CompositeTransform([affine, bspline])

    def map_points(self, templates: list[Template], query: Volume) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
        """Each target's six points (and per-slab points) carried into the query, averaged over templates."""
        mapped: dict[str, list[tuple[np.ndarray, list[np.ndarray]]]] = {}
        for tpl in templates:
            t = self.transform(tpl.volume, query)
            move = lambda pts: np.array([t.TransformPoint(tuple(p)) for p in pts])  # noqa: E731
            for ep in tpl.targets:
                mapped.setdefault(ep.target, []).append((move(ep.points_mm), [move(s) for s in ep.slabs_mm]))
        out = {}
        for name, items in mapped.items():
            n_slabs = min(len(slabs) for _, slabs in items)
            out[name] = (_ordered(np.mean([p for p, _ in items], 0)),
                         [_ordered(np.mean([slabs[s] for _, slabs in items], 0)) for s in range(n_slabs)])
        return out

    def localize(self, query: Volume, templates: list[Template]) -> list[LocalizedTarget]:
        t0 = time.perf_counter()
        mapped = self.map_points(templates, query)
        seconds = (time.perf_counter() - t0) / max(1, len(mapped))
        labels = {name: pairs[0][1].label for name, pairs in _targets_by_name(templates).items()}
        return [LocalizedTarget(name, labels[name], pts, box_from_points(pts, query),
                                sub_boxes_in_view(slabs, query), self.name, seconds)
                for name, (pts, slabs) in mapped.items()]


class RefinedRegistrationLocalizer:
    """Registration for a robust start, MedLAM similarity for the final position."""

    name = "medlam+reg"

    def __init__(self, medlam: MedLAMLocalizer | None = None, registration: RegistrationLocalizer | None = None):
        self.medlam = medlam or MedLAMLocalizer()
        self.registration = registration or RegistrationLocalizer()

    def localize(self, query: Volume, templates: list[Template]) -> list[LocalizedTarget]:
        t0 = time.perf_counter()
        init = {}
        for name, (pts, _) in self.registration.map_points(templates, query).items():
            try:
                box_from_points(pts, query)
                init[name] = pts
            except LocalizationError:  # registration lost this target: MedLAM's own estimate takes over
                log.warning("%s: registration put %s outside the volume; using MedLAM alone", query.name, name)
        out = self.medlam.localize(query, templates, init_points=init)
        for r in out:
            r.seconds += (time.perf_counter() - t0) / max(1, len(out))
        return out


def make_localizer(name: str, **kwargs) -> Localizer:
    name = name.lower()
    if name == "medlam":
        return MedLAMLocalizer(**kwargs)
    if name in ("registration", "reg"):
        return RegistrationLocalizer(**kwargs)
    if name in ("registration+bspline", "deformable"):
        return RegistrationLocalizer(deformable=True, **kwargs)
    if name in ("medlam+reg", "medlam+registration"):
        return RefinedRegistrationLocalizer()
    raise ValueError(f"unknown localizer {name!r}: medlam, registration, registration+bspline, medlam+reg")


def load_templates(paths: list[str | os.PathLike[str]]) -> list[Template]:
    """Extreme-point files -> templates, grouping targets that share a template volume."""
    from .io import read_volume

    by_volume: dict[str, Template] = {}
    for p in paths:
        ep = ExtremePoints.load(p)
        if not ep.template_path:
            raise ValueError(f"{p}: names no template volume")
        vpath = ep.template_path
        if not Path(vpath).exists():
            vpath = str((Path(p).parent / vpath))
        if vpath not in by_volume:
            by_volume[vpath] = Template(read_volume(vpath), [])
        tpl = by_volume[vpath]
        if not tpl.volume.geometry.is_close(ep.template_geometry, tol=1e-3):
            raise ValueError(f"{p}: its template geometry does not match {vpath} "
                             f"({tpl.volume.geometry.describe()})")
        validate_points(ep.points_mm, tpl.volume.geometry, str(p))
        tpl.targets.append(ep)
    return list(by_volume.values())
