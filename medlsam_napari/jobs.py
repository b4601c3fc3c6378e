"""The annotator's long jobs, Qt-free: build templates from the project, load models, run the pipeline."""

from __future__ import annotations

from collections.abc import Callable

from medlsam_training.embedding_cache import ProgressFn, default_cache_dir
from medlsam_training.io import read_volume
from medlsam_training.localize import Template, make_localizer
from medlsam_training.datasets import Case
from medlsam_training.pipeline import QueryResult, run_queries
from medlsam_training.propagate import PropagationConfig
from medlsam_training.segmenters import load_segmenter

from .project import Project, ProjectError


def build_templates(project: Project) -> list[Template]:
    """Every template volume with its complete, validated targets; explains what is missing."""
    if not project.targets:
        raise ProjectError("no target: add one (name and label value) first")
    if not project.templates:
        raise ProjectError("no template: mark a volume as template and click six points on it")
    ready = project.ready_templates()
    if not ready:
        raise ProjectError("no template has all six points of a target yet")
    templates = []
    for name, targets in ready.items():
        volume = read_volume(project.volume_path(name))
        templates.append(Template(volume, [project.extreme_points(volume, name, t) for t in targets]))
    return templates


def load_models(project: Project, cache: dict[str, object]):
    """(localizer, segmenter) for the project's settings; segmenters are kept across runs."""
    device = None if project.device == "auto" else project.device
    key = f"{project.segmenter}@{device}"
    if key not in cache:
        cache[key] = load_segmenter(project.segmenter, device=device)
    kwargs = {"device": device} if project.localizer.startswith("medlam") else {}
    return make_localizer(project.localizer, **kwargs), cache[key]


def run_project(project: Project, templates: list[Template], queries: list[str], localizer, segmenter,
                progress: ProgressFn | None = None, on_result: Callable[[QueryResult], None] | None = None,
                cancelled: Callable[[], bool] | None = None) -> list[QueryResult]:
    """Segment every query into the project's mask folder; statuses are saved as each volume finishes.

    Reviewed volumes are never re-segmented; any other existing mask is first copied to
    ``<masks>/.previous/`` so that a re-run cannot destroy hand corrections.
    """
    queries = [q for q in queries if project.entry(q).status != "reviewed"]
    cases = [Case(name, project.volume_path(name)) for name in queries]
    out = project.folder / project.output_dir
    for name in queries:
        project.keep_previous_mask(name)
    results = []
    try:
        for r in run_queries(cases, templates, localizer, segmenter, out, PropagationConfig(mode=project.mode),
                             default_cache_dir(), overwrite=True, progress=progress, cancelled=cancelled):
            if r.status == "done":
                project.set_status(r.name, "segmented", r.output)
            elif r.status == "failed":
                project.set_status(r.name, "failed")
            results.append(r)
            if on_result:
                on_result(r)
    except InterruptedError:
        pass  # cancelled: finished volumes are saved, the current one is left as it was
    return results
