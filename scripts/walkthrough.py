"""Walk README's annotator steps, as one session, on a project of linked OpenKBP volumes at 1366 x 768, and check
what a new user once hit (issue 32) on the way.  Prints one line per check, saves a screenshot per step, exits 1
when a check fails.

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/walkthrough.py [OUT_DIR]

The project is a temporary folder of symlinks (three train-pats templates, two validation-pats queries) and a link
to the dataset's dataset.json, as a user makes one; nothing from ../shared/data is copied.  The template points are
placed where a careful annotator clicks them (the extreme voxels of the manual contour); the corrections redraw the
worst slice as the manual contour has it.  It runs the real models on the CPU: about five minutes on two cores.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OPENKBP = ROOT.parent / "shared" / "data" / "ct_hn_openkbp"
TEMPLATES, QUERIES = ("pt_1", "pt_2", "pt_4"), ("pt_201", "pt_207")
CLICKED = {"mandible": 7, "brainstem": 1}  # the targets given six points on each template
CHECKS: list[tuple[bool, str]] = []


def check(ok: bool, what: str) -> bool:
    CHECKS.append((bool(ok), what))
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    return bool(ok)


def clicks(points, mask: np.ndarray) -> list[np.ndarray]:
    """The six clicks (voxel x, y, z) a careful annotator makes: each extreme voxel of the contour, or, where two
    extremes share a voxel (a small organ's corner), another voxel of the same extreme plane (the annotator's tool
    refuses a point on top of another)."""
    zyx = np.argwhere(mask)
    chosen: list[np.ndarray] = []
    for i, p in enumerate(points.indices()):
        p = np.round(np.asarray(p, float)).astype(int)
        if any(np.abs(p - c).max() < 1 for c in chosen):
            axis = i // 2  # right/left: x, anterior/posterior: y, inferior/superior: z
            plane = zyx[zyx[:, 2 - axis] == p[axis]][:, ::-1]
            p = max(plane, key=lambda v: min(np.abs(v - c).max() for c in chosen))
        chosen.append(p)
    return chosen


def make_project() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="medlsam-walk-")) / "hn project"  # a space, as real folders have
    folder.mkdir()
    for name in (*TEMPLATES, *QUERIES):
        (folder / f"{name}.nii.gz").symlink_to(OPENKBP / "imagesTr" / f"{name}_0000.nii.gz")
    (folder / "dataset.json").symlink_to(OPENKBP / "dataset.json")
    return folder


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="medlsam-walk-shots-"))
    out.mkdir(parents=True, exist_ok=True)
    from annotator_window import AnnotatorWindow  # first: it chooses the Qt binding
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    folder = make_project()
    print("project:", folder)
    session = AnnotatorWindow(folder, out)
    from medlsam_napari.docking import VerticalScroll
    from medlsam_plugins.cam_dock import CamSeedWidget
    from medlsam_plugins.coreset_dock import CoresetWidget
    from medlsam_plugins.finetune_dock import FinetuneWidget
    from medlsam_plugins.report_dock import ReportWidget
    from medlsam_training.localization.extreme_points import extreme_points_from_mask
    from medlsam_training.project.folder import Project
    from medlsam_training.volumes.io import read_label, read_volume

    viewer, window, widget, settle, shot = session.viewer, session.window, session.widget, session.settle, session.shot
    state = widget.state

    def wait(busy, limit: float = 900.0) -> None:
        end = time.time() + limit
        while busy() and time.time() < end:
            settle(0.2)

    def in_view(w) -> bool:  # the widget's top inside the annotator's visible part
        from qtpy.QtCore import QPoint

        y = w.mapTo(widget.scroll.widget(), QPoint(0, 0)).y()
        top = widget.scroll.verticalScrollBar().value()
        return top <= y < top + widget.scroll.viewport().height()

    def select_target(name: str) -> None:  # a click on the target's row in the list
        panel = widget.targets
        panel.list.setCurrentItem(next(panel.list.item(i) for i in range(panel.list.count())
                                       if panel.list.item(i).data(Qt.UserRole) == name))
        settle(0.1)

    # 1. Targets: the folder's dataset.json (a link) offers its names; add them all
    panel = widget.targets
    check(panel.add_offered.isVisibleTo(widget) and len(panel.offered) == 7,
          f"targets offered from the linked dataset.json: {len(panel.offered)} names (item 6)")
    panel._add_all_offered()
    check({t.name: t.label for t in state.project.targets} == {k: v for k, v in json.loads(
        (OPENKBP / "dataset.json").read_text())["labels"].items() if v}, "the names added with their label values")
    shot("01_targets.png")

    # 2. Templates: select, tick template, open, six points per clicked target
    for name in TEMPLATES:
        volumes = widget.volumes
        volumes.list.setCurrentRow(next(i for i in range(volumes.list.count())
                                        if volumes.list.item(i).data(Qt.UserRole) == name))
        volumes.template.setChecked(True)
        volumes.open(name)
        settle()
        if name == TEMPLATES[0]:
            check(in_view(widget.points.status), "opening a template brings the point prompt into view (issue 42, 2)")
            check(tuple(viewer.dims.axis_labels) == ("axial (S)", "coronal (P)", "sagittal (L)"),
                  f"the slider axes are named: {tuple(viewer.dims.axis_labels)} (item 11)")
            check(str(state.points_layer.mode) == "add" and viewer.layers.selection.active is state.points_layer,
                  "the points layer opens ready to click")
        truth = read_label(OPENKBP / "labelsTr" / f"{name}.nii.gz", state.volume)
        for target, value in CLICKED.items():
            select_target(target)
            for idx in clicks(extreme_points_from_mask(target, value, state.volume, truth), truth.array == value):
                state.points_layer.add(idx[::-1])
            settle(0.1)
    shot("02_templates_clicked.png")
    files = sorted((folder / "templates").glob("*.json"))
    check(len(files) == len(TEMPLATES) * len(CLICKED), f"{len(files)} template files written for the command line")
    paths = [json.loads(f.read_text())["template"]["path"] for f in files]
    inside = [Path(os.path.normpath(f.parent / p)).parent == folder for f, p in zip(files, paths)]
    check(all(not Path(p).is_absolute() for p in paths) and all(inside),
          f"template image paths relative to their file, inside the project as the user sees it: {paths[0]} "
          "(items 6, 8)")
    session = (folder / "medlsam_project.json").read_text()
    check("shared" not in session and "../.." not in session, "the session names no path outside the project")

    # 3. Localize & segment all
    started = time.time()
    widget.run.start()
    wait(lambda: widget.run.worker is not None)
    status = widget.run.status.text()
    print(f"      run: {time.time() - started:.0f} s: {status}")
    check(status.startswith("done: 5 segmented"), "every volume segmented, the templates too")
    missing = sorted({t.name for t in state.project.targets} - set(CLICKED))
    check("no template for" in status and all(t in status for t in missing),
          "the run names the targets without a template (item 4)")
    shot("03_run_done.png")

    # 4. Review: statuses, the least confident first; what the number beside a volume is
    items = [widget.volumes.list.item(i) for i in range(widget.volumes.list.count())]
    texts = {i.data(Qt.UserRole): i.text() for i in items}
    print("      volume list:", " | ".join(texts.values()))
    check(all("◐" in texts[q] for q in QUERIES), "the queries are listed as segmented")
    check(all("agree" in texts[q] for q in QUERIES),
          "the number beside a volume says it is the templates' agreement, not quality (item 4)")

    query = QUERIES[0]
    widget.volumes.open(query)
    settle()
    layer = state.mask_layer
    truth = read_label(OPENKBP / "labelsTr" / f"{query}.nii.gz", state.volume).array
    mask = np.asarray(layer.data)
    shown = {t.name: "#" + "".join(f"{round(c * 255):02x}" for c in layer.colormap.map(t.label)[:3])
             for t in state.project.targets}
    check(all(shown[t.name] == t.color for t in state.project.targets),
          f"each target in the mask has its colour in the list: mandible {shown['mandible']} (issue 42, 4)")
    for target, value in CLICKED.items():
        a, b = mask == value, truth == value
        print(f"      {query} {target}: Dice {2 * (a & b).sum() / max(a.sum() + b.sum(), 1):.3f}")
    z = int(np.nonzero((mask == 7).any(axis=(1, 2)))[0].mean())
    viewer.dims.set_point(0, state.image_layer.data_to_world([z, 0, 0])[0])
    shot("04_review.png")

    # 5. Correct in 3D: the mandible picked in the list; the brush paints 7, the worst slice redrawn, update the rest
    select_target("mandible")
    check(layer.selected_label == 7, f"selecting mandible (7) sets the brush's label: {layer.selected_label} (item 1)")
    data = np.asarray(layer.data)
    zs = np.nonzero(((data == 7) != (truth == 7)).any(axis=(1, 2)))[0]
    worst = int(max(zs, key=lambda k: int(((data[k] == 7) != (truth[k] == 7)).sum())))
    before = data.copy()
    layer.mode = "paint"
    layer._begin_stroke()  # napari's own stroke: one undo step, one paint event
    wrong = np.nonzero((data[worst] == 7) & (truth[worst] != 7))
    lost = np.nonzero((truth[worst] == 7) & (data[worst] != 7))
    if wrong[0].size:
        layer.data_setitem((np.full(wrong[0].size, worst), *wrong), 0)
    if lost[0].size:
        layer.data_setitem((np.full(lost[0].size, worst), *lost), layer.selected_label)
    layer._commit_stroke()
    settle()
    saved = read_label(state.project.mask_path(query), state.volume, allow_empty=True).array
    changed = set(np.unique(saved[saved != before.astype(saved.dtype)]).tolist())
    check(changed <= {0, 7} and saved[worst].tolist() == np.asarray(layer.data)[worst].tolist(),
          f"the stroke autosaved mandible voxels only: values {sorted(changed)} (item 1)")
    check(Project.open(folder).corrected_slices(query, "mandible") == [worst], "the painted slice is kept as corrected")
    drawn = np.array(layer.data, copy=True)
    widget.review.buttons["Update the rest ⟳"].click()
    wait(lambda: widget.review.job.busy, 120)
    updated = np.array(layer.data, copy=True)
    print("      update:", widget.review.status.text())
    check(in_view(widget.review.status), "the update's result is in view (issue 42, 2)")
    check(np.array_equal(updated[worst], drawn[worst]), "the update keeps the corrected slice voxel for voxel")
    rest = np.arange(truth.shape[0]) != worst

    def off(data: np.ndarray) -> int:  # mandible voxels away from the manual contour, off the corrected slice
        return int(((data == 7) != (truth == 7))[rest].sum())

    check(off(updated) <= off(drawn), f"the update moved the rest toward the manual contour, not away: voxels off "
          f"it {off(drawn)} -> {off(updated)}")
    shot("05_corrected_and_updated.png")

    # 6. Undo: one Ctrl+Z takes the update back
    layer.undo()
    check(np.array_equal(np.asarray(layer.data), drawn), "one Ctrl+Z undoes the whole update")
    layer.redo()

    # 7. CT windows
    widget.windows.buttons["bone"].click()
    check(tuple(state.image_layer.contrast_limits) == (-500.0, 1300.0), "the bone window is one click")
    widget.review.mark_reviewed()
    settle()

    # 8. Learn, and the other docks, opened from Plugins after the project: they see it at once
    finetune, cam = FinetuneWidget(viewer), CamSeedWidget(viewer)
    coreset, report = CoresetWidget(viewer), ReportWidget(viewer)
    for dock, name in ((finetune, "Learn from reviewed volumes"), (cam, "CAM seeding"),
                       (coreset, "Coreset suggestions"), (report, "Findings report draft")):
        viewer.window.add_dock_widget(dock, name=name, area="right")
        settle(0.2)
    rows = [finetune.train_list.item(i).text() for i in range(finetune.train_list.count())]
    check(any(row.startswith(query) for row in rows),
          f"the Learn dock lists the reviewed volume: {finetune.train_list.count()} to learn from (item 5)")
    check(cam.target.text() == "mandible" and cam.value.value() == 7,
          f"the CAM dock takes the active target: {cam.target.text()} = {cam.value.value()} (item 10)")
    check(coreset.targets.text() == ",".join(t.name for t in state.project.targets),
          "the coreset dock takes the targets (item 10)")
    from medlsam_training.options import TargetClass

    check(cam.class_box.currentData() == TargetClass.ORGAN, "the CAM dock seeds the mandible as an organ (issue 42, 6)")
    wait(lambda: finetune.scan.busy or finetune._rescan, 120)
    offered = {finetune.target_list.item(i).data(Qt.UserRole): bool(finetune.target_list.item(i).flags()
                                                                    & Qt.ItemIsEnabled)
               for i in range(finetune.target_list.count())}
    held = sorted(t for t, ok in offered.items() if ok)
    check(set(held) == set(CLICKED), f"the Learn dock offers only the targets a reviewed volume holds: {held} "
          "(issue 41, 1)")
    docks = [widget, finetune, cam, coreset, report]
    qt_docks = [w for w in window.findChildren(QDockWidget) if any(w.isAncestorOf(d) for d in docks)]
    widths, clipped = {}, []
    for qt_dock in qt_docks:
        qt_dock.raise_()
        settle(0.2)
        widths[qt_dock.windowTitle()] = viewer.window._qt_viewer.canvas.native.width()
        scroll = qt_dock.findChild(VerticalScroll)
        if qt_dock.width() < scroll.minimumSizeHint().width():
            clipped.append(f"{qt_dock.windowTitle()} ({qt_dock.width()} < {scroll.minimumSizeHint().width()} px)")
    check(not clipped, f"no dock clipped on the right: {', '.join(clipped) or 'each as wide as its rows'} (item 9)")
    print("      canvas width per tab:", widths)
    narrowest = min(widths.values())
    check(narrowest >= 600 and window.width() <= 1366 and window.height() <= 768,
          f"five docks as tabs at {window.width()} x {window.height()}: the canvas keeps {narrowest} px (item 9)")
    qt_docks[0].raise_()
    shot("06_five_docks.png")
    viewer.close()

    # the project, as the command line sees it after the session
    project = Project.open(folder)
    found = read_volume(project.volume_path(query)).array.shape == (128, 128, 128)
    check(project.entry(query).status == "reviewed" and found,
          "the session resumes from the folder: the query reviewed, its volume found through the link")
    failed = [w for ok, w in CHECKS if not ok]
    print(f"{len(CHECKS) - len(failed)} of {len(CHECKS)} checks hold; screenshots in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
