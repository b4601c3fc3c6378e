"""What runs on a Dask worker: the models built once per worker process, one volume per task."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

_MODELS: dict[tuple, object] = {}  # what this worker built: localizers, segmenters, networks


def _one_thread_each() -> None:
    """One thread for torch, SimpleITK and ITK in each worker (the workers share the cores; Dask's nanny sets
    OMP_NUM_THREADS=1 for torch alone), unless MEDLSAM_THREADS (or OMP_NUM_THREADS) says otherwise:
    training/threads.py."""
    from ..threads import apply_thread_policy, explicit_threads

    apply_thread_policy(explicit_threads() or 1)


def _localizer(localizer: str, device: str | None, threads: int):
    """This worker's localizer, built on its first task (the same for every later one, so the localizer's caches
    of the templates' images hold across tasks); ``threads`` for the atlas's registrations."""
    key = ("localizer", localizer, device, threads)
    if key not in _MODELS:
        from ..localization.localize import make_localizer
        from ..options import LOCALIZER_ALIASES, LocalizerName, choose

        _one_thread_each()
        atlas = choose(localizer, LocalizerName, "localizer", LOCALIZER_ALIASES) == LocalizerName.ATLAS
        _MODELS[key] = make_localizer(localizer, device=device, **({"workers": threads} if atlas else {}))
    return _MODELS[key]


def _models(localizer: str, segmenter: str, device: str | None, threads: int) -> tuple:
    """The localizer and segmenter of this worker, each built once."""
    key = ("segmenter", segmenter, device)
    if key not in _MODELS:
        from ..segmentation.segmenters import load_segmenter

        _MODELS[key] = load_segmenter(segmenter, device=device)
    return _localizer(localizer, device, threads), _MODELS[key]


def localize_task(case, cwd: Path, templates, localizer: str, device: str | None, threads: int) -> dict:
    """One volume's ``medlsam localize`` record, as ``pipeline.localize_case`` makes it in one process."""
    from ..project.pipeline import localize_case

    return localize_case(_localizer(localizer, device, threads), replace(case, image=Path(cwd) / case.image),
                         templates)


def segment_task(case, cwd: Path, templates, network, localizer: str, segmenter: str, device: str | None, threads: int,
                 out_dir: Path, config, cache_dir, existing: str, locked: list[str], corrected: list[int]):
    """One volume, as ``pipeline.segment_case`` does it in one process (a relative path read from the client's
    folder ``cwd``); the result travels back without its arrays (the mask is on disk)."""
    from ..project.pipeline import segment_case

    loc, seg = _models(localizer, segmenter, device, threads)
    result, had_mask = segment_case(replace(case, image=Path(cwd) / case.image), templates, loc, seg, Path(out_dir),
                                    config, cache_dir, existing, None, None, locked, network, corrected)
    result.image = case.image  # the summary names it as the client was given it
    result.targets = [replace(t, mask=None, vote=None, template_votes=None) for t in result.targets]
    return result, had_mask


#: what a pre-segmentation task returns when the run was stopped before it began (nothing written)
STOPPED = "medlsam: stopped before it began"


def presegment_task(job, state: dict, tag: str, policy: str, device: str | None, stop: str | None = None
                    ) -> tuple[str | None, float]:
    """One volume's pre-segmentation by the learning loop's network, built once per worker from ``state`` (``tag``
    names that checkpoint's version: a later run with new weights builds it again); nothing is done once the
    Dask event ``stop`` is set (another volume failed)."""
    from ..learning.project_loop import run_presegment_job
    from ..learning.train import SliceNetPredictor

    if stop is not None:
        from distributed import Event

        if Event(stop).is_set():
            return STOPPED, 0.0
    key = ("slicenet", tag, device)
    if key not in _MODELS:
        _one_thread_each()
        _MODELS[key] = SliceNetPredictor(state, device)
    return run_presegment_job(job, _MODELS[key], policy)
