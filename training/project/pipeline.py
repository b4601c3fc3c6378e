"""The MedLSAM pipeline over a dataset: localize every target in every query, segment it, write it.

Shared by the ``medlsam segment`` command and the napari annotator's worker.  Each query is
independent: one failing volume is reported and the loop goes on; finished queries are skipped on a
re-run (resumable); every mask is written atomically with the query's exact geometry.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..correction.votes import load_votes, own_votes, save_votes, votes_path, with_probability
from ..errors import MedLSAMError
from ..localization.extreme_points import POINT_NAMES, ExtremePoints
from ..localization.localize import VOTE, LocalizedTarget, Localizer, Template, sub_boxes_in_view
from ..localization.template_fusion import PARTLY_OUTSIDE, box_status, edge_faces
from ..medlam.preprocess import looks_like_ct
from ..options import PropagationMode
from ..progress import ProgressFn
from ..segmentation.label_merge import check_policy, merge_target
from ..segmentation.propagate import (
    PropagationConfig,
    VolumeSegmenter,
    bone_in_box,
    bone_target,
    clean_mask,
    ellipsoid_in_box,
    for_target,
)
from ..segmentation.segmenters import Segmenter
from ..volumes.atomic import keep_previous, write_json_atomic
from ..volumes.boxes import Box3D, box_from_physical
from ..volumes.datasets import Case, find_cases, read_label_names
from ..volumes.io import is_volume_path, read_label, read_volume
from ..volumes.volume import Volume
from .guard import WriteGuard, write_automatic

if TYPE_CHECKING:
    from ..cluster import ClusterEngine

log = logging.getLogger(__name__)
#: the method of a template volume's own targets (``LocalizedTarget.method``): no localization was needed
OWN_POINTS, OWN_MASK = "template: its own points", "template: its own mask"
#: what made a target's written mask (``LocalizedTarget.source``, the run summary's "source")
SOURCE_FUSED = "fused template masks"  # the atlas: every template's mask warped into the query, voted
SOURCE_OWN_MASK = "own mask"  # a template volume's own (reviewed) mask, written as it is
SOURCE_SAM = "SAM from the box"  # the segmenter prompted slice by slice from the localized box (or z-slabs)
SOURCE_BONE = "bone threshold in the box"  # a bone on CT from its box alone (propagate.bone_in_box)
#: a soft-tissue target on its own template volume from its six points alone: the ellipsoid inscribed in their box
SOURCE_PRIOR = "ellipsoid in its six points' box"
SOURCE_COMBINED = "fused template masks + network"  # the atlas vote and the learned network's probability, mixed
SOURCE_NETWORK = "network"  # the learned network alone (the target's templates have no masks to fuse)
#: the network's share of a combination until the reviewed volumes teach one per target (learning.combination); the
#: threshold is the same mix of each source's own (atlas VOTE, argmax ~0.5): benchmarks/session.py (docs/benchmarks.md)
NETWORK_WEIGHT = 0.5


class ProbabilitySource(Protocol):
    """A second source of masks (the learning loop's network): per target, a probability on the query's grid."""

    name: str
    targets: list[str]

    def target_probabilities(self, volume: Volume) -> dict[str, np.ndarray]: ...

    def share(self, target: str, with_vote: bool) -> tuple[float, float]:
        """(its share, the threshold) of ``target``'s combination (:func:`combination_share` unless learned)."""
        ...


RESULTS_NAME = "medlsam_results.json"  # the run summary written beside a run's masks
LABELS_NAME = "labels.json"  # label value -> target name, beside the masks (read by Slicer export, report, evaluate)


@dataclass
class QueryResult:
    name: str
    image: Path
    output: Path | None = None
    targets: list[LocalizedTarget] = field(default_factory=list)
    seconds: float = 0.0
    status: str = "done"  # done | skipped | failed
    error: str | None = None
    template: bool = False  # a template volume: its own targets came from its points or mask (never scored)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": str(self.image), "output": str(self.output) if self.output else None, "status": self.status,
            "error": self.error, "seconds": round(self.seconds, 2), "template": self.template,
            "targets": {t.target: localized_json(t) for t in self.targets},
        }


