"""Running the MedLSAM pipeline over a project: the annotator's run button and ``medlsam segment --project``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import MedLSAMError
from ..localization.extreme_points import extreme_points_from_mask
from ..localization.localize import Template
from ..progress import ProgressFn
from ..segmentation.embedding_cache import default_cache_dir
from ..segmentation.propagate import PropagationConfig
from ..volumes.datasets import Case
from ..volumes.io import read_label, read_volume
from ..volumes.volume import Volume
from .folder import Project, ProjectError
from .pipeline import ProbabilitySource, QueryResult, run_queries

log = logging.getLogger(__name__)


def build_templates(project: Project, pool: bool = True) -> list[Template]:
    """Every template volume with its complete, validated targets; explains what is missing.  With ``pool``, every
    other reviewed volume (or locked target) joins as a template with its mask, its extreme points taken from the
    mask (no clicks): the atlas picks the best-matching of them per query (``AtlasLocalizer.max_templates``).

    Each template's points are also (re)exported to ``templates/`` so that the plain CLI runs the same.
    """
    if not project.targets:
        raise ProjectError("no target: add one (name and label value) first")
    ready = project.ready_templates()
    templates = []
    for name, targets in ready.items():
        volume = read_volume(project.volume_path(name))
        for t in targets:
            project.export_template(volume, name, t)
        templates.append(Template(volume, [project.extreme_points(volume, name, t) for t in targets],
                                  reviewed_masks(project, name, volume, targets)))
    if pool:
        templates += reviewed_templates(project, exclude=set(ready))
    if not templates:
        raise ProjectError("no template: mark a volume as template and click six points on it, or review a volume"
                           if not project.templates else "no template has all six points of a target yet")
    return templates


def untemplated_targets(project: Project, templates: list[Template]) -> list[str]:
    """The project's targets that no template holds: a run cannot segment them (said, never skipped silently)."""
    held = {ep.target for t in templates for ep in t.targets}
    return [t.name for t in project.targets if t.name not in held]


def reviewed_templates(project: Project, exclude: set[str] = frozenset()) -> list[Template]:
    """Reviewed volumes (and volumes with locked targets) as templates: each confirmed target with its mask and
    the extreme points of that mask.  A mask that cannot be read is passed over (it never stops a run)."""
    out = []
    for v in project.volumes:
        locked = project.locked_targets(v.name)
        if v.name in exclude or v.status == "missing" or not locked or not project.mask_path(v.name).is_file():
            continue
        try:
            volume = read_volume(project.volume_path(v.name))
            label = read_label(project.mask_path(v.name), volume, allow_empty=True)
        except (MedLSAMError, ValueError, OSError):
            continue
        eps, masks = [], {}
        for t in locked:
            value = project.target(t).label
            if (label.array == value).sum() < MIN_TEMPLATE_VOXELS:
                continue  # not drawn on this volume (or a fragment): nothing to carry over
            eps.append(extreme_points_from_mask(t, value, volume, label))
            masks[t] = label.array == value
        if eps:
            out.append(Template(volume, eps, masks))
    return out


#: a reviewed target with fewer voxels is not used as a template (a stray stroke is not an organ)
MIN_TEMPLATE_VOXELS = 20


def project_network(project: Project) -> ProbabilitySource | None:
    """The project's fine-tuned network (``medlsam finetune --project``, the Learn dock) once its training finished;
    the pipeline combines it with the atlas vote.  None without one."""
    from ..learning.project_loop import project_predictor, trained_model

    path = trained_model(project)
    if path is None:
        return None
    device = None if project.device == "auto" else project.device
    predictor = project_predictor(project, path, device)
    if not predictor.targets:  # nothing it may write: the run is the atlas's alone, and says why
        log.warning("%s: not used (%s)", path, predictor.note or "it learned none of the project's targets")
        return None
    return predictor


def reviewed_masks(project: Project, name: str, volume: Volume, targets: list[str]) -> dict[str, np.ndarray]:
    """A template's targets that the annotator confirmed on it (volume reviewed, or target locked): their masks,
    which label fusion warps into the queries.  Unconfirmed masks are not used: a wrong mask would be copied."""
    path = project.mask_path(name)
    reviewed = project.entry(name).status == "reviewed"
    confirmed = [t for t in targets if reviewed or t in project.locked_targets(name)]
    if not confirmed or not path.is_file():
        return {}
    try:
        label = read_label(path, volume, allow_empty=True).array
    except (MedLSAMError, ValueError, OSError):
        return {}  # an unreadable mask never stops a run: its points still make the template
    values = {t: project.target(t).label for t in confirmed}
    return {t: label == v for t, v in values.items() if (label == v).any()}


def run_project(project: Project, templates: list[Template], queries: list[str], localizer, segmenter,
                progress: ProgressFn | None = None, on_result: Callable[[QueryResult], None] | None = None,
                cancelled: Callable[[], bool] | None = None, existing: str | None = None,
                config: PropagationConfig | None = None, cache_dir: Path | None = None,
                network: ProbabilitySource | None | str = "project", engine=None) -> list[QueryResult]:
    """Segment every query into the project's mask folder; statuses are saved as each volume finishes.

    ``existing`` (default: the project's policy) says what happens to a volume's label map when it exists:
    ``skip`` it, or merge the run's targets into it (``keep``, ``overwrite``, ``empty``).  Reviewed volumes
    and locked targets are never re-segmented, and any mask replaced is first copied to ``<masks>/.previous/``.
    ``network``: the project's fine-tuned network when it has one (``"project"``), another source, or None.
    ``engine``: a Dask cluster (:class:`medlsam_training.cluster.ClusterEngine`) that runs one volume per task.
    """
    if network == "project":
        network = project_network(project)
    queries = [q for q in queries if project.entry(q).status != "reviewed"]
    cases = [Case(name, project.volume_path(name)) for name in queries]
    locked = {name: project.locked_targets(name) for name in queries}
    project.write_label_names()
    results = []
    try:
        for r in run_queries(cases, templates, localizer, segmenter, project.folder / project.output_dir,
                             config or PropagationConfig(mode=project.mode), cache_dir or default_cache_dir(),
                             existing=existing or project.existing, progress=progress, cancelled=cancelled,
                             locked=locked, network=network,
                             corrected={name: project.all_corrected(name) for name in queries}, engine=engine):
            if r.status == "done":
                project.set_status(r.name, "segmented", r.output)
            elif r.status == "failed":
                project.set_status(r.name, "failed", error=r.error)
            results.append(r)
            if on_result:
                on_result(r)
    except InterruptedError:
        pass  # cancelled: finished volumes are saved, the current one is left as it was
    return results
