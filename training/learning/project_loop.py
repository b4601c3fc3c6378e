"""The learning loop on a project folder: reviewed work trains the slice network, which pre-segments the rest.

Training set: the volumes the user chose among those with a mask that are reviewed (all their targets locked) or have
locked targets; a volume teaches only its locked targets that its mask holds (a target it has no voxels of is
unknown, never background).  A chosen volume whose mask holds none of them is left out with a line saying so.
Targets: those asked for that some training volume holds; the others are said by name and never trained.  The
checkpoint records which targets it learned (``train.learned_targets``): only those are ever written.
Pre-segmentation: every volume that is not reviewed, through the guarded writer (``project/guard.py``): locked
targets, corrected slices and targets the network did not learn are never changed.  A target the run already
segmented from the atlas is combined with the atlas's stored votes as the run combines them (never added to), in the
mix learned per target from the reviewed volumes (``combination``); one without votes is left as it is under
``empty`` and replaced by the network's under ``keep`` / ``overwrite``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..coreset.probe import SliceCase, load_slice_case
from ..correction.votes import TemplateVotes, load_votes, save_votes, votes_path, with_probability
from ..engine.checkpoint import CheckpointError, load_checkpoint, update_meta
from ..engine.loop import FitResult
from ..errors import DatasetError, MedLSAMError
from ..progress import CancelledFn, ProgressFn
from ..project.folder import UNREADABLE, Project
from ..project.guard import WriteGuard, write_automatic
from ..project.pipeline import combination_share
from ..segmentation.label_merge import check_policy, merge_target
from ..segmentation.propagate import clean_mask, single_part_target
from ..volumes.atomic import keep_previous
from ..volumes.datasets import Case
from ..volumes.io import read_label, read_volume
from ..volumes.volume import Volume
from .combination import Combination, learn_combination
from .train import KIND_SEG, LearnConfig, SliceNetPredictor, finetune

log = logging.getLogger(__name__)
MODELS_DIR = "models"
CHECKPOINT_NAME = "slicenet.pt"


@dataclass
class TrainingVolume:
    name: str
    image: Path
    mask: Path
    targets: list[str]  # the locked targets this volume teaches


@dataclass
class PresegmentReport:
    written: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # volume -> why
    seconds: dict[str, float] = field(default_factory=dict)
    note: str = ""  # why nothing was written, when nothing could be


def checkpoint_path(project: Project) -> Path:
    return project.folder / MODELS_DIR / CHECKPOINT_NAME


def training_volumes(project: Project, targets: list[str] | None = None, names: list[str] | None = None
                     ) -> list[TrainingVolume]:
    """Volumes whose reviewed (locked) targets teach the network, with the targets each teaches (of ``names``
    only, when given: the volumes the user chose)."""
    wanted = [t.name for t in project.targets] if targets is None else list(targets)
    out = []
    for v in project.volumes:
        if names is not None and v.name not in names:
            continue
        mask = project.mask_path(v.name)
        locked = [t for t in project.locked_targets(v.name) if t in wanted]
        if v.status == "missing" or not locked or not mask.is_file():
            continue
        out.append(TrainingVolume(v.name, project.volume_path(v.name), mask, locked))
    return out


def _slice_case(project: Project, tv: TrainingVolume, targets: list[str]) -> SliceCase:
    names = {project.target(t).label: t for t in tv.targets}  # only locked targets are named: the rest are unknown
    return load_slice_case(Case(tv.name, tv.image, tv.mask, names), targets)


@dataclass
class TrainingSet:
    """What a training will learn from: the volumes, the targets some of them hold, and what was left out."""

    volumes: list[TrainingVolume]
    targets: list[str]
    untrained: dict[str, str] = field(default_factory=dict)  # target -> why it is not trained
    left_out: dict[str, str] = field(default_factory=dict)  # volume -> why it teaches nothing


@dataclass
class ProjectFit(FitResult):
    """A project's training: the fit, the volumes it learned from, and what it left out (said by name)."""

    volumes: list[str] = field(default_factory=list)
    untrained: dict[str, str] = field(default_factory=dict)  # target -> why it was not trained
    left_out: dict[str, str] = field(default_factory=dict)  # volume -> why it taught nothing
    #: per target, its mix with the atlas vote, chosen on the reviewed volumes (``learning.combination``)
    combination: dict[str, Combination] = field(default_factory=dict)


