"""Few-shot localization: a target's six extreme points on templates -> its 3D box in every query.

Localizers share one interface (:class:`Localizer`):
    * ``medlam``       -- MedLAM: coarse relative-distance step, then multi-scale similarity refinement
                          in features computed once per volume (:mod:`medlsam_training.medlam.matching`).
    * ``registration`` -- SimpleITK affine (optionally + B-spline) registration of each template to the
                          query after a field-of-view-proof start (:mod:`medlsam_training.registration`).
    * ``medlam+reg``   -- registration's points refined by MedLAM's similarity step.
Each template gives its own estimate; they are fused face by face (:mod:`medlsam_training.template_fusion`),
and every target carries a status (found / partly outside the scan / not found) and a confidence.
Boxes come back in the query's own voxel indices.
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

from .boxes import Box3D
from .errors import MedLSAMError
from .extreme_points import POINT_NAMES, ExtremePoints, template_volume_path, validate_points
from .medlam.matching import COARSE_RADIUS, PointKernel, VolumeFeatures, match_point, point_kernel, volume_features
from .medlam.network import MedLAMNet
from .medlam.preprocess import PreparedCT, crop, prepare_ct
from .identity_cache import IdentityCache
from .registration import RegistrationImage, register, registration_image
from .segmenters import default_device, load_state_dict
from .template_fusion import (FOUND, NOT_FOUND, PARTLY_OUTSIDE, box_status, content_box, edge_faces,
                              fuse_points)
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
    box: Box3D | None  # query voxel indices, clipped to the scan; None when the target was not found
    sub_boxes: list[Box3D] = field(default_factory=list)  # z-slabs (SPL), when the templates have them
    method: str = ""
    seconds: float = 0.0
    status: str = FOUND  # found | partly outside the scan | not found
    spread_mm: float = 0.0  # how much the templates disagree (robust SD of the box faces)
    similarity: float | None = None  # MedLAM's mean feature similarity at the points, in [-1, 1]
    templates: int = 1
    unknown_faces: list[str] = field(default_factory=list)  # faces every template had cut by its scan edge


def box_from_points(points_mm: np.ndarray, query: Volume) -> Box3D:
    """The query voxel box spanned by six LPS extreme points, clipped to the scan (an error if outside it)."""
    box, status = box_status(points_mm, query.geometry)
    if box is None:
        raise LocalizationError(f"{query.name}: the localized box lies outside the volume of size {query.size}; "
                                "is the target in this field of view?")
    if status != FOUND:
        log.warning("%s: localized box reaches beyond the scan; clipped to %s", query.name, box.as_list())
    return box


def sub_boxes_in_view(slab_points_mm: list[np.ndarray], query: Volume) -> list[Box3D]:
    """SPL sub-boxes inside the query's field of view; a slab of the target beyond the scan is dropped.

    A partial scan (a slab through the abdomen) legitimately cuts an organ, so a sub-box outside it is
    expected and not an error, unlike the whole target's box.
    """
    boxes = []
    for pts in slab_points_mm:
        box, _ = box_status(pts, query.geometry)
        if box is None:
            log.info("%s: one SPL sub-box lies outside the field of view; dropped", query.name)
        else:
            boxes.append(box)
    return boxes


def _targets_by_name(templates: list[Template]) -> dict[str, list[tuple[Template, ExtremePoints]]]:
    out: dict[str, list[tuple[Template, ExtremePoints]]] = {}
    for tpl in templates:
        for ep in tpl.targets:
            out.setdefault(ep.target, []).append((tpl, ep))
    if not out:
        raise LocalizationError("no template with extreme points was given")
    return out


def _n_slabs(pairs: list[tuple[Template, ExtremePoints]]) -> int:
    return min(len(ep.slabs_mm) for _, ep in pairs)


#: per target, per template (in template order): six points and the per-slab points
Estimates = dict[str, list[tuple[np.ndarray, list[np.ndarray]]]]


def _result(name: str, pairs: list[tuple[Template, ExtremePoints]],
            estimates: list[tuple[np.ndarray, list[np.ndarray]]],
            query: Volume, method: str, seconds: float, similarity: float | None = None) -> LocalizedTarget:
    """Fuse the templates' estimates of one target into its box, status and confidence."""
    # A template whose organ runs into its own scan edge only says "at least this far": on that face it
    # votes for the query's own scan edge.  Where most templates are cut, so is the organ in the query.
    cut = np.array([edge_faces(ep.points_mm, tpl.volume) for tpl, ep in pairs])  # (K, 6)
    lo, hi = scan_bounds_mm(query)
    points = []
    for (p, _), c in zip(estimates, cut):
        p = np.array(p, float)
        for f in np.nonzero(c)[0]:
            p[f, f // 2] = (lo if f % 2 == 0 else hi)[f // 2]
        points.append(p)
    fused = fuse_points(points)
    fused.unknown_faces = [POINT_NAMES[f] for f in range(6) if cut[:, f].mean() > 0.5]
    pts = _ordered(fused.points_mm)
    box, status = box_status(pts, query.geometry)
    if box is not None and fused.unknown_faces:
        status = PARTLY_OUTSIDE  # it was taken to run on beyond the scan
    slabs = [_ordered(fuse_points([s[i] for _, s in estimates]).points_mm) for i in range(_n_slabs(pairs))]
    if status != FOUND:
        log.warning("%s: %s %s", query.name, name, status)
    return LocalizedTarget(name, pairs[0][1].label, pts, box, sub_boxes_in_view(slabs, query) if box else [], method,
                           seconds, status, fused.spread_mm, similarity, len(pairs), fused.unknown_faces)


def scan_bounds_mm(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS bounds (mm) of the scanned content (:func:`template_fusion.content_box`)."""
    lo, hi = content_box(volume)
    return Box3D(tuple(lo), tuple(hi)).physical_bounds(volume.geometry)


class Localizer(Protocol):
    name: str

    def localize(self, query: Volume, templates: list[Template]) -> list[LocalizedTarget]: ...


# --------------------------------------------------------------------------------------------------
# MedLAM
# --------------------------------------------------------------------------------------------------

def shipped_weights() -> Path:
    return Path(str(resources.files("medlsam_training.medlam").joinpath("weights", SHIPPED_WEIGHTS)))


def load_medlam(weights: str | os.PathLike[str] | None = None, device: torch.device | str | None = None) -> MedLAMNet:
    state = load_state_dict(weights or shipped_weights())
    net = MedLAMNet()
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.to(device or default_device()).eval()


@dataclass
class _TemplatePoints:
    """One target on one template: position codes and kernels of its six points and of each slab's six."""

    codes: list[np.ndarray]  # [(6, 3)]: the points, then each slab
    kernels: list[list[PointKernel]]


class MedLAMLocalizer:
    name = "medlam"

    def __init__(self, weights: str | os.PathLike[str] | None = None, device: torch.device | str | None = None,
                 coarse_crops: int = 6, seed: int = 0, batch: int = 12, cache_volumes: int = 4,
                 init_radius: float = 8.0, candidates: int = 3):
        self.device = torch.device(device) if device else default_device()
        self.net = load_medlam(weights, self.device)
        self.coarse_crops = coarse_crops
        # search radius (3 mm voxels) around a start given by registration: it is already close, and a
        # wide search lets a similar-looking neighbour (the other kidney, a rib) win
        self.init_radius = init_radius
        self.candidates = candidates  # coarse peaks examined at the fine scale (matching.match_point)
        self.batch = batch  # 64^3 patches per forward of the position head: bounds memory, not the result
        self.seed = seed
        self._features = IdentityCache(cache_volumes)  # volume -> VolumeFeatures
        self._templates = IdentityCache(512)  # (template volume, extreme points) -> _TemplatePoints

    def features(self, volume: Volume) -> VolumeFeatures:
        return self._features.get((volume,), lambda: volume_features(self.net, prepare_ct(volume), self.device))

    @torch.inference_mode()
    def _codes(self, prepared: PreparedCT, centres_zyx: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(centres_zyx), self.batch):
            patches = np.stack([crop(prepared.array, c) for c in centres_zyx[i:i + self.batch]])
            out.append(self.net.position(torch.from_numpy(patches)[:, None].to(self.device)).float().cpu().numpy())
        return np.concatenate(out)

    def _template_points(self, tpl: Template, ep: ExtremePoints) -> _TemplatePoints:
        def make() -> _TemplatePoints:
            feats = self.features(tpl.volume)
            sets = [ep.points_mm, *ep.slabs_mm]
            idx = [feats.prepared.index_zyx(p) for p in sets]
            codes = self._codes(feats.prepared, np.concatenate(idx))
            return _TemplatePoints([codes[6 * i:6 * i + 6] for i in range(len(sets))],
                                   [[point_kernel(feats, q) for q in pts] for pts in idx])
        return self._templates.get((tpl.volume, ep), make)

    def prepare_templates(self, templates: list[Template]) -> None:
        """Compute (and keep) the templates' codes and kernels, so queries pay only for themselves."""
        for pairs in _targets_by_name(templates).values():
            for tpl, ep in pairs:
                self._template_points(tpl, ep)

    def _query_code(self, prepared: PreparedCT) -> tuple[torch.Tensor, np.ndarray]:
        """Mean position code and mean centre (mm) of a few crops around the query's centre."""
        rng = np.random.default_rng(self.seed)
        centre = (np.array(prepared.array.shape) - 1) / 2
        crops = centre + rng.integers(-10, 11, size=(self.coarse_crops, 3))
        f = self._codes(prepared, crops)
        return torch.from_numpy(f.mean(0, keepdims=True)), prepared.mm(crops).mean(0)

    def _coarse(self, query_code: tuple[torch.Tensor, np.ndarray], codes: np.ndarray) -> np.ndarray:
        f_q, c_q = query_code
        return c_q + self.net.offset_mm(torch.from_numpy(codes).float().to(self.device),
                                        f_q.to(self.device)).cpu().numpy()

    def refine(self, features: VolumeFeatures, points_mm: np.ndarray, kernels: list[PointKernel],
               radius: float = COARSE_RADIUS) -> tuple[np.ndarray, float]:
        """Each point moved to its kernel's best match within ``radius`` (3 mm voxels) -> (points mm, similarity)."""
        prep = features.prepared
        found = [match_point(features, k, g, radius, self.candidates)
                 for k, g in zip(kernels, prep.index_zyx(points_mm))]
        return prep.mm(np.array([p for p, _ in found])), float(np.mean([s for _, s in found]))

    @torch.inference_mode()
    def localize(self, query: Volume, templates: list[Template], init_points: Estimates | None = None
                 ) -> list[LocalizedTarget]:
        """Every template target in ``query``; ``init_points`` (per target, per template) replace the coarse step."""
        groups = _targets_by_name(templates)
        for pairs in groups.values():
            for tpl, ep in pairs:
                self._template_points(tpl, ep)
        t1 = time.perf_counter()  # template work is cached across queries; not part of a query's time
        features = self.features(query)
        query_code = self._query_code(features.prepared)
        per_target = {}
        for name, pairs in groups.items():
            estimates, sims = [], []
            for j, (tpl, ep) in enumerate(pairs):
                tp = self._template_points(tpl, ep)
                starts = [self._coarse(query_code, c) for c in tp.codes]
                radius = COARSE_RADIUS
                if init_points and name in init_points and init_points[name][j] is not None:
                    pts, slabs = init_points[name][j]
                    starts, radius = [pts, *slabs], self.init_radius
                refined = [self.refine(features, s, k, radius) for s, k in zip(starts, tp.kernels)]
                estimates.append((refined[0][0], [r[0] for r in refined[1:]]))
                sims.append(refined[0][1])
            per_target[name] = (estimates, float(np.mean(sims)))
        seconds = (time.perf_counter() - t1) / len(groups)
        method = "medlam+reg" if init_points else self.name
        return [_result(name, groups[name], est, query, method, seconds, sim)
                for name, (est, sim) in per_target.items()]


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

class RegistrationLocalizer:
    name = "registration"

    def __init__(self, deformable: bool = False, spacing_mm: float = 4.0, seed: int = 0, cache_volumes: int = 8):
        self.deformable = deformable
        self.spacing_mm = spacing_mm
        self.seed = seed
        self._images = IdentityCache(cache_volumes)
        self._transforms = IdentityCache(64)

    def _image(self, volume: Volume) -> RegistrationImage:
        return self._images.get((volume,), lambda: registration_image(volume, self.spacing_mm))

    def transform(self, template: Volume, query: Volume) -> sitk.Transform:
        """A transform mapping template points (mm) to query points (mm); the last few are remembered."""
        return self._transforms.get((template, query), lambda: register(self._image(template), self._image(query),
                                                                        self.deformable, self.seed))

    def map_points(self, templates: list[Template], query: Volume) -> Estimates:
        """Each target's six points (and per-slab points) carried into the query, per template."""
        mapped: Estimates = {}
        for tpl in templates:
            t = self.transform(tpl.volume, query)
            move = lambda pts: np.array([t.TransformPoint(tuple(p)) for p in pts])  # noqa: E731
            for ep in tpl.targets:
                mapped.setdefault(ep.target, []).append((move(ep.points_mm), [move(s) for s in ep.slabs_mm]))
        return mapped

    def localize(self, query: Volume, templates: list[Template]) -> list[LocalizedTarget]:
        t0 = time.perf_counter()
        mapped = self.map_points(templates, query)
        groups = _targets_by_name(templates)
        seconds = (time.perf_counter() - t0) / max(1, len(mapped))
        return [_result(name, groups[name], est, query, self.name, seconds) for name, est in mapped.items()]


class RefinedRegistrationLocalizer:
    """Registration for a robust start, MedLAM similarity for the final position, per template."""

    name = "medlam+reg"

    def __init__(self, medlam: MedLAMLocalizer | None = None, registration: RegistrationLocalizer | None = None):
        self.medlam = medlam or MedLAMLocalizer()
        self.registration = registration or RegistrationLocalizer()

    def localize(self, query: Volume, templates: list[Template]) -> list[LocalizedTarget]:
        t0 = time.perf_counter()
        init = self.registration.map_points(templates, query)
        for name, estimates in init.items():
            for j, (pts, _) in enumerate(estimates):
                if box_status(pts, query.geometry)[1] == NOT_FOUND:
                    # this template's registration lost the target: MedLAM's own estimate takes over for it
                    log.warning("%s: registration put %s outside the volume; using MedLAM for that template",
                                query.name, name)
                    estimates[j] = None
        out = self.medlam.localize(query, templates, init_points=init)
        seconds = (time.perf_counter() - t0) / max(1, len(out))
        for r in out:
            r.seconds = seconds
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
        return RefinedRegistrationLocalizer(MedLAMLocalizer(**kwargs))
    raise ValueError(f"unknown localizer {name!r}: medlam, registration, registration+bspline, medlam+reg")


def load_templates(paths: list[str | os.PathLike[str]]) -> list[Template]:
    """Extreme-point files -> templates, grouping targets that share a template volume."""
    from .io import read_volume

    by_volume: dict[str, Template] = {}
    for p in paths:
        ep = ExtremePoints.load(p)
        if not ep.template_path:
            raise ValueError(f"{p}: names no template volume")
        vpath = str(template_volume_path(p, ep.template_path))
        if vpath not in by_volume:
            by_volume[vpath] = Template(read_volume(vpath), [])
        tpl = by_volume[vpath]
        if not tpl.volume.geometry.is_close(ep.template_geometry, tol=1e-3):
            raise ValueError(f"{p}: its template geometry does not match {vpath} "
                             f"({tpl.volume.geometry.describe()})")
        validate_points(ep.points_mm, tpl.volume.geometry, str(p))
        tpl.targets.append(ep)
    return list(by_volume.values())
