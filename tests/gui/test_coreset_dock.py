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
from medlsam_training.volumes.phantom import write_phantom_dataset  # noqa: E402


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
    assert (tmp_path / "medlsam_coreset" / "suspicious.csv").is_file()
    header = [dock.table.horizontalHeaderItem(c).text() for c in range(dock.table.columnCount())]
    assert header[:4] == ["rank", "case", "score", "reason"]  # the suspicious ranking, most suspicious first
    assert [dock.table.item(r, 0).text() for r in range(4)] == ["1", "2", "3", "4"]
    dock.table.sortItems(header.index("Dice own label"))  # numeric sort
    values = [float(dock.table.item(r, header.index("Dice own label")).text()) for r in range(4)]
    assert values == sorted(values)
    dock.table.sortItems(0)
    dock.table.selectRow(0)
    name = dock.selected_case()
    dock.open_selected()
    assert any(layer.name.startswith(name) for layer in viewer.layers)
    worst_z = float(dock.table.item(0, header.index("worst slice z (mm)")).text())
    assert viewer.dims.point[0] == pytest.approx(worst_z, abs=12.0)  # opened at its worst slice (one slice)
    path = dock.flag_selected("looks shifted")
    dock.flag_selected("second look")
    flags = json.loads(path.read_text())
    assert path.name == FLAGS_FILE and [f["case"] for f in flags] == [name, name]
    assert flags[0]["reason"] == "looks shifted"