def localized_json(t: LocalizedTarget) -> dict[str, Any]:
    return {"label": t.label, "status": t.status, "box": t.box.as_list() if t.box else None,
            "sub_boxes": [b.as_list() for b in t.sub_boxes], "points_mm": np.round(t.points_mm, 3).tolist(),
            "method": t.method, "seconds": round(t.seconds, 3), "templates": t.templates,
            "spread_mm": round(t.spread_mm, 2),
            "similarity": None if t.similarity is None or not np.isfinite(t.similarity) else round(t.similarity, 3),
            "agreement": None if t.agreement is None else round(t.agreement, 3),
            "unknown_faces": t.unknown_faces, "source": t.source or None, "fallback": t.fallback,
            "pool": t.pool or t.templates}


def localize_case(localizer: Localizer, case: Case, templates: list[Template]) -> dict[str, Any]:
    """One query's ``medlsam localize`` record: target -> :func:`localized_json`, or ``{"error": ...}`` when the
    volume cannot be read or localized (that volume's failure, never an exception)."""
    try:
        return {t.target: localized_json(t) for t in localizer.localize(read_volume(case.image), templates)}
    except (MedLSAMError, ValueError, RuntimeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def target_confidence(info: Mapping[str, Any]) -> float | None:
    """One number per localized target for the reviewer (0 = doubtful, 1 = sure): the templates' agreement on
    its mask when masks were fused, else the localizer's similarity; 0 when it was not found."""
    if info.get("status") == "not found":
        return 0.0
    for key in ("agreement", "similarity"):
        value = info.get(key)
        if isinstance(value, (int, float)) and np.isfinite(value):
            return float(value)
    return None


def target_labels(templates: list[Template]) -> dict[str, int]:
    """Label value per target: the template's own, else 1, 2, ... in order of appearance."""
    labels: dict[str, int] = {}
    for tpl in templates:
        for ep in tpl.targets:
            if ep.target not in labels:
                labels[ep.target] = int(ep.label) if ep.label else 0
    used = {v for v in labels.values() if v}
    free = (v for v in range(1, 65536) if v not in used)
    return {name: value or next(free) for name, value in labels.items()}


def query_cases(sources: list[str | os.PathLike[str]], exclude: set[Path] = frozenset()) -> list[Case]:
    """Volumes to process: files, DICOM folders, or dataset folders (every case in them)."""
    cases: list[Case] = []
    for src in map(Path, sources):
        if src.is_file() or (src.is_dir() and is_volume_path(src)):
            cases.append(Case(src.name.split(".")[0] if src.is_file() else src.name, src))
        else:
            cases.extend(find_cases(src))
    excluded = {Path(p).resolve() for p in exclude}

    def skip(image: Path) -> bool:
        image = image.resolve()
        # a template, anything inside an excluded folder (the run's own output), or a folder of
        # predictions from an earlier run (it holds a run summary): never a query
        return (image in excluded or any(e in image.parents for e in excluded)
                or any((d / RESULTS_NAME).is_file() for d in image.parents))
    return unique_names([c for c in cases if not skip(c.image)])


def unique_names(cases: list[Case]) -> list[Case]:
    """Each case's output is ``<name>.nii.gz``: two files of one name (``image.nii.gz`` in two case folders) are
    named after their folders; names that still collide are an error before any work, never a silent skip."""
    same = Counter(name for name, _ in {(c.name, c.image.resolve()) for c in cases})
    renamed = [replace(c, name=c.image.parent.name) if same[c.name] > 1 and c.image.is_file() else c for c in cases]
    seen: dict[str, Case] = {}
    for c in renamed:
        if c.name not in seen:
            seen[c.name] = c
        elif seen[c.name].image.resolve() != c.image.resolve():
            raise ValueError(f"two queries would both be written as {c.name}.nii.gz: {seen[c.name].image} and "
                             f"{c.image}; rename one, or give them in folders of different names")
    return list(seen.values())  # the same file given twice is one query


def without_targets(templates: list[Template], targets: Collection[str]) -> list[Template]:
    """The templates less the named targets (locked ones), each with the masks of the targets it keeps (label
    fusion warps them); templates left with no target are dropped."""
    kept = [replace(t, targets=[ep for ep in t.targets if ep.target not in targets],
                    masks={name: m for name, m in t.masks.items() if name not in targets}) for t in templates]
    return [t for t in kept if t.targets]


def segment_query(
    query: Volume,
    templates: list[Template],
    localizer: Localizer,
    segmenter: Segmenter,
    config: PropagationConfig | None = None,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
    cancelled: Callable[[], bool] | None = None,
    existing: np.ndarray | None = None,
    policy: str = "keep",
    locked: Collection[str] = (),
    network: ProbabilitySource | None = None,
) -> tuple[np.ndarray, list[LocalizedTarget]]:
    """Localize every template target in ``query`` and segment it -> (label map [z, y, x], targets).

    With ``existing`` (the volume's label map so far) each target is merged into it under ``policy``
    (``training/segmentation/label_merge.py``); ``locked`` targets are neither localized nor changed.  With a
    ``network`` (the learning loop's, mode ``atlas``), a found target it knows is the mix of the atlas vote and
    its probability (:func:`combine`, the network's mix for that target), or its probability alone where the
    templates have no masks.
    """
    config = config or PropagationConfig(mode=PropagationMode.ATLAS)  # the product's default, as the CLI's
    labels = target_labels(templates)
    dtype = np.uint16 if max(labels.values()) > 255 or (existing is not None and existing.max() > 255) else np.uint8
    label_map = np.zeros(query.array.shape, dtype) if existing is None else existing.astype(dtype)
    locked_values = [labels[t] for t in locked if t in labels]
    active = without_targets(templates, locked)
    if not active:
        return label_map, []
    # A template volume is segmented too: its own targets from its own points (an exact box) or mask, the rest
    # localized from the other templates.
    own = [t for t in active if is_template_of(t, query)]
    known = {ep.target for t in own for ep in t.targets}
    located = [own_target(t, ep, query) for t in own for ep in t.targets]
    others = without_targets([t for t in active if not any(t is o for o in own)], known)
    located += localizer.localize(query, others) if others else []
    vs = VolumeSegmenter(query, segmenter, cache_dir=cache_dir)
    wanted = {t.target for t in located if t.box is not None and t.method not in (OWN_MASK, OWN_POINTS)}
    learned = network.target_probabilities(query) \
        if network is not None and config.mode == "atlas" and wanted & set(network.targets) else {}
    for t in located:
        if t.box is None:
            log.warning("%s: %s not found in this scan; nothing segmented for it (where it is there, click its six "
                        "points on this volume: the run then segments it from them)", query.name, t.target)
            continue
        if t.target in learned and t.method not in (OWN_MASK, OWN_POINTS):
            t.source = SOURCE_COMBINED if t.vote is not None else SOURCE_NETWORK
            share = network.share(t.target, t.vote is not None and t.vote_box is not None)
            mask = clean_mask(combine(t, learned[t.target], share), for_target(config, t.target).largest_component,
                              fill_holes=False)
            if mask.any():
                # a correction re-thresholds what made this mask: the atlas's votes and the network's probability
                t.template_votes = with_probability(t.template_votes, learned[t.target], *share)
                label_map = merge_target(label_map, mask, labels[t.target], policy, locked_values)
                continue
            t.source = ""  # nothing above the threshold: the atlas alone decides below
        if config.mode == "atlas" and t.mask is not None:  # the templates' masks, warped and fused
            cfg = for_target(config, t.target)
            t.source = SOURCE_OWN_MASK if t.method == OWN_MASK else SOURCE_FUSED
            mask = clean_mask(t.mask, cfg.largest_component, fill_holes=False)
            label_map = merge_target(label_map, mask, labels[t.target], policy, locked_values)
            continue
        if t.method == OWN_MASK:
            t.method = OWN_POINTS  # this mode segments the template from its box, not from its mask
        t.source = SOURCE_SAM
        if config.mode == "atlas":  # a fallback: recorded per target, said once per run (run_queries)
            mask, source = box_only(query, t)
            t.source = source or t.source
            t.fallback = f"{atlas_fallback_reason(t, active)}: {t.source}"
            if mask is not None:
                t.template_votes = own_votes(mask)  # an update shifts this mask toward the corrected slices
                label_map = merge_target(label_map, mask, labels[t.target], policy, locked_values)
                continue
        boxes = t.sub_boxes if config.mode == "spl" and t.sub_boxes else [t.box]
        if config.mode == "spl" and not t.sub_boxes:
            log.warning("%s: no z-slabs on the templates of %s; using one box (wpl)", query.name, t.target)
        mask = vs.propagate(boxes, for_target(config, t.target), progress, cancelled)
        t.template_votes = own_votes(mask)
        label_map = merge_target(label_map, mask, labels[t.target], policy, locked_values)
    return label_map, located


def box_only(query: Volume, t: LocalizedTarget) -> tuple[np.ndarray | None, str | None]:
    """A target's mask from its box alone where that beats LiteMedSAM on it, and its source ((None, None): prompt
    LiteMedSAM): a bone on CT is the bone threshold in its box; any other target on its own template volume (its six
    points: an exact box) the ellipsoid inscribed in the box (docs/benchmarks.md, section 13: fewer slices to correct
    on train-pats)."""
    if bone_target(t.target) and looks_like_ct(query):
        bone = bone_in_box(query, t.box, t.target)
        return (bone, SOURCE_BONE) if bone.any() else (None, None)
    if t.method == OWN_POINTS:
        return ellipsoid_in_box(query.array.shape, t.box), SOURCE_PRIOR
    return None, None


def combination_share(with_vote: bool, weight: float = NETWORK_WEIGHT) -> tuple[float, float]:
    """(the other source's share, the threshold) of a combination: with the atlas vote, the same mix of each
    one's own threshold (atlas VOTE, argmax ~0.5); without, the probability alone above 0.5."""
    return (weight, weight * 0.5 + (1 - weight) * VOTE) if with_vote else (1.0, 0.5)


def combine(t: LocalizedTarget, probability: np.ndarray, share: tuple[float, float] | None = None) -> np.ndarray:
    """The target's mask from the atlas vote (inside its box; 0 elsewhere) and another source's probability:
    their weighted mean above a threshold (``share``: (the other source's share, the threshold), learned per target
    from the reviewed volumes, ``learning.combination``; default the fixed mix, :func:`combination_share`); the
    probability alone without a vote."""
    with_vote = t.vote is not None and t.vote_box is not None
    share, threshold = share if share is not None and with_vote else combination_share(with_vote)
    if share >= 1.0:
        return probability >= threshold
    p = share * probability
    p[t.vote_box.slices] += (1 - share) * t.vote
    return p >= threshold


def atlas_fallback_reason(t: LocalizedTarget, templates: list[Template]) -> str:
    """Why the atlas mode could not fuse masks for ``t`` (the caller says what made the mask instead)."""
    holders = [tpl for tpl in templates if any(ep.target == t.target for ep in tpl.targets)]
    missing = [tpl.volume.name for tpl in holders if t.target not in tpl.masks]
    if missing:
        return (f"{len(missing)} of {len(holders)} template(s) have no mask of {t.target} "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    return "the templates' warped masks did not overlap"


def is_template_of(template: Template, volume: Volume) -> bool:
    """True when ``template`` was clicked (or derived) on ``volume``'s own file."""
    a, b = template.volume.path, volume.path
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def own_target(template: Template, ep: ExtremePoints, volume: Volume) -> LocalizedTarget:
    """A template's target on its own volume: the box of its six points, its mask when it has one."""
    box, status = box_status(ep.points_mm, volume.geometry)
    cut = edge_faces(ep.points_mm, volume)
    if box is not None and cut.any():
        status = PARTLY_OUTSIDE  # the scan stops where the points do: the organ may run on
    mask = template.masks.get(ep.target)
    return LocalizedTarget(ep.target, ep.label, np.asarray(ep.points_mm, float), box,
                           sub_boxes_in_view(ep.slabs_mm, volume) if box else [],
                           OWN_MASK if mask is not None else OWN_POINTS, 0.0, status, 0.0, None, 1,
                           [POINT_NAMES[f] for f in np.nonzero(cut)[0]], mask)


def write_label_names(out_dir: Path, names: Mapping[str, int], replace: bool = False) -> Path:
    """``labels.json`` beside the masks: the run's targets added (values already named there keep their name),
    or, with ``replace``, exactly ``names`` (a project's targets, which are the truth for its masks)."""
    path = out_dir / LABELS_NAME
    try:
        known = read_label_names(path) if path.is_file() and not replace else {}
    except MedLSAMError as exc:  # unreadable: kept aside, rewritten from this run's names
        log.warning("%s; a copy is kept in .previous/", exc)
        keep_previous(path)
        known = {}
    for name, value in names.items():
        known.setdefault(int(value), name)
    return write_json_atomic({str(v): n for v, n in sorted(known.items())}, path)


def run_queries(
    cases: list[Case],
    templates: list[Template],
    localizer: Localizer,
    segmenter: Segmenter,
    out_dir: str | os.PathLike[str],
    config: PropagationConfig | None = None,
    cache_dir: Path | None = None,
    existing: str = "skip",
    progress: ProgressFn | None = None,
    cancelled: Callable[[], bool] | None = None,
    locked: Mapping[str, Collection[str]] | None = None,
    network: ProbabilitySource | None = None,
    corrected: Mapping[str, Collection[int]] | None = None,
    engine: "ClusterEngine | None" = None,
) -> Iterator[QueryResult]:
    """Segment every case into ``out_dir/<case>.nii.gz``; yields one result per case as it finishes.

    A case whose label map exists is skipped (``existing="skip"``, resumable runs) or has this run's
    targets merged into it by the policy ``keep``, ``overwrite`` or ``empty``; the previous file is first
    copied to ``out_dir/.previous/``.  ``locked`` names, per case, targets never to touch (reviewed ones);
    ``corrected``, per case, the axial slices the annotator drew: kept as they are.  With an ``engine`` (a Dask
    cluster, :mod:`medlsam_training.cluster`) each case is one task on a worker, which writes its mask; results
    come back as they finish and this process keeps the run summary.
    """
    check_policy(existing, rerun=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / RESULTS_NAME
    summary = read_run_summary(summary_path)
    labels = target_labels(templates)
    write_label_names(out_dir, labels)
    said: set[str] = set()  # targets whose fallback this run has announced (once per run, recorded per volume)

    def record(result: QueryResult, had_mask: bool) -> QueryResult:
        for t in result.targets:
            if t.fallback and t.target not in said:
                said.add(t.target)
                log.warning("%s: %s (said once per run; each volume's record in %s has it)", t.target,
                            t.fallback, RESULTS_NAME)
        entry = result.to_json()
        if result.status == "done" and had_mask:  # targets not re-run keep their record
            entry["targets"] = {**summary.get(result.name, {}).get("targets", {}), **entry["targets"]}
        summary[result.name] = entry
        write_json_atomic(summary, summary_path)
        return result

    todo: list[Case] = []  # on a cluster: submitted together once the skipped ones are said
    for i, case in enumerate(cases):
        output = out_dir / f"{case.name}.nii.gz"
        case_locked = set((locked or {}).get(case.name, ()))
        if output.is_file() and (existing == "skip" or set(labels) <= case_locked):
            yield QueryResult(case.name, case.image, output, status="skipped")
            continue
        if engine is not None:
            todo.append(case)
            continue
        if cancelled and cancelled():
            return
        slice_progress = (lambda d, n, m, i=i, c=case: progress(d, n, f"{c.name} ({i + 1}/{len(cases)}): {m}")) \
            if progress else None
        yield record(*segment_case(case, templates, localizer, segmenter, out_dir, config, cache_dir, existing,
                                   slice_progress, cancelled, case_locked, network,
                                   (corrected or {}).get(case.name, ())))
    if todo:
        for result, had_mask in engine.run(todo, templates, out_dir, config, cache_dir, existing, locked or {},
                                           network, corrected or {}, cancelled):
            yield record(result, had_mask)


def read_run_summary(path: Path) -> dict[str, Any]:
    """The run summary's records per volume; one that cannot be read (or is not a summary) is said once, kept in
    ``.previous/`` and started afresh: it never stops a run (opening a project ignores it the same way)."""
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        summary, why = None, f"unreadable ({str(exc).splitlines()[0][:120]})"
    else:
        why = "not a run summary"
    if not isinstance(summary, dict):
        log.warning("%s: %s; a copy is kept in .previous/ and this run starts a new one", path, why)
        keep_previous(path)
        return {}
    return {k: r for k, r in summary.items() if isinstance(r, dict)}


def segment_case(case: Case, templates: list[Template], localizer: Localizer, segmenter: Segmenter, out_dir: Path,
                 config: PropagationConfig | None, cache_dir: Path | None, existing: str,
                 progress: ProgressFn | None, cancelled: Callable[[], bool] | None, locked: Collection[str],
                 network: ProbabilitySource | None, corrected: Collection[int]) -> tuple[QueryResult, bool]:
    """One case from start to finish: read it, segment it, write its mask (atomically, a replaced one copied to
    ``.previous/``) and the atlas's votes -> (its result, whether it had a label map before).  A failure of this
    volume is its result, never an exception (but a cancel is)."""
    output = out_dir / f"{case.name}.nii.gz"
    result = QueryResult(case.name, case.image, output)
    t0 = time.perf_counter()
    before = None
    try:
        query = read_volume(case.image)
        result.template = any(is_template_of(t, query) for t in templates)
        before = read_label(output, query, allow_empty=True).array if output.is_file() else None
        label_map, result.targets = segment_query(
            query, templates, localizer, segmenter, config, cache_dir, progress, cancelled,
            existing=before, policy="keep" if existing == "skip" else existing, locked=set(locked),
            network=network)
        # the run writes its templates' targets only, never a locked one or a corrected slice; a mask that is
        # replaced (hand corrections, perhaps) keeps a copy in .previous/
        labels = target_labels(templates)
        guard = WriteGuard.of(case.name, [v for t, v in labels.items() if t not in locked],
                              [v for t, v in labels.items() if t in locked], corrected)
        write_automatic(output, query, before, label_map, guard)
        keep_votes(out_dir, case.name, result.targets)
    except InterruptedError:
        raise
    except (MedLSAMError, ValueError, RuntimeError, OSError) as exc:
        log.error("%s", exc if str(case.image) in str(exc) else f"{case.image}: {exc}")  # the path once
        result.status, result.error, result.output = "failed", f"{type(exc).__name__}: {exc}", None
    result.seconds = time.perf_counter() - t0
    return result, before is not None


def keep_votes(out_dir: Path, case: str, targets: list[LocalizedTarget]) -> Path | None:
    """The atlas's per-template warped masks (and the network's probability where it took part) of the targets whose
    written mask they made, or a mask no template made as its own one vote (``own_votes``), beside the masks
    (``.votes/<case>.npz``): a correction re-fuses them in milliseconds
    (training/correction/).  Targets not re-run keep the votes stored before; a re-run target that no longer has
    votes loses its old ones."""
    path = votes_path(out_dir, case)
    fresh = {t.target: t.template_votes for t in targets
             if t.template_votes is not None and (t.template_votes.own or t.source in (SOURCE_FUSED, SOURCE_COMBINED,
                                                                                       SOURCE_NETWORK))}
    rerun = {t.target for t in targets}
    kept = {name: v for name, v in load_votes(path).items() if name not in rerun} if path.is_file() else {}
    if not fresh and not kept:
        path.unlink(missing_ok=True)
        return None
    return save_votes({**kept, **fresh}, path)


def parse_box(text: str) -> Box3D:
    """'x0,y0,z0,x1,y1,z1' -> Box3D (inclusive voxel indices)."""
    try:
        values = [int(round(float(v))) for v in text.replace(" ", "").split(",")]
    except ValueError as exc:
        raise ValueError(f"box {text!r}: six comma-separated numbers are needed") from exc
    if len(values) != 6:
        raise ValueError(f"box {text!r}: six numbers x0,y0,z0,x1,y1,z1 are needed, got {len(values)}")
    return Box3D(tuple(values[:3]), tuple(values[3:]))


def box_from_mm(text: str, volume: Volume) -> Box3D:
    """'x0,y0,z0,x1,y1,z1' in LPS mm -> the voxel box of ``volume`` covering it."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError as exc:
        raise ValueError(f"box {text!r}: six comma-separated numbers in mm are needed") from exc
    if len(values) != 6:
        raise ValueError(f"box {text!r}: six numbers in mm are needed, got {len(values)}")
    return box_from_physical(np.array(values[:3]), np.array(values[3:]), volume.geometry)
