"""The one callback type that long work reports through: ``progress(done, total, message)``. The CLI passes a rich
bar, the docks a bridge to napari's progress (``medlsam_napari/progress.py``), which raises InterruptedError from
inside the call when the user cancels."""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[int, int, str], None]
#: asked between steps: True when the user asked to stop
CancelledFn = Callable[[], bool]

__all__ = ["CancelledFn", "ProgressFn"]
