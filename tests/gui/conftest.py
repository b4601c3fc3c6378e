"""The GUI tier: every test here needs napari, Qt and a display (xvfb-run on a server). Marked ``gui`` so that
``pytest -m "not slow and not gui"`` runs the headless core alone; the shared fixtures come from ../conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.gui)
