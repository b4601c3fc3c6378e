"""The Qt binding the GUI tests run on is the one asked for (QT_API), PyQt6 by default."""

from __future__ import annotations

import os


def test_qt_binding_is_the_requested_one() -> None:
    import qtpy

    assert qtpy.API_NAME.lower() == os.environ.get("QT_API", "pyqt6").lower()


_NO_TOASTS = r"""
import os, sys
from napari.utils.notifications import notification_manager
notes = []
notification_manager.notification_ready.connect(lambda n: notes.append(f"{n.severity}: {n.message}"))
notification_manager.install_hooks()  # as napari.run does: warnings become toasts
import napari
from qtpy.QtWidgets import QApplication
viewer = napari.Viewer(show=True)
for name in ("MedLSAM annotator", "Learn from reviewed volumes", "Findings report draft",
             "CAM seeding from slice ticks", "Coreset suggestions"):
    viewer.window.add_plugin_dock_widget("medlsam-napari", name)
viewer.open_sample("medlsam-napari", "phantom")
for _ in range(20):
    QApplication.processEvents()
print("TOASTS", len(notes))
print(*notes, sep="\n")
viewer.close()
"""


def test_a_default_install_shows_no_warning_toast() -> None:
    """Every dock and the sample open in a fresh interpreter (the user's warning filters, not pytest's) with no
    deprecation or other warning notification."""
    import subprocess
    import sys

    if not os.environ.get("DISPLAY"):
        import pytest

        pytest.skip("needs a display: run the tests under xvfb-run (see README)")
    if os.environ.get("QT_API", "pyqt6").lower() != "pyqt6":
        import pytest

        pytest.skip("a default install is PyQt6; under PyQt5 napari itself announces that backend's deprecation")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("PYTHONWARNINGS", None)
    run = subprocess.run([sys.executable, "-c", _NO_TOASTS], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "TOASTS 0" in run.stdout, run.stdout[-2000:]
