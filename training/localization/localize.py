"""Few-shot localization: a target's six extreme points on templates -> its 3D box in every query.

Localizers share one interface (:class:`Localizer`):
    * ``medlam``       -- MedLAM: coarse relative-distance step, then multi-scale similarity refinement
                          in features computed once per volume (:mod:`medlsam_training.medlam.matching`).
    * ``registration`` -- SimpleITK affine (optionally + B-spline) registration of each template to the
                          query after a field-of-view-proof start (:mod:`medlsam_training.localization.registration`).
    * ``medlam+reg``   -- registration's points refined by MedLAM's similarity step.
Each template gives its own estimate; they are fused face by face
(:mod:`medlsam_training.localization.template_fusion`), and every target carries a status (found / partly outside
the scan / not found) and a confidence.
Boxes come back in the query's own voxel indices.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import SimpleITK as sitk
import torch

from ..correction.votes import TemplateVotes
from ..errors import MedLSAMError
from ..medlam.matching import COARSE_RADIUS, PointKernel, VolumeFeatures, match_point, point_kernel, volume_features
from ..medlam.network import MedLAMNet
from ..medlam.preprocess import PreparedCT, crop, looks_like_ct, prepare_ct
from ..options import LOCALIZER_ALIASES, LocalizerName, choose
from ..segmentation.propagate import clean_mask, single_part_target
from ..segmentation.segmenters import default_device, load_state_dict
from ..volumes.boxes import Box3D, box_from_physical
from ..volumes.identity_cache import IdentityCache
from ..volumes.volume import Volume
from .atlas import (
    REGION_MARGIN_MM,
    AtlasImage,
    QuerySpectrum,
    TemplateRegistration,
    atlas_image,
    invert_points,
    one_itk_thread,
    refine_target,
    region_index_box,
    register_template,
    translation_search,
    warp_mask,
)
from .extreme_points import POINT_NAMES, ExtremePoints, template_volume_path, validate_points
from .registration import RegistrationImage, register, registration_image
from .template_fusion import (
    FOUND,
    MIN_OUTLIER_MM,
    NOT_FOUND,
    PARTLY_OUTSIDE,
    box_status,
    content_box,
    edge_faces,
    fuse_points,
)

log = logging.getLogger(__name__)
SHIPPED_WEIGHTS = "medlam_ct_3mm.pt"


class LocalizationError(MedLSAMError, ValueError):
    """A target could not be placed in a query (box outside the volume, no templates, ...)."""


@dataclass
class Template:
    """A template volume with the extreme points of one or more targets on it (and, when known, their masks)."""

    volume: Volume
    targets: list[ExtremePoints]
    #: target name -> binary mask [z, y, x] on the template's grid: what label fusion warps into queries
    masks: dict[str, np.ndarray] = field(default_factory=dict)


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
    #: the templates' masks warped into the query and fused (atlas localizer, templates with masks), query grid
    mask: np.ndarray | None = field(default=None, repr=False)
    agreement: float | None = None  # mean Dice of each template's warped mask with the fused one
    source: str = ""  # what made the written mask (pipeline.SOURCE_*), set by the pipeline
    #: the templates' weighted vote in [0, 1] inside ``vote_box`` (query voxels): what a combination with another
    #: source's probabilities starts from (kept on the box, not the whole grid: a fine CT is large)
    vote: np.ndarray | None = field(default=None, repr=False)
    vote_box: Box3D | None = None
    pool: int = 0  # templates of this target before the per-query choice of the best-matching ones
    #: each template's warped mask and fusion weight (atlas): what a correction re-fuses (training/correction/)
    template_votes: TemplateVotes | None = field(default=None, repr=False)
    fallback: str | None = None  # why the asked-for mode was not the one that made it, when it was not


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
            move = lambda pts, t=t: np.array([t.TransformPoint(tuple(p)) for p in pts])  # noqa: E731
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


# --------------------------------------------------------------------------------------------------
# Atlas: registration of each template's region + label fusion
# --------------------------------------------------------------------------------------------------

#: "not found" (chosen on train-pats queries and unlabelled chest/abdomen CT, never on the reported patients;
#: docs/benchmarks.md, section 1): a target is found when its templates' regions, aligned by the affine,
#: correlate with the query at least MIN_MATCH (median), most of what they carry over lies in the scanned field of
#: view (median share >= MIN_IN_SCAN of what the scan could hold), and, with two templates or more, they agree on
#: where it is: the robust spread of their box faces is at most MAX_SPREAD_MM, the bound beyond which template
#: fusion calls a face an outlier.  Templates of an organ the scan does not hold land wherever each matches best.
MIN_MATCH = 0.5
MIN_IN_SCAN = 0.25
MAX_SPREAD_MM = MIN_OUTLIER_MM
#: a target with one template has no second opinion to disagree with: its match must be higher
MIN_MATCH_ONE_TEMPLATE = 0.6
#: a fused voxel is the target where the templates' weighted warped masks reach this share of the votes, and a
#: template's weight is (its target region's NCC with the query after registration) ** FIT_POWER: templates that
#: fit the query better count more.  Chosen on train-pats queries (docs/benchmarks.md, section 1): vote 0.4 and
#: power 6 against plain majority vote (0.5, power 0): Dice 0.671 vs 0.646, box IoU 57.4 vs 51.6 %.
VOTE = 0.4
FIT_POWER = 6
#: per query and target, the templates registered in full: the best-matching of a larger pool (a project's
#: reviewed volumes join its clicked templates), ranked by their region's correlation at the best translation, the
#: first and cheapest stage of the registration.  A query's time grows with the templates it registers, not the pool.
MAX_TEMPLATES = 7
#: a target found only at the scan's edge is "not found" when the CT inside its fused mask does not look like the
#: target: its median HU more than this outside the range of the templates' own medians inside their masks (set a
#: priori, well beyond soft tissue's spread between patients and far below bone against fat; docs/benchmarks.md 1:
#: it turns a "mandible" placed in abdominal fat (-101 HU against 441-843) to "not found" and no contoured organ of
#: the validation patients)
CONTENT_MARGIN_HU = 150.0


class AtlasLocalizer:
    """Multi-atlas localization and label fusion (:mod:`medlsam_training.localization.atlas`).

    Each template is registered into the query once for all its targets (translation search over the whole
    query, regional affine, demons), then once per target on the target's own neighbourhood (``per_target``).
    When every template of a target has its mask, the masks are warped and fused by a fit-weighted vote and the
    box is the fused mask's; otherwise the box comes from the templates' extreme points carried into the query
    and fused face by face.  Templates are registered in parallel threads (``workers``; ITK and the FFTs release
    the GIL), each on one ITK thread, so the result does not depend on the machine.
    """

    name = "atlas"

    def __init__(self, deformable: bool = True, min_match: float = MIN_MATCH, workers: int | None = None,
                 seed: int = 0, cache_volumes: int = 32, per_target: bool = True,
                 max_templates: int | None = MAX_TEMPLATES):
        self.max_templates = max_templates
        self.deformable = deformable
        self.per_target = per_target
        self.min_match = min_match
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.seed = seed
        self._images = IdentityCache(cache_volumes)

    def _image(self, volume: Volume) -> AtlasImage:
        return self._images.get((volume,), lambda: atlas_image(volume))

    def prepare_templates(self, templates: list[Template]) -> None:
        for tpl in templates:
            self._image(tpl.volume)

    def _region_shape(self, tpl: Template) -> tuple[int, int, int]:
        """The template's search region (its targets' box + margin), z, y, x voxels: what slides over the query."""
        pts = np.concatenate([ep.points_mm for ep in tpl.targets])
        lo, hi = region_index_box(self._image(tpl.volume), pts.min(0), pts.max(0), REGION_MARGIN_MM)
        return tuple(int(v) for v in (hi - lo + 1)[::-1])

    def _register(self, spectrum: QuerySpectrum, tpl: Template) -> TemplateRegistration | None:
        pts = np.concatenate([ep.points_mm for ep in tpl.targets])
        try:
            return register_template(spectrum, self._image(tpl.volume), pts.min(0), pts.max(0), self.deformable,
                                     self.seed)
        except (RuntimeError, ValueError) as exc:  # one template's failure never fails the query
            log.warning("%s: registration failed (%s); it does not vote", tpl.volume.name, str(exc)[:160])
            return None

    def _refine(self, query: AtlasImage, reg: TemplateRegistration, tpl: Template, ep: ExtremePoints
                ) -> TemplateRegistration:
        try:
            return refine_target(query, self._image(tpl.volume), reg, ep.points_mm.min(0), ep.points_mm.max(0),
                                 self.deformable, self.seed)
        except (RuntimeError, ValueError) as exc:  # the template-wide registration still stands
            log.warning("%s: %s: per-target registration failed (%s)", tpl.volume.name, ep.target, str(exc)[:160])
            return reg

    def _choose(self, spectrum: QuerySpectrum, templates: list[Template], pool) -> list[Template]:
        """The best-matching ``max_templates`` templates of each target (by the translation search's correlation
        of their region with the query); each chosen template keeps only the targets it was chosen for."""
        def search(tpl: Template) -> float:
            pts = np.concatenate([ep.points_mm for ep in tpl.targets])
            try:
                lo, hi = region_index_box(self._image(tpl.volume), pts.min(0), pts.max(0), REGION_MARGIN_MM)
                return translation_search(spectrum, self._image(tpl.volume), lo, hi)[1]
            except (RuntimeError, ValueError):
                return -1.0
        score = dict(zip(map(id, templates), pool.map(search, templates)))
        chosen: set[tuple[int, str]] = set()
        for name, pairs in _targets_by_name(templates).items():
            best = sorted(pairs, key=lambda p: -score[id(p[0])])[: self.max_templates]
            chosen |= {(id(t), name) for t, _ in best}
        kept = [replace(t, targets=[ep for ep in t.targets if (id(t), ep.target) in chosen]) for t in templates]
        return [t for t in kept if t.targets]

    def localize(self, query: Volume, templates: list[Template]) -> list[LocalizedTarget]:
        from concurrent.futures import ThreadPoolExecutor

        t0 = time.perf_counter()
        groups = _targets_by_name(templates)
        pool_size = {name: len(pairs) for name, pairs in groups.items()}
        with one_itk_thread(), ThreadPoolExecutor(self.workers) as pool:
            # the query's FFTs padded once for the largest template region: a region larger than the padding made
            # every search recompute them (10-25 % of a query's time)
            spectrum = QuerySpectrum(self._image(query), tuple(np.max(list(pool.map(self._region_shape, templates))
                                                                      + [(64, 64, 64)], axis=0)))
            if self.max_templates and max(pool_size.values()) > self.max_templates:
                templates = self._choose(spectrum, templates, pool)
                groups = _targets_by_name(templates)
            regs = dict(zip(map(id, templates), pool.map(lambda t: self._register(spectrum, t), templates)))
            refined = {}
            if self.per_target:
                # a template with one target was registered on that target's region already
                pairs = [(t, ep) for t in templates for ep in t.targets
                         if regs[id(t)] is not None and len(t.targets) > 1]
                refined = dict(zip([(id(t), ep.target) for t, ep in pairs],
                                   pool.map(lambda p: self._refine(spectrum.query, regs[id(p[0])], *p), pairs)))
        reference = sitk.Image([int(v) for v in query.size], sitk.sitkUInt8)
        reference.SetSpacing(query.geometry.spacing)
        reference.SetOrigin(query.geometry.origin)
        reference.SetDirection(query.geometry.direction)
        out = []
        scan = scan_bounds_mm(query)
        for name, pairs in groups.items():
            reg_of = {id(tpl): refined.get((id(tpl), name), regs[id(tpl)]) for tpl, _ in pairs}
            voters = [(tpl, ep, reg_of[id(tpl)], atlas_points(reg_of[id(tpl)], ep.points_mm))
                      for tpl, ep in pairs if regs[id(tpl)] is not None]
            similarity = float(np.median([r.match_ncc for _, _, r, _ in voters])) if voters else None
            in_scan = float(np.median([_in_scan(p, scan) for *_, p in voters])) if voters else 0.0
            # faces a template's own scan cut (where its scan stopped, not its organ) do not count in the spread
            spread = fuse_points([p for *_, p in voters], [~edge_faces(ep.points_mm, t.volume) for t, ep, *_ in voters]
                                 ).spread_mm if len(voters) > 1 else 0.0
            min_match = max(self.min_match, MIN_MATCH_ONE_TEMPLATE) if len(voters) == 1 else self.min_match
            found = (len(voters) * 2 >= len(pairs) and similarity >= min_match and in_scan >= MIN_IN_SCAN
                     and spread <= MAX_SPREAD_MM)
            if not found:
                log.warning("%s: %s not found (templates' match %s, share in the scan %.2f, spread %.1f mm)",
                            query.name, name, "-" if similarity is None else f"{similarity:.2f}", in_scan, spread)
                pts = np.median([p for *_, p in voters] or [ep.points_mm for _, ep in pairs], 0)
                out.append(LocalizedTarget(name, pairs[0][1].label, _ordered(pts), None, method=self.name,
                                           status=NOT_FOUND, spread_mm=spread, similarity=similarity,
                                           templates=len(pairs)))
                continue
            estimates = [(p, [atlas_points(r, sl) for sl in ep.slabs_mm]) for _, ep, r, p in voters]
            result = _result(name, [(t, e) for t, e, *_ in voters], estimates, query, self.name, 0.0, similarity)
            if result.box is not None and all(name in t.masks for t, *_ in voters):
                _fuse_masks(result, [(t.volume.with_array(t.masks[name].astype(np.uint8)).to_sitk(), r)
                                     for t, _, r, _ in voters], query, reference)
                unlike = _content_mismatch(query, result.mask, [t for t, *_ in voters], name) \
                    if result.status == PARTLY_OUTSIDE and result.mask is not None else None
                if unlike:
                    log.warning("%s: %s not found (only at the scan's edge, and what is there does not look like "
                                "it: %s)", query.name, name, unlike)
                    result = LocalizedTarget(name, result.label, result.points_mm, None, method=self.name,
                                             status=NOT_FOUND, spread_mm=spread, similarity=similarity,
                                             templates=len(pairs))
            out.append(result)
        seconds = (time.perf_counter() - t0) / max(1, len(out))
        for r in out:
            r.seconds, r.pool = seconds, pool_size[r.target]
        return out


def _content_mismatch(query: Volume, mask: np.ndarray, templates: list[Template], name: str) -> str | None:
    """On CT, why the query's content inside the fused mask does not look like the target: its median HU more than
    CONTENT_MARGIN_HU outside the range of the templates' medians inside theirs; None when it does (and always on
    MR, whose intensities have no fixed scale)."""
    if not mask.any() or not looks_like_ct(query) or not all(looks_like_ct(t.volume) for t in templates):
        return None
    medians = [float(np.median(t.volume.array[t.masks[name]])) for t in templates if t.masks[name].any()]
    lo, hi, value = min(medians), max(medians), float(np.median(query.array[mask]))
    if lo - CONTENT_MARGIN_HU <= value <= hi + CONTENT_MARGIN_HU:
        return None
    return f"median {value:.0f} HU against the templates' {lo:.0f}-{hi:.0f}"


def _in_scan(points_mm: np.ndarray, scan: tuple[np.ndarray, np.ndarray]) -> float:
    """The share of the six points' box (by volume) inside the scanned content's LPS bounds, relative to the
    most that a scan this size could hold: a 4 cm slab holds a fifth of a liver, and that is all of it it can."""
    lo, hi = np.min(points_mm, 0), np.max(points_mm, 0)
    size = np.maximum(hi - lo, 1e-3)
    inner = np.clip(np.minimum(hi, scan[1]) - np.maximum(lo, scan[0]), 0, None)
    attainable = np.clip((scan[1] - scan[0]) / size, 0, 1)
    return float(np.prod(inner / size) / max(np.prod(attainable), 1e-6))


def atlas_points(reg: TemplateRegistration, points_mm: np.ndarray) -> np.ndarray:
    """Template points carried into the query (the registration's transform maps query -> template)."""
    return invert_points(reg.transform, points_mm, np.asarray(points_mm, float) + reg.shift_mm)


def _fuse_masks(result: LocalizedTarget, masks: list[tuple[sitk.Image, TemplateRegistration]], query: Volume,
                reference: sitk.Image) -> None:
    """Warp each template's mask onto the query grid (only around the registered region) and vote."""
    lo_mm = np.min([np.array(r.region.GetOrigin()) for _, r in masks], 0)
    hi_mm = np.max([np.array(r.region.TransformIndexToPhysicalPoint([n - 1 for n in r.region.GetSize()]))
                    for _, r in masks], 0)
    box = box_from_physical(lo_mm, hi_mm, query.geometry).grow(2).clip(query.size)
    ref = sitk.RegionOfInterest(reference, list(box.shape), list(box.lo))
    fused_prob = np.zeros(ref.GetSize()[::-1], np.float32)
    warped, stack = [], []
    weights = [max(r.fit_ncc if r.fit_ncc is not None else r.match_ncc, 1e-3) ** FIT_POWER for _, r in masks]
    for (mask, reg), weight in zip(masks, weights):
        w = warp_mask(mask, reg.transform, ref)
        stack.append(w)
        warped.append(w >= 0.5)
        fused_prob += weight * w
    fused_prob /= max(sum(weights), 1e-6)
    # an organ in one piece keeps its largest piece: a stray island of agreement would stretch its box
    fused = clean_mask(fused_prob >= VOTE, single_part_target(result.target), fill_holes=False)
    if not fused.any():
        log.warning("%s: %s: the templates' warped masks do not overlap; the box comes from their points",
                    query.name, result.target)
        return
    full = np.zeros(query.array.shape, bool)
    full[box.slices] = fused
    result.mask = full
    result.vote, result.vote_box = fused_prob, box
    result.template_votes = TemplateVotes(box, np.stack(stack), np.array(weights), VOTE).tight()
    result.agreement = float(np.mean([2 * (w & fused).sum() / max(1, w.sum() + fused.sum()) for w in warped]))
    result.box = Box3D.from_mask(full)


def make_localizer(name: str, device: torch.device | str | None = None, **kwargs) -> Localizer:
    """The localizer called ``name`` (``LocalizerName`` or an alias); ``device`` reaches the ones that run a
    network (MedLAM) and is ignored by the registration localizers, which run on the CPU."""
    choice = choose(name, LocalizerName, "localizer", LOCALIZER_ALIASES)
    if choice.takes_device and device is not None:
        kwargs["device"] = device
    if choice == LocalizerName.MEDLAM:
        return MedLAMLocalizer(**kwargs)
    if choice == LocalizerName.REGISTRATION:
        return RegistrationLocalizer(**kwargs)
    if choice == LocalizerName.REGISTRATION_BSPLINE:
        return RegistrationLocalizer(deformable=True, **kwargs)
    if choice == LocalizerName.MEDLAM_REG:
        return RefinedRegistrationLocalizer(MedLAMLocalizer(**kwargs))
    return AtlasLocalizer(**kwargs)


def load_templates(paths: list[str | os.PathLike[str]]) -> list[Template]:
    """Extreme-point files -> templates, grouping targets that share a template volume."""
    from ..volumes.io import read_label, read_volume

    by_volume: dict[str, Template] = {}
    for p in paths:
        ep = ExtremePoints.load(p)
        if not ep.template_path:
            raise ValueError(f"{p}: names no template volume")
        vpath = str(template_volume_path(p, ep.template_path))
        if vpath not in by_volume:
            try:
                by_volume[vpath] = Template(read_volume(vpath), [])
            except (MedLSAMError, OSError) as exc:  # the template file is what the user gave: name it
                raise LocalizationError(f"{p}: its template volume cannot be read ({exc})") from exc
        tpl = by_volume[vpath]
        if not tpl.volume.geometry.is_close(ep.template_geometry, tol=1e-3):
            raise ValueError(f"{p}: its template geometry does not match {vpath} "
                             f"({tpl.volume.geometry.describe()})")
        validate_points(ep.points_mm, tpl.volume.geometry, str(p))
        tpl.targets.append(ep)
        if ep.mask_path:
            mpath = template_volume_path(p, ep.mask_path)
            try:
                mask = read_label(mpath, tpl.volume).array == ep.mask_label
            except (MedLSAMError, OSError) as exc:
                raise LocalizationError(f"{p}: its mask cannot be read ({exc})") from exc
            if not mask.any():
                raise LocalizationError(f"{mpath}: holds no voxel of label {ep.mask_label} ({ep.target}), "
                                        f"which {p} names as its mask")
            tpl.masks[ep.target] = mask
    return list(by_volume.values())
