"""medlsam_training: the headless package under the medlsam CLI and the napari plugin."""

from __future__ import annotations

import os


def _import_opencv_keeping_qt_settings() -> None:
    """opencv-python (rt-utils needs it; MONAI imports it when present) points Qt at the plugins bundled in its
    wheel as it is imported (``cv2/config-3.py`` sets QT_QPA_PLATFORM_PLUGIN_PATH and QT_QPA_FONTDIR).  A napari
    window created afterwards then fails to load its platform plugin and aborts.  Imported once here, first, with
    those variables put back as they were, so no later import of cv2 can change them."""
    keys = ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR")
    saved = {k: os.environ.get(k) for k in keys}
    try:
        import cv2  # noqa: F401
    except ImportError:
        return
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_import_opencv_keeping_qt_settings()
