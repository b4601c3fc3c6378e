"""Progress from a dock's worker thread to its GUI thread, and cancellation at the next progress report."""

from __future__ import annotations

import threading
from collections.abc import Callable

from qtpy.QtCore import QObject, Signal


class ProgressBridge(QObject):
    """Carries (done, total, message) reports across threads (queued signal delivery)."""

    progress = Signal(int, int, str)

    def reporter(self, cancel: threading.Event, cancelled: str = "cancelled") -> Callable[[int, int, str], None]:
        """A progress callback for headless code: emits each report, raises InterruptedError once ``cancel`` is set."""

        def progress(done: int, total: int, message: str) -> None:
            if cancel.is_set():
                raise InterruptedError(cancelled)
            self.progress.emit(done, total, message)

        return progress
