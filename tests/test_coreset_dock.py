"""The 'Coreset suggestions' dock values a labelled folder in a worker, shows a sortable table and a plot,
opens a volume and records a suspicious label."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

if not os.environ.get("DISPLAY"):
    pytest.skip("napari layers need a GL context: run the tests under xvfb-run (see README)",
                allow_module_level=True)

from medlsam_plugins.coreset_dock import FLAGS_FILE, LESS, CoresetWidget  # noqa: E402
from medlsam_training.phantom import write_phantom_dataset  # noqa: E402


def test_coreset_dock_values_opens_and_flags(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    write_phantom_dataset(tmp_path, n=4, size=(48, 40, 16), spacing=(7.0, 7.0, 12.0))
    viewer = make_napari_viewer()
    dock = CoresetWidget(viewer)
    dock.mode.setCurrentText(LESS)
    dock.folder.setText(str(tmp_path))
    dock.targets.setText("liver,spleen")
    dock.budget.setValue(0.5)
    dock.steps.setValue(8)
    dock.start()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=120_000)
    assert dock.table.rowCount() == 4, dock.status.text()
    assert (tmp_path / "medlsam_coreset" / "values.csv").is_file()
    dock.table.sortItems(3)  # by mean training Dice: numeric sort
    values = [float(dock.table.item(r, 3).text()) for r in range(4)]
    assert values == sorted(values)
    dock.table.selectRow(0)
    name = dock.selected_case()
    dock.open_selected()
    assert any(layer.name.startswith(name) for layer in viewer.layers)
    path = dock.flag_selected("looks shifted")
    dock.flag_selected("second look")
    flags = json.loads(path.read_text())
    assert path.name == FLAGS_FILE and [f["case"] for f in flags] == [name, name]
    assert flags[0]["reason"] == "looks shifted"
