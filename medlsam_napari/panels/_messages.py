"""User-facing messages: napari notifications when a viewer exists, never a crash."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def show_error(parent, title: str, exc: BaseException | str, toast: bool = True) -> None:
    """The message on ``parent``'s status line and, with ``toast``, as a napari notification.  A message the dock
    shows in view goes without a toast: napari's toast starts its dismiss timer only while the viewer's window is
    active, and each new toast stops the others' timers, so one can stay for minutes over the canvas."""
    text = f"{title}: {exc}"
    log.warning(text)
    if toast:
        try:
            from napari.utils.notifications import show_warning

            show_warning(text)
        except Exception:  # notifications are best effort
            pass
    status = getattr(parent, "status", None)
    if status is not None and hasattr(status, "setText"):
        status.setText(text)


def show_info(text: str) -> None:
    log.info(text)
    try:
        from napari.utils.notifications import show_info as _show

        _show(text)
    except Exception:
        pass
