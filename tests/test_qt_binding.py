"""The Qt binding the GUI tests run on is the one asked for (QT_API), PyQt6 by default."""

from __future__ import annotations

import os


def test_qt_binding_is_the_requested_one() -> None:
    import qtpy

    assert qtpy.API_NAME.lower() == os.environ.get("QT_API", "pyqt6").lower()