def training_set(project: Project, targets: list[str] | None = None, names: list[str] | None = None
                 ) -> TrainingSet:
    """The volumes and targets a training takes (reads each chosen volume's mask once)."""
    targets = [t.name for t in project.targets] if targets is None else list(targets)
    chosen, held, left_out = [], set(), {}
    for tv in training_volumes(project, targets, names):
        try:
            values = {int(v) for v in np.unique(read_label(tv.mask, allow_empty=True).array)}
        except (MedLSAMError, ValueError, OSError) as exc:
            left_out[tv.name] = f"its mask cannot be read ({str(exc).splitlines()[0][:160]})"
            continue
        holds = [t for t in tv.targets if project.target(t).label in values]
        if not holds:
            left_out[tv.name] = f"its mask holds none of {', '.join(tv.targets)}: nothing to learn from it"
            continue
        chosen.append(TrainingVolume(tv.name, tv.image, tv.mask, holds))
        held.update(holds)
    untrained = {t: "no chosen reviewed volume holds a contour of it" for t in targets if t not in held}
    return TrainingSet(chosen, [t for t in targets if t in held], untrained, left_out)


def finetune_project(project: Project, *, targets: list[str] | None = None, volumes: list[str] | None = None,
                     cfg: LearnConfig | None = None, init: str | os.PathLike[str] | None = None,
                     out: str | os.PathLike[str] | None = None, progress: ProgressFn | None = None,
                     cancelled: CancelledFn | None = None, device: str | torch.device | None = None,
                     say=log.warning) -> ProjectFit:
    """Train on the project's reviewed work (``volumes``: the chosen ones, default all), from scratch or from
    ``init`` (a Volume Fusion checkpoint: no weights ship, since pretraining was not ahead of scratch by the issue's
    margin, docs/benchmarks.md 7).  Only targets some chosen volume holds are trained; the rest, and volumes that
    hold none, are said (``say``) and recorded on the result (``result.untrained``, ``result.left_out``).  An
    unfinished run on the same volumes and targets resumes; a finished model is kept in ``models/.previous/``."""
    asked = [t.name for t in project.targets] if targets is None else list(targets)
    if not asked:
        raise DatasetError(f"{project.folder}: the project has no targets to learn")
    found = training_set(project, asked, volumes)
    for name, why in found.left_out.items():
        say(f"{name}: left out of the training: {why}")
    if not found.volumes:
        raise DatasetError(f"{project.folder}: no reviewed volume (or locked target) with a contour of "
                           f"{', '.join(asked)} to learn from; review some volumes first")
    for t, why in found.untrained.items():
        say(f"{t}: not trained ({why}); the network will never write it")
    targets = found.targets
    cases = [_slice_case(project, tv, targets) for tv in found.volumes]
    out = Path(out) if out is not None else checkpoint_path(project)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = cfg or LearnConfig()
    names = [c.name for c in cases if c.contoured.any()]
    if out.is_file() and not _resumable(out, names, targets, cfg.steps):
        keep_previous(out)  # a finished model, or one of other volumes: kept as a copy, a new run starts
        out.unlink()
    values = [project.target(t).label for t in targets]
    result = finetune(cases, targets, out, cfg, init=init, values=values, progress=progress,
                      cancelled=cancelled, device=device)
    mix: dict[str, Combination] = {}
    if result.path is not None and result.steps >= cfg.steps:  # a finished network learns its mix with the atlas
        mix = learn_combination(project, targets, found.volumes)
        update_meta(result.path, combination={t: c.to_meta() for t, c in mix.items()})
    return ProjectFit(**vars(result), volumes=names, untrained=found.untrained, left_out=found.left_out,
                      combination=mix)


def _resumable(path: Path, volumes: list[str], targets: list[str], steps: int) -> bool:
    """An unfinished run on the same volumes and targets (a cancelled training) continues; anything else not."""
    try:
        state = load_checkpoint(path, KIND_SEG)
    except CheckpointError:
        return False
    meta = state["meta"]
    return ("optimizer" in state and int(state.get("step", 0)) < steps and meta.get("volumes") == volumes
            and meta.get("targets") == targets)


def trained_model(project: Project) -> Path | None:
    """The project's fine-tuned network when its training finished (a cancelled run is not used to segment)."""
    path = checkpoint_path(project)
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path, KIND_SEG)
    except CheckpointError:
        return None
    steps = (state["meta"].get("config") or {}).get("steps")
    finished = "optimizer" not in state or steps is None or int(state.get("step", 0)) >= int(steps)
    return path if finished else None


def project_predictor(project: Project, checkpoint: str | os.PathLike[str] | dict | None = None,
                      device: str | torch.device | None = None) -> SliceNetPredictor:
    """The network (the project's own by default) with its learned targets named as the project names their label
    values now: a renamed target stays learned, a deleted one is never written."""
    path = checkpoint or checkpoint_path(project)
    return SliceNetPredictor(path, device).named({t.label: t.name for t in project.targets})


