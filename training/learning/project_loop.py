"""The learning loop on a project folder: reviewed work trains the slice network, which pre-segments the rest.

Training set: every volume with a mask that is reviewed (all its targets locked) or has locked targets; a volume
teaches only its locked targets that its mask holds (a target it has no voxels of is unknown, never background).
Pre-segmentation: every volume that is not reviewed, each predicted target merged into its label map by the label
policy (``training/segmentation/label_merge.py``); locked targets are never changed, the previous mask is kept as a
copy and the write is atomic.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..coreset.probe import SliceCase, load_slice_case
from ..engine.checkpoint import CheckpointError, load_checkpoint
from ..engine.loop import FitResult
from ..errors import DatasetError
from ..progress import CancelledFn, ProgressFn
from ..project.folder import Project
from ..segmentation.label_merge import check_policy, merge_target
from ..volumes.atomic import keep_previous
from ..volumes.datasets import Case
from ..volumes.io import read_label, read_volume, write_mask
from ..volumes.volume import Volume
from .train import KIND_SEG, LearnConfig, SliceNetPredictor, finetune

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


def checkpoint_path(project: Project) -> Path:
    return project.folder / MODELS_DIR / CHECKPOINT_NAME


def training_volumes(project: Project, targets: list[str] | None = None) -> list[TrainingVolume]:
    """Volumes whose reviewed (locked) targets teach the network, with the targets each teaches."""
    wanted = [t.name for t in project.targets] if targets is None else list(targets)
    out = []
    for v in project.volumes:
        mask = project.mask_path(v.name)
        locked = [t for t in project.locked_targets(v.name) if t in wanted]
        if v.status == "missing" or not locked or not mask.is_file():
            continue
        out.append(TrainingVolume(v.name, project.volume_path(v.name), mask, locked))
    return out


def _slice_case(project: Project, tv: TrainingVolume, targets: list[str]) -> SliceCase:
    names = {project.target(t).label: t for t in tv.targets}  # only locked targets are named: the rest are unknown
    return load_slice_case(Case(tv.name, tv.image, tv.mask, names), targets)


def finetune_project(project: Project, *, targets: list[str] | None = None, cfg: LearnConfig | None = None,
                     init: str | os.PathLike[str] | None = None, out: str | os.PathLike[str] | None = None,
                     progress: ProgressFn | None = None, cancelled: CancelledFn | None = None,
                     device: str | torch.device | None = None) -> FitResult:
    """Train on the project's reviewed work, from scratch or from ``init`` (a Volume Fusion checkpoint: no weights
    ship, since pretraining was not ahead of scratch by the issue's margin, docs/benchmarks.md 7).  An unfinished run
    on the same volumes and targets resumes; a finished model is kept in ``models/.previous/`` and a new run starts."""
    targets = [t.name for t in project.targets] if targets is None else list(targets)
    if not targets:
        raise DatasetError(f"{project.folder}: the project has no targets to learn")
    volumes = training_volumes(project, targets)
    if not volumes:
        raise DatasetError(f"{project.folder}: no reviewed volume (or locked target) with a mask to learn from; "
                           "review some volumes first")
    cases = [_slice_case(project, tv, targets) for tv in volumes]
    if not any(c.contoured.any() for c in cases):
        raise DatasetError(f"{project.folder}: the reviewed masks hold none of the targets {targets}")
    out = Path(out) if out is not None else checkpoint_path(project)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = cfg or LearnConfig()
    names = [c.name for c in cases if c.contoured.any()]
    if out.is_file() and not _resumable(out, names, targets, cfg.steps):
        keep_previous(out)  # a finished model, or one of other volumes: kept as a copy, a new run starts
        out.unlink()
    values = [project.target(t).label for t in targets]
    return finetune(cases, targets, out, cfg, init=init, values=values, progress=progress,
                    cancelled=cancelled, device=device)


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


def pending_volumes(project: Project) -> list[str]:
    """Volumes a pre-segmentation may write: present on disk and not reviewed."""
    return [v.name for v in project.volumes if v.status not in ("reviewed", "missing")]


def presegment_project(project: Project, checkpoint: str | os.PathLike[str] | None = None, *,
                       names: list[str] | None = None, policy: str = "empty",
                       progress: ProgressFn | None = None, cancelled: CancelledFn | None = None,
                       device: str | torch.device | None = None, engine=None) -> PresegmentReport:
    """Pre-segment pending volumes with the fine-tuned network, merged into each label map by ``policy``.

    ``engine``: a Dask cluster (:class:`medlsam_training.cluster.ClusterEngine`): one volume per task, the network
    sent to each worker once, each mask written by its worker; this process keeps the statuses."""
    check_policy(policy)
    path = checkpoint or checkpoint_path(project)
    names = pending_volumes(project) if names is None else names
    report = PresegmentReport()
    jobs = []
    for name in names:
        entry = project.entry(name)
        if entry.status in ("reviewed", "missing"):
            report.skipped[name] = f"{entry.status}: never pre-segmented"
        else:
            jobs.append(presegment_job(project, name))
    if engine is not None:
        state = load_checkpoint(path, KIND_SEG, "learning-loop segmentation checkpoint (medlsam finetune)")
        stat = Path(path).stat()
        results = engine.presegment(jobs, state, f"{Path(path).resolve()}:{stat.st_mtime_ns}:{stat.st_size}", policy,
                                    str(device) if device else None, cancelled)
    else:
        results = _presegment_here(jobs, SliceNetPredictor(path, device), policy, progress, cancelled)
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
    """One volume's pre-segmentation, all a worker needs of the project: its files, its locked targets."""

    name: str
    image: Path
    mask: Path
    locked: list[str]
    locked_values: list[int]


