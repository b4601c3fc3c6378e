"""The five MedLSAM docks share one dock area as tabs.

napari stacks plugin docks opened from the Plugins menu one above the other: at 1366 x 768 a second dock squeezed
the annotator to about 70 pixels.  Each MedLSAM dock, when first shown, joins the tabs of the MedLSAM docks already
in its area (one is visible at a time, each at full height), and is raised.
"""

from __future__ import annotations

import weakref

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFormLayout,
    QMainWindow,
    QScrollArea,
    QTabBar,
    QVBoxLayout,
    QWidget,
)

#: QDockWidgets holding a MedLSAM dock, in the order they were first shown
_DOCKS: "weakref.WeakValueDictionary[int, QDockWidget]" = weakref.WeakValueDictionary()
_ORDER: list[int] = []
#: characters a combo box of a dock shows when closed
COMBO_CHARACTERS = 10


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
    QTimer.singleShot(0, lambda: whole_tab_titles(window))  # the tab bar exists once Qt has laid the tabs out


def whole_tab_titles(window: QWidget) -> None:
    """The dock tabs of ``window`` show whole titles with scroll arrows, never 'Me…', 'Cor…' (five MedLSAM docks
    share a column of about 420 pixels on a 1366-pixel screen)."""
    try:
        bars = window.findChildren(QTabBar)
    except RuntimeError:  # the window was closed meanwhile
        return
    for bar in bars:
        if isinstance(bar.parentWidget(), QMainWindow):  # the main window's own dock tabs
            bar.setElideMode(Qt.TextElideMode.ElideNone)
            bar.setUsesScrollButtons(True)


def fit_narrow(body: QWidget) -> None:
    """Rows that ask for no more width than a dock column of a 1366-pixel screen leaves (the canvas keeps 600):
    form rows put their field under the label when both do not fit side by side (under PyQt5's wider font the
    rows' sum widened the column and the canvas fell to 594 pixels), and a combo box asks for
    ``COMBO_CHARACTERS`` characters, not for its longest item (a policy's whole sentence; the open list shows it)."""
    for form in body.findChildren(QFormLayout):
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    for combo in body.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(COMBO_CHARACTERS)


class VerticalScroll(QScrollArea):
    """Scrolls vertically only, and asks for the width its content needs, so that a dock never squeezes its rows
    under their minimum (which would clip them on the right)."""

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        hint = super().minimumSizeHint()
        body = self.widget()
        if body is None:
            return hint
        width = body.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()
        return QSize(width, hint.height())

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        # as wide as the rows need, no wider: the dock column takes its docks' preferred width, and a preferred
        # width of the rows' natural sizes left the canvas 595 pixels at 1366 x 768 (PyQt5's wider font)
        return QSize(self.minimumSizeHint().width(), super().sizeHint().height())

    def setWidget(self, widget: QWidget) -> None:  # noqa: N802 - Qt's name
        fit_narrow(widget)
        super().setWidget(widget)
        widget.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        # the body's rows changed (a project filled a field, a label got longer): a scroll area does not tell its
        # own layout, so the dock kept the width of its empty rows and clipped the filled ones on the right
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(obj, event)


def scroll_vertically(widget: QWidget) -> None:
    """Move ``widget``'s content into a vertical scroll area: tabbed docks share one height, the tallest one's
    minimum, so a long dock must scroll instead of making the window taller than the screen."""
    layout = widget.layout()
    if layout is None or isinstance(widget, QScrollArea) or any(
            isinstance(layout.itemAt(i).widget(), QScrollArea) for i in range(layout.count())):
        return
    body = QWidget()
    body.setLayout(layout)  # the layout and its widgets move into the scrolled body
    scroll = VerticalScroll()
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(body)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)


class _WhenDocked(QObject):
    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.ParentChange and not getattr(obj, "_medlsam_scrolls", False):
            # napari has just put it in its dock, before the window is laid out with it: scroll from the start
            obj._medlsam_scrolls = True
            scroll_vertically(obj)
        elif event.type() == QEvent.Type.Show:
            obj.removeEventFilter(self)
            join_medlsam_tabs(obj)  # now, before Qt lays the window out with the dock stacked
            QTimer.singleShot(0, lambda: join_medlsam_tabs(obj))  # in case napari docked it after showing it
        return False


def dock_as_tab(widget: QWidget) -> None:
    """Call in a MedLSAM dock's constructor: once docked its content scrolls vertically, and on its first show it
    becomes a tab beside the other MedLSAM docks."""
    widget._medlsam_when_docked = _WhenDocked(widget)
    widget.installEventFilter(widget._medlsam_when_docked)