def pending_volumes(project: Project) -> list[str]:
    """Volumes a pre-segmentation may write: present on disk, readable and not reviewed."""
    return [v.name for v in project.volumes if v.status not in ("reviewed", "missing")
            and not (v.status == "failed" and (v.error or "").startswith(UNREADABLE))]


def presegment_project(project: Project, checkpoint: str | os.PathLike[str] | None = None, *,
                       names: list[str] | None = None, policy: str = "empty",
                       progress: ProgressFn | None = None, cancelled: CancelledFn | None = None,
                       device: str | torch.device | None = None, engine=None) -> PresegmentReport:
    """Pre-segment pending volumes with the fine-tuned network's learned targets (:func:`merge_prediction`).

    ``engine``: a Dask cluster (:class:`medlsam_training.cluster.ClusterEngine`): one volume per task, the network
    sent to each worker once, each mask written by its worker; this process keeps the statuses.  A volume that fails
    stops the pre-segmentation (here and on the cluster); every volume written before is recorded."""
    check_policy(policy)
    path = checkpoint or checkpoint_path(project)
    state = load_checkpoint(path, KIND_SEG, "learning-loop segmentation checkpoint (medlsam finetune)")
    predictor = project_predictor(project, state, device)
    names = pending_volumes(project) if names is None else names
    report = PresegmentReport()
    if not predictor.targets:  # a training that learned nothing writes nothing (said, not an error)
        report.note = f"{path}: {predictor.note or 'the network learned none of the project targets'}"
        report.skipped = {name: "the network learned none of its targets" for name in names}
        return report
    jobs = []
    for name in names:
        entry = project.entry(name)
        if entry.status in ("reviewed", "missing"):
            report.skipped[name] = f"{entry.status}: never pre-segmented"
        else:
            jobs.append(presegment_job(project, name, predictor))
    if engine is not None:
        stat = Path(path).stat()
        results = engine.presegment(jobs, state, f"{Path(path).resolve()}:{stat.st_mtime_ns}:{stat.st_size}", policy,
                                    str(device) if device else None, cancelled)
    else:
        results = _presegment_here(jobs, predictor, policy, progress, cancelled)
    for i, (job, (written, seconds)) in enumerate(results):
        if written is None:
            report.skipped[job.name] = "every target it would write is locked"
            continue
        project.set_status(job.name, "segmented", Path(written))
        report.written.append(job.name)
        report.seconds[job.name] = seconds
        if engine is not None and progress is not None:
            progress(i + 1, len(jobs), f"pre-segmented {job.name}")
    if progress is not None:
        progress(len(jobs), len(jobs), "pre-segmentation done")
    return report


@dataclass
class PresegmentJob:
    """One volume's pre-segmentation, all a worker needs of the project: its files and what the write keeps."""

    name: str
    image: Path
    mask: Path
    guard: WriteGuard  # the targets it may write (learned, not locked), locked targets, corrected slices
    names: dict[int, str]  # the project's target names by label value (its votes are stored by name)


def presegment_job(project: Project, name: str, predictor: SliceNetPredictor) -> PresegmentJob:
    return PresegmentJob(name, project.volume_path(name), project.mask_path(name),
                         WriteGuard.for_project(project, name, predictor.targets),
                         {t.label: t.name for t in project.targets})


def _presegment_here(jobs: list[PresegmentJob], predictor: SliceNetPredictor, policy: str,
                     progress: ProgressFn | None, cancelled: CancelledFn | None):
    for i, job in enumerate(jobs):
        if cancelled is not None and cancelled():
            raise InterruptedError("cancelled")
        if progress is not None:
            progress(i, len(jobs), f"pre-segmenting {job.name}")
        yield job, run_presegment_job(job, predictor, policy)


def run_presegment_job(job: PresegmentJob, predictor: SliceNetPredictor, policy: str) -> tuple[str | None, float]:
    """Predict, merge and write one volume's label map through the guarded writer (the previous one kept in
    ``.previous/``) -> (the mask written, or None when it may write no target; CPU seconds)."""
    cpu = time.process_time()
    volume = read_volume(job.image)
    merged = merge_prediction(volume, predictor.named(job.names), job, policy)
    if merged is None:
        return None, time.process_time() - cpu
    before, label_map, votes = merged
    write_automatic(job.mask, volume, before, label_map, job.guard)
    _keep_votes(job, votes)
    return str(job.mask), time.process_time() - cpu


