"""A dock's background job, written once: a napari thread worker, its progress (the dock's bar and status line and
napari's activity panel), cancellation at the next progress report, and the buttons that stay off while it runs."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any

from medlsam_training.progress import ProgressFn

from .progress import ProgressBridge


class DockJob:
    """At most one job at a time. ``on_progress`` replaces the default display (bar range/value, status text)."""

    def __init__(self, description: str, *, status: Any = None, bar: Any = None, buttons: Sequence[Any] = (),
                 on_progress: ProgressFn | None = None, on_idle: Callable[[], None] | None = None,
                 bridge: ProgressBridge | None = None):
        self.bridge = bridge or ProgressBridge(description)  # a subclass may carry more signals (e.g. per volume)
        self.cancel_event = threading.Event()
        self.worker = None
        self.status, self.bar, self.buttons, self.on_idle = status, bar, list(buttons), on_idle
        self.bridge.progress.connect(on_progress or self.show_progress)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def reporter(self, cancelled: str = "cancelled") -> ProgressFn:
        """The progress callback to hand to headless code: it raises InterruptedError once the user cancels."""
        return self.bridge.reporter(self.cancel_event, cancelled)

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def cancel(self) -> None:
        self.cancel_event.set()

    def start(self, work: Callable[[], Any], on_done: Callable[[Any], None] | None = None, *, message: str = "",
              on_error: Callable[[BaseException], None] | None = None,
              on_yield: Callable[[Any], None] | None = None) -> bool:
        """Run ``work`` (a function or generator function) off the GUI thread; False when a job is running."""
        from napari.qt.threading import thread_worker

        if self.worker is not None:
            return False
        self.cancel_event.clear()
        work = _with_thread_policy(work)
        # errors go to ``on_error`` (the dock's line or dialog) alone: without ignore_errors superqt also re-raises
        # them in Qt's event loop, a second, raw traceback for the same failure
        self.worker = thread_worker(work, ignore_errors=True)()
        if on_done is not None:
            self.worker.returned.connect(on_done)
        if on_yield is not None:
            self.worker.yielded.connect(on_yield)
        self.worker.errored.connect(on_error or self.show_error)
        self.worker.finished.connect(self._idle)
        for b in self.buttons:
            b.setEnabled(False)
        if message and self.status is not None:
            self.status.setText(message)
        self.worker.start()
        return True

    def show_progress(self, done: int, total: int, message: str) -> None:
        if self.bar is not None:
            self.bar.setRange(0, max(total, 1))
            self.bar.setValue(done)
        if message and self.status is not None:
            self.status.setText(message)

    def show_error(self, exc: BaseException) -> None:
        if self.status is not None:
            self.status.setText("cancelled" if isinstance(exc, InterruptedError) else f"failed: {exc}")

    def _idle(self) -> None:
        self.bridge.close()
        self.worker = None
        for b in self.buttons:
            b.setEnabled(True)
        if self.on_idle is not None:
            self.on_idle()


def _with_thread_policy(work: Callable[[], Any]) -> Callable[[], Any]:
    """``work`` that first sets the thread policy in the worker's own thread (OpenMP's thread count is per
    calling thread; the free cores are read when the job starts: training/threads.py)."""
    from medlsam_training.threads import apply_thread_policy

    if inspect.isgeneratorfunction(work):
        def generator():
            apply_thread_policy()
            return (yield from work())
        return generator

    def function():
        apply_thread_policy()
        return work()
    return function


__all__ = ["DockJob"]