def presegment_job(project: Project, name: str) -> PresegmentJob:
    locked = sorted(project.locked_targets(name))
    values = [project.target(t).label for t in locked if any(t == x.name for x in project.targets)]
    return PresegmentJob(name, project.volume_path(name), project.mask_path(name), locked, values)


def _presegment_here(jobs: list[PresegmentJob], predictor: SliceNetPredictor, policy: str,
                     progress: ProgressFn | None, cancelled: CancelledFn | None):
    for i, job in enumerate(jobs):
        if cancelled is not None and cancelled():
            raise InterruptedError("cancelled")
        if progress is not None:
            progress(i, len(jobs), f"pre-segmenting {job.name}")
        yield job, run_presegment_job(job, predictor, policy)


def run_presegment_job(job: PresegmentJob, predictor: SliceNetPredictor, policy: str) -> tuple[str | None, float]:
    """Predict, merge and write one volume's label map (atomically, the previous one kept in ``.previous/``) ->
    (the mask written, or None when every target it would write is locked; CPU seconds)."""
    cpu = time.process_time()
    volume = read_volume(job.image)
    label_map = merge_prediction(volume, predictor, set(job.locked), job.locked_values, job.mask, policy)
    if label_map is None:
        return None, time.process_time() - cpu
    keep_previous(job.mask)
    return str(write_mask(label_map, volume, job.mask)), time.process_time() - cpu


def write_presegmentation(project: Project, name: str, volume: Volume, label_map: np.ndarray) -> Path | None:
    """Write a pre-segmented label map atomically, the previous mask kept in ``.previous/``; returns that copy."""
    target = project.mask_path(name)
    backup = keep_previous(target)
    project.set_status(name, "segmented", write_mask(label_map, volume, target))
    return backup


def presegment_volume(project: Project, name: str, volume: Volume, predictor: SliceNetPredictor,
                      policy: str = "empty") -> np.ndarray | None:
    """The volume's label map with the network's targets merged in by ``policy`` (None: all of them locked)."""
    job = presegment_job(project, name)
    return merge_prediction(volume, predictor, set(job.locked), job.locked_values, job.mask, policy)


def merge_prediction(volume: Volume, predictor: SliceNetPredictor, locked: set[str], locked_values: list[int],
                     mask_file: Path, policy: str = "empty") -> np.ndarray | None:
    """The label map in ``mask_file`` (empty when there is none) with the network's targets that are not
    ``locked`` merged in by ``policy`` (None: all of them locked)."""
    writable = [(t, v) for t, v in zip(predictor.targets, predictor.values) if t not in locked]
    if not writable:
        return None
    existing = read_label(mask_file).array if mask_file.is_file() else None
    if existing is not None and existing.shape != volume.array.shape:
        raise DatasetError(f"{mask_file}: label map of shape {existing.shape} does not match its volume "
                           f"{volume.array.shape}")
    pred = predictor.predict(volume)
    top = max([v for _, v in writable] + [int(existing.max()) if existing is not None else 0])
    label_map = np.zeros(volume.array.shape, np.uint16 if top > 255 else np.uint8) if existing is None \
        else existing.astype(np.uint16 if top > 255 else np.uint8)
    for _, value in writable:
        label_map = merge_target(label_map, pred == value, value, policy, locked_values)
    return label_map