def write_presegmentation(project: Project, name: str, volume: Volume, merged: tuple) -> Path | None:
    """Write a pre-segmented label map (:func:`presegment_volume`) through the guarded writer, the previous mask kept
    in ``.previous/``; returns that copy."""
    before, label_map, votes = merged
    # the guard as the project stands now: a target locked or a slice corrected while the network ran is kept
    job = PresegmentJob(name, project.volume_path(name), project.mask_path(name),
                        WriteGuard.for_project(project, name, votes["targets"]),
                        {t.label: t.name for t in project.targets})
    _, backup = write_automatic(job.mask, volume, before, label_map, job.guard)
    _keep_votes(job, votes)
    project.set_status(name, "segmented", job.mask)
    return backup


def presegment_volume(project: Project, name: str, volume: Volume, predictor: SliceNetPredictor,
                      policy: str = "empty") -> tuple | None:
    """(the label map on disk, the new one, its votes) with the network's learned targets merged in by ``policy``
    (None: it may write none of them here)."""
    return merge_prediction(volume, predictor, presegment_job(project, name, predictor), policy)


def merge_prediction(volume: Volume, predictor: SliceNetPredictor, job: PresegmentJob, policy: str = "empty"
                     ) -> tuple[np.ndarray | None, np.ndarray, dict] | None:
    """(the label map in ``job.mask`` or None, that map with the network's targets merged in, the votes to keep)
    -> None when the guard lets it write none of its targets.

    Per learned target the guard lets it write: with the atlas's votes stored by the volume's run, the network's
    probability joins them as the run combines them (``pipeline.combine``) and replaces the target's automatic mask;
    without votes, a target the map already holds stays as it is under ``empty`` (and is replaced otherwise); a
    target it does not hold gets the network's mask.  The guard's corrected slices and locked targets are kept."""
    writable = [(t, v) for t, v in zip(predictor.targets, predictor.learned_values) if v in job.guard.writable]
    if not writable:
        return None
    before = read_label(job.mask, volume, allow_empty=True).array if job.mask.is_file() else None
    probs, grid = predictor.probabilities(volume)
    maps = predictor.class_maps(probs, grid, volume, range(probs.shape[0]))  # each class resampled once, used twice
    own = predictor.label_map(maps)
    probability = predictor.learned_probabilities(maps)
    stored = load_votes(votes_path(job.mask.parent, job.name))
    top = max([v for _, v in writable] + [int(before.max()) if before is not None else 0])
    dtype = np.uint16 if top > 255 else np.uint8
    label_map = np.zeros(volume.array.shape, dtype) if before is None else before.astype(dtype)
    locked = sorted(job.guard.locked)
    fresh: dict[str, TemplateVotes] = {}
    for target, value in writable:
        atlas = _atlas_part(stored.get(target))
        if atlas is not None:
            votes = with_probability(atlas, probability[target], *predictor.share(target, True))
            mask = np.zeros(volume.array.shape, bool)
            mask[votes.box.slices] = votes.vote() >= votes.threshold
            mask = clean_mask(mask, single_part_target(target), fill_holes=False)
            label_map = merge_target(label_map, mask, value, "overwrite" if policy == "overwrite" else "keep", locked)
            fresh[target] = votes
        elif policy == "empty" and before is not None and (before == value).any():
            continue  # an automatic mask without votes (SAM, bone threshold, an earlier network): left as it is
        else:
            label_map = merge_target(label_map, own == value, value, "keep" if policy == "empty" else policy, locked)
            if (own == value).any():
                fresh[target] = with_probability(None, probability[target], *combination_share(False))
    return before, label_map, {"targets": [t for t, _ in writable], "votes": fresh}


def _atlas_part(votes: TemplateVotes | None) -> TemplateVotes | None:
    """The atlas's own voters of stored votes (an earlier network's probability, the last voter, dropped); None
    where no template voted (the run's own mask from LiteMedSAM, the box prior or the bone threshold)."""
    if votes is not None and votes.own:
        return None
    if votes is None or not votes.network:
        return votes
    if len(votes.weights) < 2:
        return None  # the network alone made it
    return TemplateVotes(votes.box, votes.warped[:-1], votes.weights[:-1], votes.threshold).tight()


def _keep_votes(job: PresegmentJob, votes: dict) -> None:
    """The combination's votes beside the mask, so that a correction re-thresholds what the annotator sees."""
    if not votes["votes"]:
        return
    path = votes_path(job.mask.parent, job.name)
    save_votes({**load_votes(path), **votes["votes"]}, path)
