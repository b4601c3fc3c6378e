"""Progress from a dock's worker thread to its GUI thread, mirrored in napari's own activity panel, and
cancellation at the next progress report."""

from __future__ import annotations

import threading

from qtpy.QtCore import QObject, Signal

from medlsam_training.progress import ProgressFn


class ProgressBridge(QObject):
    """Carries (done, total, message) reports across threads (queued signal delivery).

    On the GUI thread every report also moves a ``napari.utils.progress`` bar, so long work shows in napari's
    activity panel like any other napari task; ``close`` (connected to the worker's ``finished``) ends it.
    """

    progress = Signal(int, int, str)

    def __init__(self, description: str = "medlsam") -> None:
        super().__init__()
        self.description = description
        self._bar = None
        self.progress.connect(self._mirror)

    def _mirror(self, done: int, total: int, message: str) -> None:
        from napari.utils import progress

        if self._bar is None:
            self._bar = progress(total=max(total, 1), desc=self.description)
        bar = self._bar  # napari's bar widgets may process events here, and the worker's end may close it meanwhile
        bar.set_description(f"{self.description}: {message}" if message else self.description)
        if bar.total != max(total, 1):
            bar.total = max(total, 1)
            bar.n = 0
        if bar is self._bar:
            bar.update(max(done, 0) - bar.n)

    def close(self, *_args: object) -> None:
        """The work ended (done, failed or cancelled): its bar leaves the activity panel."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def reporter(self, cancel: threading.Event, cancelled: str = "cancelled") -> ProgressFn:
        """A progress callback for headless code: emits each report, raises InterruptedError once ``cancel`` is set."""

        def progress(done: int, total: int, message: str) -> None:
            if cancel.is_set():
                raise InterruptedError(cancelled)
            self.progress.emit(done, total, message)

        return progress
