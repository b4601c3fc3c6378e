"""The annotator in a real napari window at 1366 x 768, for the scripts that drive it (screenshots.py,
walkthrough.py): the window, the dock, a way to let Qt catch up and to save what the window shows."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

# as the launcher: napari's recommended binding (no deprecation toast); before anything imports qtpy
if "QT_API" not in os.environ and importlib.util.find_spec("PyQt6") is not None:
    os.environ["QT_API"] = "pyqt6"


class AnnotatorWindow:
    """Import this module before qtpy: it chooses the Qt binding."""

    def __init__(self, folder: Path, out: Path):
        import napari
        from qtpy.QtWidgets import QApplication

        from medlsam_napari.annotator import AnnotatorWidget

        self.out = out
        self.viewer = napari.Viewer(title="MedLSAM annotator", show=True)
        self.window = self.viewer.window._qt_window
        self.window.showNormal()
        self.window.resize(1366, 768)  # the smallest common laptop screen: the docks must fit without side-scrolling
        self.widget = AnnotatorWidget(self.viewer, folder)
        self.viewer.window.add_dock_widget(self.widget, name="MedLSAM annotator", area="right")
        self.app = QApplication.instance()

    def settle(self, seconds: float = 0.4) -> None:
        """Let Qt process events for ``seconds`` (layouts, paints, signals from workers)."""
        end = time.time() + seconds
        while time.time() < end:
            self.app.processEvents()
            time.sleep(0.02)

    def shot(self, name: str) -> Path:
        self.settle()
        path = self.out / name
        self.viewer.screenshot(str(path), canvas_only=False)
        return path
