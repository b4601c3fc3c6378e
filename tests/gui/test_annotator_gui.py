"""The napari annotator end to end on two real CT volumes: template points, run, review, cancel, resume."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qtpy")
if not os.environ.get("DISPLAY"):
    pytest.skip("napari layers need a GL context: run the tests under xvfb-run (see README)",
                allow_module_level=True)

from medlsam_napari.annotator import AnnotatorWidget  # noqa: E402
from medlsam_napari.state import PROMPT_LAYER  # noqa: E402
from medlsam_training.localization.extreme_points import extreme_points_from_mask  # noqa: E402
from medlsam_training.metrics import binary_metrics  # noqa: E402
from medlsam_training.project.folder import Project  # noqa: E402
from medlsam_training.volumes.io import read_image_label  # noqa: E402


@pytest.fixture()
def project_dir(tmp_path: Path, ct_example: Path, ct_dicom: Path) -> Path:
    (tmp_path / "template").mkdir()
    (tmp_path / "template" / "image.nii.gz").symlink_to(ct_example / "image.nii.gz")
    (tmp_path / "query").mkdir()
    (tmp_path / "query" / "dicom").symlink_to(ct_dicom / "dicom", target_is_directory=True)
    return tmp_path


def _wait_idle(qtbot, panel, timeout_s: int = 600) -> None:
    qtbot.waitUntil(lambda: panel.worker is None, timeout=timeout_s * 1000)


def test_full_flow_template_points_run_review_resume(make_napari_viewer, qtbot, project_dir, ct_example, ct_dicom):
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer, project_dir)
    state = widget.state
    assert sorted(v.name for v in state.project.volumes) == ["query", "template"]

    widget.targets.name.setText("liver")
    widget.targets.label.setValue(1)
    widget.targets._add()
    state.project.set_template("template")
    widget.volumes.open("template")
    assert "superior" not in widget.points.prompt.text() and "RIGHT" in widget.points.prompt.text()

    image, label = read_image_label(ct_example / "image.nii.gz", ct_example / "label.nii.gz")
    clicks = extreme_points_from_mask("liver", 5, image, label).indices()
    layer = state.points_layer
    layer.add(clicks[0][::-1])
    layer.add(clicks[5][::-1])  # a wrong click...
    widget.points.redo_which.setCurrentIndex(1)
    widget.points._clear([1])  # ...redone
    for idx in clicks[1:]:
        layer.add(idx[::-1])
    assert state.project.next_point("template", "liver") is None
    assert "six valid points" in widget.points.status.text()

    widget.run.start()
    _wait_idle(qtbot, widget.run)
    # the template is segmented too, from its own six points (an exact box), and said to be a template
    assert sorted((r.name, r.status) for r in widget.run.results) == [("query", "done"), ("template", "done")], \
        widget.run.status.text()
    (own,) = [r for r in widget.run.results if r.name == "template"]
    assert own.template and own.targets[0].method == "template: its own points"
    assert state.project.entry("query").status == "segmented"
    assert state.project.entry("template").status == "segmented"

    widget.volumes.open("query")
    _, truth = read_image_label(ct_dicom / "dicom", ct_dicom / "label.nii.gz")
    mask = np.asarray(state.mask_layer.data) == 1
    assert binary_metrics(mask, truth.array == 5, truth.spacing_zyx)["dice"] > 0.7

    # Review: re-prompt one slice from a box, then mark reviewed; both autosave.
    z = int(np.nonzero(mask.any(axis=(1, 2)))[0].mean())
    ys, xs = np.nonzero(truth.array[z] == 5)
    widget.review._prompt_layers()
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    viewer.layers[PROMPT_LAYER].add_rectangles(np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]]))
    viewer.dims.set_point(0, state.image_layer.data_to_world([z, 0, 0])[0])
    assert widget.review.current_slice() == z
    widget.review.segment_slice()
    _wait_idle(qtbot, widget.review, 120)
    widget.review.mark_reviewed()
    assert state.project.entry("query").status == "reviewed"

    # The session resumes exactly: targets, points, statuses.
    again = Project.open(project_dir)
    assert again.to_json() == state.project.to_json()
    assert (project_dir / "masks" / "query.nii.gz").is_file()


def test_cancel_stops_the_worker_and_bad_runs_are_messages(make_napari_viewer, qtbot, project_dir, ct_example):
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer, project_dir)
    widget.run.start()  # no target, no template: a message, no crash, no worker
    assert widget.run.worker is None and "no target" in widget.run.status.text()

    p = widget.state.project
    p.add_target("liver", 1)
    p.set_template("template")
    image, label = read_image_label(ct_example / "image.nii.gz", ct_example / "label.nii.gz")
    for i, idx in enumerate(extreme_points_from_mask("liver", 5, image, label).indices()):
        p.set_point("template", "liver", i, idx, image.size)
    widget.run.start()
    assert widget.run.worker is not None
    widget.run.cancel()
    _wait_idle(qtbot, widget.run, 300)
    assert "cancelled" in widget.run.status.text()
    assert widget.state.project.entry("query").status == "pending"


def test_only_the_box_drawn_on_the_current_slice_is_its_prompt(make_napari_viewer) -> None:
    from medlsam_napari.panels.review import ReviewPanel
    from medlsam_napari.state import AnnotatorState

    viewer = make_napari_viewer()
    panel = ReviewPanel(AnnotatorState(viewer))
    rect = lambda z, y0, x0, y1, x1: np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], float)  # noqa: E731
    viewer.add_shapes([rect(3, 10, 20, 30, 40), rect(7, 1, 2, 5, 6)], shape_type="rectangle", name=PROMPT_LAYER, ndim=3)
    box, _, _ = panel._prompts(3)
    np.testing.assert_array_equal(box, [20, 10, 40, 30])  # [x0, y0, x1, y1] of the slice-3 box, not the last one
    assert panel._prompts(5)[0] is None  # nothing was drawn on slice 5


def test_review_without_models_loads_no_network(make_napari_viewer, qtbot, project_dir, ct_dicom, monkeypatch) -> None:
    """Opening a project to correct and accept masks never loads a localizer or a segmenter."""
    import medlsam_napari.jobs as jobs
    import medlsam_training.localization.localize as localize
    import medlsam_training.segmentation.segmenters as segmenters
    from medlsam_training.volumes.io import read_volume, write_mask

    def refuse(*_a, **_k):
        raise AssertionError("a network was loaded during review")

    for module, name in ((segmenters, "load_segmenter"), (segmenters, "load_litemedsam"), (segmenters, "load_sam"),
                         (localize, "load_medlam"), (jobs, "load_models"), (jobs, "load_segmenter")):
        monkeypatch.setattr(module, name, refuse)
    project = Project.open(project_dir)
    image = read_volume(ct_dicom / "dicom")
    _, truth = read_image_label(ct_dicom / "dicom", ct_dicom / "label.nii.gz")
    project.set_status("query", "segmented", write_mask((truth.array == 5).astype(np.uint8), image,
                                                        project.mask_path("query")))
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer, project_dir)
    widget.volumes.open("query")
    state = widget.state
    corrected = np.array(state.mask_layer.data, copy=True)
    corrected[0] = 0                                   # an eraser stroke on the first slice
    state.mask_layer.data = corrected
    widget.review.mark_reviewed()
    assert state.project.entry("query").status == "reviewed"
    from medlsam_training.volumes.io import read_label

    saved = read_label(project_dir / "masks" / "query.nii.gz", image, allow_empty=True).array
    assert np.array_equal(saved, corrected)


def test_dock_fits_a_1366x768_window_without_horizontal_scrolling(make_napari_viewer, qtbot, project_dir) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1366, 768)
    widget = AnnotatorWidget(viewer, project_dir)
    widget.state.project.add_target("liver", 5)
    widget.state.changed("project")
    viewer.window.add_dock_widget(widget, name="MedLSAM annotator", area="right")
    widget.volumes.open("template")
    widget.state.project.set_template("template")
    widget.state.project.active_target = "liver"
    widget.state.changed("active_target")              # the six point names and ticks are shown
    qtbot.wait(500)
    assert widget.points.slots.text().count("○") == 6
    assert widget.scroll.widget().minimumSizeHint().width() <= widget.scroll.viewport().width()
    assert widget.width() < 1366 // 3  # and the dock leaves the canvas most of the window


def test_cli_made_project_opens_in_the_annotator(make_napari_viewer, qtbot, cli_project, tmp_path) -> None:
    """What 'medlsam extreme-points' and 'medlsam segment' wrote is the annotator's project: template, points,
    target, statuses, masks and boxes, with no model loaded."""
    import shutil

    from medlsam_napari.state import BOX_LAYER, POINTS_LAYER
    from medlsam_training.localization.extreme_points import ExtremePoints
    from medlsam_training.volumes.io import read_label

    folder = shutil.copytree(cli_project, tmp_path / "p")
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer, folder)
    state = widget.state
    shown = [widget.volumes.list.item(i).text() for i in range(widget.volumes.list.count())]
    # ⚠ marks a volume whose run left a target partly outside the scan (these 20-slice phantoms cut the liver)
    summary = state.project.run_summary()
    for text in shown:
        name = text.split()[1]
        cut = any(t.get("status") != "found" for t in summary.get(name, {}).get("targets", {}).values())
        assert text.endswith(" ⚠") == (cut and "template" not in text) or "template" in text, text
    items = [text.removesuffix(" ⚠") for text in shown]
    # volumes to review come first (least confident first; this run's registration localizer gives no
    # confidence, so in project order), then the template
    assert items == ["◐ phantom_001  [segmented]", "◐ phantom_002  [segmented]",
                     "◐ phantom_000  [template, segmented]"]  # the CLI segmented the template from its mask too
    assert [widget.targets.list.item(i).text() for i in range(widget.targets.list.count())][0].startswith("liver")

    widget.volumes.open("phantom_000")
    clicked = np.asarray(viewer.layers[POINTS_LAYER].data)[:, ::-1]  # napari z, y, x -> x, y, z
    np.testing.assert_allclose(clicked, ExtremePoints.load(folder / "templates" / "liver.json").indices(), atol=1e-6)
    assert widget.points.slots.text().count("✓") == 6 and "six valid points" in widget.points.status.text()

    widget.volumes.open("phantom_001")
    saved = read_label(folder / "masks" / "phantom_001.nii.gz", state.volume).array
    np.testing.assert_array_equal(np.asarray(state.mask_layer.data), saved)
    assert BOX_LAYER in viewer.layers  # the run's localized box, from masks/medlsam_results.json
    # "Save layer" as a Slicer segmentation carries the target's name and the volume's geometry
    from medlsam_napari._writer import write_labels
    from medlsam_training.interop.seg_nrrd import read_seg_nrrd

    data, attributes, _ = state.mask_layer.as_layer_data_tuple()
    write_labels(str(tmp_path / "phantom_001.seg.nrrd"), data, attributes)
    seg, names, _ = read_seg_nrrd(tmp_path / "phantom_001.seg.nrrd")
    assert names == {1: "liver"} and seg.geometry.is_close(state.volume.geometry, tol=1e-6)
    np.testing.assert_array_equal(seg.array, saved)

    # the liver is locked: a paint stroke over it is undone and the file keeps it
    state.project.active_target = "liver"
    state.changed("active_target")
    widget.review.lock.click()
    assert state.project.entry("phantom_001").locked == ["liver"] and widget.review.lock.text() == "Locked: liver"
    z, y, x = np.argwhere(saved == 1)[len(np.argwhere(saved == 1)) // 2]
    layer = state.mask_layer
    layer.brush_size = 5

    def stroke() -> None:  # as a mouse drag: the paint event comes once the stroke is in the data
        with layer.block_history():
            layer.paint((z, y, x), 0)

    stroke()
    np.testing.assert_array_equal(np.asarray(layer.data), saved)
    np.testing.assert_array_equal(read_label(folder / "masks" / "phantom_001.nii.gz", state.volume).array, saved)
    widget.review.segment_slice()  # re-prompting a locked target is refused with a message
    assert widget.review.worker is None
    widget.review.lock.click()  # unlocked: the stroke now sticks
    stroke()
    assert (np.asarray(layer.data) == 1).sum() < (saved == 1).sum()
    assert (read_label(folder / "masks" / "phantom_001.nii.gz", state.volume).array == 1).sum() < (saved == 1).sum()


def test_a_prompt_result_never_lands_in_another_volume(make_napari_viewer, qtbot, cli_project, tmp_path,
                                                        monkeypatch) -> None:
    """The annotator opens another volume while SAM works on a slice: the result is dropped, not written there."""
    import shutil
    import threading

    folder = shutil.copytree(cli_project, tmp_path / "p")
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer, folder)
    state = widget.state
    widget.volumes.open("phantom_001")
    state.project.active_target = "liver"
    state.changed("active_target")
    gate = threading.Event()

    class HeldSegmenter:  # stands in for SAM on one slice, held until the other volume is open
        def segment_volume_slice(self, z, box, points, labels):
            gate.wait(60)
            return np.ones(state.volume.array.shape[1:], bool)

    monkeypatch.setattr(widget.review, "_volume_segmenter", HeldSegmenter)
    z = widget.review.current_slice()
    widget.review._prompt_layers()
    viewer.layers[PROMPT_LAYER].add_rectangles(np.array([[z, 10, 10], [z, 10, 60], [z, 60, 60], [z, 60, 10]]))
    widget.review.segment_slice()
    assert widget.review.worker is not None and not widget.review.lock.isEnabled()
    widget.volumes.open("phantom_002")
    before = np.array(state.mask_layer.data, copy=True)
    gate.set()
    _wait_idle(qtbot, widget.review, 60)
    np.testing.assert_array_equal(np.asarray(state.mask_layer.data), before)
    assert "phantom_001 is no longer open" in widget.review.status.text()
    assert widget.review.lock.isEnabled()
