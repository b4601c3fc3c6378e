"""A dock's background job takes the thread policy in its own thread (OpenMP's count is per thread): the Learn
dock's training no longer runs torch on every core beside busy processes (issue 42, item 1)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("qtpy")
if not os.environ.get("DISPLAY"):
    pytest.skip("Qt widgets need a display: run the tests under xvfb-run (see README)", allow_module_level=True)

import torch  # noqa: E402

from medlsam_napari.dock_job import DockJob  # noqa: E402


@pytest.mark.parametrize("generator", [False, True])
def test_a_dock_job_runs_with_the_policys_threads(qtbot, monkeypatch, generator: bool) -> None:
    monkeypatch.setenv("MEDLSAM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: list[int] = []
    job = DockJob("threads")
    if generator:
        def work():
            yield torch.get_num_threads()
            return torch.get_num_threads()
        job.start(work, on_done=seen.append, on_yield=seen.append)
    else:
        job.start(lambda: torch.get_num_threads(), on_done=seen.append)
    qtbot.waitUntil(lambda: not job.busy, timeout=30_000)
    torch.set_num_threads(before)
    assert seen == ([1, 1] if generator else [1])
