"""What runs on a Dask worker: the models built once per worker process, one volume per task."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

_MODELS: dict[tuple, tuple] = {}


def _models(localizer: str, segmenter: str, device: str | None, threads: int) -> tuple:
    """The localizer and segmenter of this worker, built on its first task (the same for every later one, so the
    localizer's caches of the templates' images hold across tasks); ``threads`` for the atlas's registrations."""
    key = (localizer, segmenter, device, threads)
    if key not in _MODELS:
        import torch

        from ..localize import make_localizer
        from ..options import LOCALIZER_ALIASES, LocalizerName, choose
        from ..segmenters import load_segmenter

        if "OMP_NUM_THREADS" not in os.environ:  # one thread per worker unless set: workers share the cores
            torch.set_num_threads(1)
        atlas = choose(localizer, LocalizerName, "localizer", LOCALIZER_ALIASES) == LocalizerName.ATLAS
        _MODELS[key] = (make_localizer(localizer, device=device, **({"workers": threads} if atlas else {})),
                        load_segmenter(segmenter, device=device))
    return _MODELS[key]


def segment_task(case, cwd: Path, templates, network, localizer: str, segmenter: str, device: str | None, threads: int,
                 out_dir: Path, config, cache_dir, existing: str, locked: list[str], corrected: list[int]):
    """One volume, as ``pipeline.segment_case`` does it in one process (a relative path read from the client's
    folder ``cwd``); the result travels back without its arrays (the mask is on disk)."""
    from ..pipeline import segment_case

    loc, seg = _models(localizer, segmenter, device, threads)
    result, had_mask = segment_case(replace(case, image=Path(cwd) / case.image), templates, loc, seg, Path(out_dir),
                                    config, cache_dir, existing, None, None, locked, network, corrected)
    result.image = case.image  # the summary names it as the client was given it
    result.targets = [replace(t, mask=None, vote=None, template_votes=None) for t in result.targets]
    return result, had_mask
