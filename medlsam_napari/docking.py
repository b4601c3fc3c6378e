"""The five MedLSAM docks share one dock area as tabs.

napari stacks plugin docks opened from the Plugins menu one above the other: at 1366 x 768 a second dock squeezed
the annotator to about 70 pixels.  Each MedLSAM dock, when first shown, joins the tabs of the MedLSAM docks already
in its area (one is visible at a time, each at full height), and is raised.
"""

from __future__ import annotations

import weakref

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

#: QDockWidgets holding a MedLSAM dock, in the order they were first shown
_DOCKS: "weakref.WeakValueDictionary[int, QDockWidget]" = weakref.WeakValueDictionary()
_ORDER: list[int] = []


def _dock_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def join_medlsam_tabs(widget: QWidget) -> None:
    """Tabify the dock holding ``widget`` with the other MedLSAM docks docked in the same area, and raise it."""
    dock = _dock_of(widget)
    if dock is None or id(dock) in _DOCKS:
        return
    window = dock.parentWidget()
    _DOCKS[id(dock)] = dock
    _ORDER.append(id(dock))
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return
    area = window.dockWidgetArea(dock)
    for key in list(_ORDER):
        other = _DOCKS.get(key)
        try:
            usable = (other is not None and other is not dock and other.parentWidget() is window
                      and not other.isFloating() and other.toggleViewAction().isChecked()  # open, tab or not
                      and window.dockWidgetArea(other) == area)
        except RuntimeError:  # its viewer was closed: Qt deleted it
            _ORDER.remove(key)
            continue
        if usable:
            window.tabifyDockWidget(other, dock)
            break
    dock.show()
    dock.raise_()


class _FirstShow(QObject):
    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Show:
            QTimer.singleShot(0, lambda: join_medlsam_tabs(obj))  # once napari has docked it
            obj.removeEventFilter(self)
        return False


def dock_as_tab(widget: QWidget) -> None:
    """Call in a MedLSAM dock's constructor: on its first show it becomes a tab beside the others."""
    widget._medlsam_first_show = _FirstShow(widget)
    widget.installEventFilter(widget._medlsam_first_show)
