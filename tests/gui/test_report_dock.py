"""The 'Findings report' dock measures in a worker, keeps edited text, goes to structures and saves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
    pytest.skip("napari layers need a GL context: run the tests under xvfb-run (see README)",
                allow_module_level=True)

from medlsam_napari._reader import read_layers  # noqa: E402
from medlsam_plugins.report_dock import ReportWidget  # noqa: E402


def test_report_dock_measures_edits_goes_to_and_saves(make_napari_viewer, qtbot, ct_example: Path,
                                                       tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    for path in ("image.nii.gz", "label.nii.gz"):
        for data, kwargs, kind in read_layers(str(ct_example / path)):
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    dock = ReportWidget(viewer)
    assert dock.image_box.currentText() == "image.nii.gz" and dock.labels_box.currentText() == "label.nii.gz"

    dock.start_measuring()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=60_000)
    assert dock.report is not None, dock.status.text()
    names = [dock.table.item(r, 0).text() for r in range(dock.table.rowCount())]
    assert "liver" in names and "spleen" in names  # names came from labels.json through the reader
    assert "## Impression" in dock.text.toPlainText()
    header = dock.table.horizontalHeader()
    for col in range(dock.table.columnCount()):  # no column cut: as wide as its header and its widest cell
        widest = max([header.sectionSizeHint(col)]
                     + [dock.table.sizeHintForColumn(col)])
        assert dock.table.columnWidth(col) >= widest, (col, dock.table.columnWidth(col), widest)

    row = names.index("liver")
    dock.go_to(row)
    liver = dock.report.findings[row].measurement
    assert viewer.dims.point[0] == pytest.approx(liver.centroid_mm[2], abs=3.0)  # world z is LPS S, in mm
    assert viewer.layers["label.nii.gz"].selected_label == liver.value

    # the radiologist edits the text, then erases the spleen and re-measures: the edit survives
    dock.text.setPlainText(dock.text.toPlainText() + "\nAdded by hand.")
    labels = viewer.layers["label.nii.gz"]
    labels.data = np.where(labels.data == 1, 0, labels.data).astype(labels.data.dtype)
    dock.start_measuring()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=60_000)
    names = [dock.table.item(r, 0).text() for r in range(dock.table.rowCount())]
    assert "spleen" not in names
    assert dock.text.toPlainText().endswith("Added by hand.") and dock.regen_btn.isEnabled()

    written = dock.save(tmp_path / "draft.md")
    assert (tmp_path / "draft.md").read_text().endswith("Added by hand.")
    data = json.loads((tmp_path / "draft.json").read_text())
    assert data["edited_text"].endswith("Added by hand.") and len(written) == 2
    assert "spleen" not in {s["name"] for s in data["structures"]}

    dock.replace_text()
    assert "Added by hand." not in dock.text.toPlainText() and not dock.regen_btn.isEnabled()
