"""Long work reports through napari's own progress (activity panel) and can be cancelled at the next report."""

from __future__ import annotations

import os
import threading

import pytest

pytest.importorskip("qtpy")
if not os.environ.get("DISPLAY"):
    pytest.skip("Qt widgets need a display: run the tests under xvfb-run (see README)", allow_module_level=True)

from napari.utils import progress  # noqa: E402

from medlsam_napari.progress import ProgressBridge  # noqa: E402


def test_reports_from_a_worker_thread_move_a_napari_progress_bar(qtbot) -> None:
    bridge = ProgressBridge("MedLSAM")
    seen = []
    bridge.progress.connect(lambda d, t, m: seen.append((d, t, m)))
    report = bridge.reporter(threading.Event())
    worker = threading.Thread(target=lambda: [report(i, 8, f"slice {i}") for i in range(1, 6)])
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: len(seen) == 5)
    [bar] = [b for b in progress._all_instances if str(b.desc).startswith("MedLSAM")]
    assert (bar.n, bar.total) == (5, 8) and "slice 5" in bar.desc
    bridge.progress.emit(3, 20, "next volume")  # a new total starts the bar again
    qtbot.waitUntil(lambda: bar.total == 20)
    assert bar.n == 3
    bridge.close()
    assert bar not in progress._all_instances


def test_cancel_stops_at_the_next_report() -> None:
    cancel = threading.Event()
    report = ProgressBridge().reporter(cancel, "stopped by the user")
    report(1, 2, "")
    cancel.set()
    with pytest.raises(InterruptedError, match="stopped by the user"):
        report(2, 2, "")
