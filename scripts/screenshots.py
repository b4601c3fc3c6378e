"""Render the real napari window with the annotator dock through each step and save screenshots.

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/screenshots.py [OUT_DIR]

Uses two real CT volumes from ../shared/data (a template and a query, linked into a temporary
project folder, never copied into the project) and the embedded models.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "ct"
sys.path.insert(0, str(ROOT))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    from annotator_window import AnnotatorWindow  # first: it chooses the Qt binding
    from qtpy.QtCore import Qt

    from medlsam_napari.state import PROMPT_LAYER
    from medlsam_training.localization.extreme_points import extreme_points_from_mask
    from medlsam_training.volumes.io import read_image_label

    project = Path(tempfile.mkdtemp(prefix="medlsam-shots-"))
    (project / "template_ts_example").mkdir()
    (project / "template_ts_example" / "image.nii.gz").symlink_to(SHARED / "ts_example" / "image.nii.gz")
    (project / "query_ts_dicom").mkdir()
    (project / "query_ts_dicom" / "dicom").symlink_to(SHARED / "ts_dicom_abdomen" / "dicom", target_is_directory=True)

    session = AnnotatorWindow(project, out)
    viewer, widget, settle = session.viewer, session.widget, session.settle

    def shot(name: str) -> None:
        print("saved", session.shot(name))

    def go_to_slice(z: int) -> None:
        viewer.dims.set_point(0, widget.state.image_layer.data_to_world([z, 0, 0])[0])

    # 1. targets
    widget.targets.name.setText("liver")
    widget.targets.label.setValue(1)
    widget.targets._add()
    widget.targets.name.setText("spleen")
    widget.targets.label.setValue(2)
    widget.targets._add()
    widget.state.project.active_target = "liver"
    widget.state.changed("targets")
    widget.volumes.refresh()
    shot("01_project_and_targets.png")

    # 2. six extreme points on the template (placed where a careful annotator would click them)
    # as the annotator does it: select the volume in the list, tick "template", open it
    volumes = widget.volumes
    volumes.list.setCurrentRow(next(i for i in range(volumes.list.count())
                                    if volumes.list.item(i).data(Qt.UserRole) == "template_ts_example"))
    volumes.template.setChecked(True)
    volumes.open("template_ts_example")
    image, label = read_image_label(SHARED / "ts_example" / "image.nii.gz", SHARED / "ts_example" / "label.nii.gz")
    for name, value in (("liver", 5), ("spleen", 1)):
        widget.state.project.active_target = name
        widget.state.changed("active_target")
        for idx in extreme_points_from_mask(name, value, image, label).indices()[:5 if name == "liver" else 6]:
            widget.state.points_layer.add(idx[::-1])
    widget.state.project.active_target = "liver"
    widget.state.changed("active_target")
    last = extreme_points_from_mask("liver", 5, image, label).indices()[5]
    go_to_slice(int(round(last[2])))
    shot("02_template_five_of_six_points.png")
    widget.state.points_layer.add(last[::-1])
    shot("03_template_six_points_valid.png")

    # 3. localize & segment all, screenshot while it runs (from this, the GUI thread: a grab from the
    # worker's progress callback would run on the worker thread and crash Qt)
    taken = False
    widget.scroll.ensureWidgetVisible(widget.run, 0, 150)
    widget.run.start()
    while widget.run.worker is not None:
        settle(0.2)
        if not taken and widget.run.slices_bar.value() > 5:
            taken = True
            shot("04_running_with_progress.png")
    print(widget.run.status.text())

    # 4. review the query: mask + localized boxes
    widget.volumes.open("query_ts_dicom")
    mask = np.asarray(widget.state.mask_layer.data)
    z = int(np.nonzero(mask.any(axis=(1, 2)))[0].mean()) if mask.any() else 10
    go_to_slice(z)
    shot("05_review_mask_and_box.png")

    # 5. re-prompt one slice from a box drawn on it
    widget.scroll.ensureWidgetVisible(widget.review, 0, 50)
    widget.review._prompt_layers()
    ys, xs = np.nonzero(mask[z] == 1) if (mask[z] == 1).any() else (np.array([200, 300]), np.array([100, 250]))
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    viewer.layers[PROMPT_LAYER].add_rectangles(np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]]))
    widget.review.segment_slice()
    while widget.review.worker is not None:
        settle(0.2)
    shot("06_reprompt_slice_from_box.png")
    # 6. the liver is finished: locked, so no later run, prompt or paint stroke can change it
    widget.review.lock.click()
    widget.volumes.refresh()
    shot("07_liver_locked.png")
    widget.review.mark_reviewed()
    widget.volumes.refresh()
    shot("08_marked_reviewed.png")

    # 7. the other four docks, opened as the Plugins menu opens them (no tabify asked): they join the annotator
    # as tabs, each at full height; the report is measured on the reviewed mask
    from medlsam_plugins.cam_dock import CamSeedWidget
    from medlsam_plugins.coreset_dock import CoresetWidget
    from medlsam_plugins.finetune_dock import FinetuneWidget
    from medlsam_plugins.report_dock import ReportWidget

    report = ReportWidget(viewer)
    for dock, name in ((FinetuneWidget(viewer), "Learn from reviewed volumes"), (CamSeedWidget(viewer), "CAM seeding"),
                       (CoresetWidget(viewer), "Coreset suggestions"), (report, "Findings report draft")):
        viewer.window.add_dock_widget(dock, name=name, area="right")
        settle(0.3)
    report.image_box.setCurrentText("query_ts_dicom")
    report.labels_box.setCurrentText("query_ts_dicom mask")
    report.start_measuring()
    while report.worker is not None:
        settle(0.2)
    shot("09_five_docks_tabbed_1366x768.png")
    viewer.close()


if __name__ == "__main__":
    main()
