"""What a new annotator hit in the first hour (screens of 1366 x 768): targets offered from the folder, points
ready to click and checked as clicked, honest status lines, a corrupt volume shown as failed, the five docks as
tabs, no quitting over an edited report, CT windows, and every automatic change to a mask one Ctrl+Z away."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qtpy")
if not os.environ.get("DISPLAY"):
    pytest.skip("napari layers need a GL context: run the tests under xvfb-run (see README)",
                allow_module_level=True)

from medlsam_napari.annotator import AnnotatorWidget, project_summary  # noqa: E402
from medlsam_training.localization.extreme_points import extreme_points_from_mask  # noqa: E402
from medlsam_training.volumes.io import read_image_label, read_label, write_mask  # noqa: E402
from medlsam_training.volumes.phantom import write_phantom_dataset  # noqa: E402


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Two small phantoms with their labels.json (as a dataset arrives), and one corrupt volume."""
    root = tmp_path / "p"
    write_phantom_dataset(root, n=2, size=(64, 64, 16), spacing=(4.0, 4.0, 8.0))
    (root / "broken").mkdir()
    (root / "broken" / "image.nii.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(200))
    return root


def test_targets_are_offered_from_the_folders_label_names(make_napari_viewer, folder: Path) -> None:
    widget = AnnotatorWidget(make_napari_viewer(), folder)
    panel = widget.targets
    assert panel.list.count() == 0 and panel.add_offered.isVisibleTo(widget)
    assert panel.offered["liver"] == 1 and panel.offered["spine"] == 6
    panel.name.setText("spleen")
    assert panel.label.value() == 2  # the folder's own value for that name, so masks and labels files agree
    panel._add_all_offered()
    assert [t.name for t in widget.state.project.targets][:2] == ["liver", "spleen"]
    assert {t.label for t in widget.state.project.targets} == {1, 2, 3, 4, 5, 6}
    assert not panel.add_offered.isVisibleTo(widget)  # nothing left to offer


def test_points_open_ready_to_click_and_bad_points_are_refused_on_the_dock(make_napari_viewer, folder: Path,
                                                                           monkeypatch) -> None:
    toasts: list[str] = []  # a refusal is said on the dock, in view; napari's toast could stay over the canvas
    monkeypatch.setattr("napari.utils.notifications.show_warning", toasts.append)
    widget = AnnotatorWidget(make_napari_viewer(), folder)
    state = widget.state
    state.project.add_target("liver", 1)
    state.project.active_target = "liver"
    state.project.set_template("phantom_000")
    widget.volumes.open("phantom_000")
    layer = state.points_layer
    assert str(layer.mode) == "add" and state.viewer.layers.selection.active is layer  # no key 2 needed

    image, label = read_image_label(folder / "phantom_000" / "image.nii.gz", folder / "phantom_000" / "label.nii.gz")
    clicks = extreme_points_from_mask("liver", 1, image, label).indices()
    layer.add(clicks[0][::-1])  # right
    layer.add(clicks[0][::-1])  # the same spot again, as 'left': refused
    assert state.project.point_slots("phantom_000", "liver")[1] is None
    assert "falls on the right point" in widget.points.status.text()
    assert len(layer.data) == 1  # the refused point left the layer
    layer.add(clicks[1][::-1])  # left
    beyond = np.array(clicks[2], float)
    beyond[0] = clicks[1][0] + 3  # an 'anterior' click further left than the left point
    assert beyond[0] < image.size[0]
    layer.add(beyond[::-1])
    assert state.project.point_slots("phantom_000", "liver")[2] is None
    text = widget.points.status.text()
    assert "the anterior point would lie further left than the left point, which marks the target's leftmost" in text
    assert text.count("not taken") <= 1 and "most left" not in text
    assert not toasts
    for idx in clicks[2:]:
        layer.add(idx[::-1])
    assert state.project.next_point("phantom_000", "liver") is None
    assert "six valid points" in widget.points.status.text()


def test_status_lines_count_templates_apart_and_a_corrupt_volume_is_failed_with_its_reason(
        make_napari_viewer, folder: Path) -> None:
    widget = AnnotatorWidget(make_napari_viewer(), folder)
    p = widget.state.project
    p.set_template("phantom_000")
    widget.state.changed("status")
    text = widget.project_label.text()
    assert "1 template;" in text and "1 templates" not in text, text
    assert "queries: 1 pending, 1 failed" in text, text  # the template is not a pending query
    assert p.entry("broken").status == "failed" and "broken" in p.entry("broken").error
    items = {widget.volumes.list.item(i).data(256): widget.volumes.list.item(i)
             for i in range(widget.volumes.list.count())}
    assert "failed" in items["broken"].text() and "not a readable volume" in items["broken"].toolTip()
    assert "broken failed" in widget.volumes.status.text()
    assert project_summary(p) == text


def test_each_automatic_change_to_the_open_mask_is_one_undo_step(make_napari_viewer, folder: Path) -> None:
    """A run's result written into the open volume and a re-prompted slice: Ctrl+Z (the layer's undo) takes back
    exactly that change, Ctrl+Shift+Z (redo) brings it back, and the mask file follows (autosave)."""
    widget = AnnotatorWidget(make_napari_viewer(), folder)
    state = widget.state
    state.project.add_target("liver", 1)
    widget.volumes.open("phantom_001")
    layer = state.mask_layer
    truth = read_label(folder / "phantom_001" / "label.nii.gz").array
    painted = np.zeros_like(np.asarray(layer.data))
    painted[3, 10:20, 10:20] = 1
    state.set_mask(painted)  # stands for a brush stroke the annotator made
    run_result = np.where(truth == 1, 1, 0).astype(painted.dtype)
    write_mask(run_result, state.volume, state.project.mask_path("phantom_001"))  # what a run writes
    assert state.reload_mask() > 0
    assert np.array_equal(layer.data, run_result)
    layer.undo()
    assert np.array_equal(layer.data, painted)  # exactly the run's change taken back
    assert np.array_equal(read_label(state.project.mask_path("phantom_001"), allow_empty=True).array, painted)
    layer.redo()
    assert np.array_equal(layer.data, run_result)
    z = int(np.nonzero(run_result.any(axis=(1, 2)))[0].mean())
    reprompted = run_result.copy()
    reprompted[z] = 0
    reprompted[z, 5:9, 5:9] = 1
    state.set_mask(reprompted)  # what 'Segment slice' applies
    layer.undo()
    assert np.array_equal(layer.data, run_result)
    layer.undo()
    assert np.array_equal(layer.data, painted)


def test_five_docks_are_usable_together_at_1366_by_768(make_napari_viewer, qtbot, folder: Path,
                                                       openkbp: Path) -> None:
    from qtpy.QtWidgets import QDockWidget

    from medlsam_napari.docking import VerticalScroll
    from medlsam_plugins.cam_dock import CamSeedWidget
    from medlsam_plugins.coreset_dock import CoresetWidget
    from medlsam_plugins.finetune_dock import FinetuneWidget
    from medlsam_plugins.report_dock import ReportWidget

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.showNormal()
    window.resize(1366, 768)
    (folder / "pt_1.nii.gz").symlink_to(openkbp / "imagesTr" / "pt_1_0000.nii.gz")
    annotator = AnnotatorWidget(viewer, folder)
    annotator.state.project.add_target("parotid_left", 4)  # a real organ on a real CT: the CAM dock's tag summary
    annotator.state.project.active_target = "parotid_left"  # reads "parotid_left: 0 present, … of 128 slices"
    annotator.state.changed("targets")
    annotator.volumes.open("pt_1")
    docks = [annotator, FinetuneWidget(viewer), ReportWidget(viewer), CamSeedWidget(viewer), CoresetWidget(viewer)]
    for i, dock in enumerate(docks):  # as the Plugins menu adds them: no tabify asked
        viewer.window.add_dock_widget(dock, name=f"dock {i}", area="right")
        qtbot.wait(50)
    qtbot.wait(200)
    qt_docks = [w for w in window.findChildren(QDockWidget) if any(w.isAncestorOf(d) for d in docks)]
    assert len(qt_docks) == 5
    tabbed = set(window.tabifiedDockWidgets(qt_docks[0])) | {qt_docks[0]}
    assert tabbed == set(qt_docks)  # one tab each, none squeezed under another
    assert window.height() <= 768 and window.width() <= 1366, window.size()  # long docks scroll: the window fits
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QMainWindow, QTabBar

    [bar] = [b for b in window.findChildren(QTabBar) if isinstance(b.parentWidget(), QMainWindow)
             and b.count() == 5 and {b.tabText(i) for i in range(5)} == {f"dock {i}" for i in range(5)}]
    assert bar.elideMode() == Qt.TextElideMode.ElideNone and bar.usesScrollButtons()  # whole titles, never 'Me…'
    for qt_dock, dock in zip(qt_docks, docks):
        qt_dock.raise_()
        qtbot.wait(50)
        assert qt_dock.height() >= 500, (dock, qt_dock.height())  # the full height of a 768-pixel screen
        # nothing clipped on the right: the dock is as wide as its scrolled rows need, now that they are filled
        scroll = dock.findChild(VerticalScroll)
        assert qt_dock.width() >= scroll.minimumSizeHint().width(), (type(dock).__name__, qt_dock.width(),
                                                                       scroll.minimumSizeHint().width())
        # no dock widens the column so far that the image shrinks: the canvas keeps 600 pixels on every tab
        canvas = viewer.window._qt_viewer.canvas.native.width()
        assert canvas >= 600, (type(dock).__name__, canvas, qt_dock.width())


def test_quitting_with_an_edited_unsaved_report_asks_first(make_napari_viewer, qtbot, monkeypatch,
                                                           tmp_path: Path) -> None:
    from medlsam_plugins.report_dock import ReportWidget

    viewer = make_napari_viewer(show=True)
    dock = ReportWidget(viewer)
    viewer.window.add_dock_widget(dock, name="report", area="right")
    qtbot.wait(50)
    dock.text.setPlainText("Liver: enlarged, see the radiologist's note.")  # edited by hand, never saved
    from qtpy.QtGui import QCloseEvent
    from qtpy.QtWidgets import QApplication

    answers = []
    monkeypatch.setattr(dock, "ask_unsaved", lambda: answers.append("asked") or "cancel")
    window = viewer.window._qt_window
    event = QCloseEvent()
    QApplication.sendEvent(window, event)  # what Ctrl+Q and the close button send napari's window
    qtbot.wait(50)
    assert answers == ["asked"] and not event.isAccepted() and window.isVisible()  # napari and the draft stay
    assert dock.text.toPlainText().startswith("Liver: enlarged")
    # 'discard' lets napari close (the guard hands the event on); after a save there is nothing to ask
    monkeypatch.setattr(dock, "ask_unsaved", lambda: "discard")
    assert dock._close_guard.eventFilter(window, QCloseEvent()) is False
    dock._saved_text = dock.text.toPlainText()
    monkeypatch.setattr(dock, "ask_unsaved", lambda: pytest.fail("asked about a saved draft"))
    assert dock._close_guard.eventFilter(window, QCloseEvent()) is False


def test_ct_window_presets_set_the_open_volume(make_napari_viewer, folder: Path) -> None:
    from medlsam_napari.panels.windows import CT_WINDOWS, window_limits

    widget = AnnotatorWidget(make_napari_viewer(), folder)
    widget.volumes.open("phantom_000")
    for name in CT_WINDOWS:
        widget.windows.buttons[name].click()
        assert tuple(widget.state.image_layer.contrast_limits) == pytest.approx(window_limits(name))
    assert window_limits("lung") == (-1350.0, 150.0)


def test_the_brush_paints_the_active_target_and_the_list_follows_the_brush(make_napari_viewer, folder: Path) -> None:
    """Selecting a target sets the mask layer's label; a stroke saves that target's value, never another organ's;
    picking a label in the layer's controls selects its target in the list."""
    widget = AnnotatorWidget(make_napari_viewer(), folder)
    state, panel = widget.state, widget.targets
    state.project.add_target("brainstem", 1)
    state.project.add_target("mandible", 7)
    state.changed("targets")
    widget.volumes.open("phantom_001")
    layer = state.mask_layer
    item = next(panel.list.item(i) for i in range(panel.list.count()) if panel.list.item(i).data(256) == "mandible")
    panel.list.setCurrentItem(item)  # the annotator clicks 'mandible (7)' in the targets list
    assert state.project.active_target == "mandible" and layer.selected_label == 7
    before = np.asarray(layer.data).copy()
    layer.brush_size = 3
    layer.mode = "paint"
    # a brush stroke as napari's mouse binding makes one (labels/_labels_mouse_bindings.py: draw): a stroke begun,
    # painted with the layer's selected label, committed on release (the paint event that autosaves)
    layer._begin_stroke()
    layer.paint((8, 30, 30), layer.selected_label)
    layer._commit_stroke()
    saved = read_label(state.project.mask_path("phantom_001"), allow_empty=True).array
    changed = saved[saved != before.astype(saved.dtype)]
    assert changed.size > 0 and set(np.unique(changed)) == {7}, np.unique(changed)
    layer.selected_label = 1  # picked in the layer's controls
    assert state.project.active_target == "brainstem"
    assert panel.list.currentItem().data(256) == "brainstem"


def test_a_volume_opens_zoomed_to_the_body_with_named_axes(make_napari_viewer, openkbp: Path, tmp_path: Path) -> None:
    """An OpenKBP scan (a head in a 128-voxel box padded with air): opened framed on the body, the slider named."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "pt_1.nii.gz").symlink_to(openkbp / "imagesTr" / "pt_1_0000.nii.gz")
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer, folder)
    viewer.reset_view()
    whole = viewer.camera.zoom
    widget.volumes.open("pt_1")
    assert tuple(viewer.dims.axis_labels) == ("axial (S)", "coronal (P)", "sagittal (L)")
    assert viewer.camera.zoom > 1.2 * whole  # the body fills the canvas, not the padded field of view


def test_the_cam_and_coreset_docks_take_the_project_and_the_plot_follows_the_theme(make_napari_viewer,
                                                                                 folder: Path) -> None:
    """Opened beside the annotator: the CAM dock's target and label value are the project's active target, the
    coreset dock's folder and targets the project's; the coreset plot is dark in napari's dark theme."""
    from matplotlib.colors import to_hex

    from medlsam_plugins.cam_dock import CamSeedWidget
    from medlsam_plugins.coreset_dock import CoresetWidget

    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer, folder)
    widget.state.project.add_target("liver", 1)
    widget.state.project.add_target("spleen", 2)
    cam, coreset = CamSeedWidget(viewer), CoresetWidget(viewer)
    assert cam.target.text() == "liver" and cam.value.value() == 1
    widget.state.project.active_target = "spleen"
    widget.state.changed("active_target")
    assert cam.target.text() == "spleen" and cam.value.value() == 2
    assert coreset.folder.text() == str(widget.state.project.folder) and coreset.targets.text() == "liver,spleen"
    viewer.theme = "dark"
    assert to_hex(coreset.figure.get_facecolor()) != "#ffffff"  # dark before any run, not only after one
    coreset._show([])
    assert to_hex(coreset.figure.get_facecolor()) != "#ffffff"
    from napari.utils.theme import get_theme

    viewer.theme = "light"  # and it follows a switch
    assert to_hex(coreset.figure.get_facecolor()) == get_theme("light").background.as_hex()


def _in_view(scroll, widget) -> bool:
    """Whether ``widget`` lies (at least its top) inside ``scroll``'s visible viewport."""
    from qtpy.QtCore import QPoint

    y = widget.mapTo(scroll.widget(), QPoint(0, 0)).y()
    top = scroll.verticalScrollBar().value()
    return top <= y < top + scroll.viewport().height()


def test_at_1366_by_768_the_step_that_needs_the_user_is_in_view(make_napari_viewer, qtbot, folder: Path) -> None:
    """Opening a template brings the point prompt into view, a refused point brings its whole reason (a toast is
    cut short), and the dock starts at its top for a volume that is not a template."""
    from medlsam_training.localization.extreme_points import extreme_points_from_mask
    from medlsam_training.volumes.io import read_image_label

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.showNormal()
    window.resize(1366, 768)
    widget = AnnotatorWidget(viewer, folder)
    viewer.window.add_dock_widget(widget, name="MedLSAM", area="right")
    qtbot.wait(100)
    state = widget.state
    state.project.add_target("liver", 1)
    state.changed("targets")
    state.project.set_template("phantom_000")
    state.changed("status")
    assert widget.scroll.widget().height() > widget.scroll.viewport().height()  # the dock is longer than the screen
    widget.volumes.open("phantom_001")
    qtbot.wait(50)
    assert not _in_view(widget.scroll, widget.points.status)  # not a template: the prompt is below the fold
    widget.volumes.open("phantom_000")
    qtbot.wait(50)
    assert _in_view(widget.scroll, widget.points.status)  # a template: the point prompt is in view
    widget.scroll.verticalScrollBar().setValue(0)
    image, label = read_image_label(folder / "phantom_000" / "image.nii.gz", folder / "phantom_000" / "label.nii.gz")
    clicks = extreme_points_from_mask("liver", 1, image, label).indices()
    state.points_layer.add(clicks[0][::-1])
    state.points_layer.add(clicks[0][::-1])  # the same spot as 'left': refused
    qtbot.wait(50)
    assert "falls on the right point" in widget.points.status.text()
    assert _in_view(widget.scroll, widget.points.status)


def test_a_name_like_a_targets_is_refused_once_with_that_name_then_added(make_napari_viewer, folder: Path,
                                                                         monkeypatch) -> None:
    """A typo is not a new target: "livre" beside "liver" is refused with the name it resembles; the same name
    asked again is added (a user who meant it), and nothing else was written in between."""
    said: list[str] = []
    monkeypatch.setattr("medlsam_napari.panels.targets.show_error",
                        lambda _w, title, exc: said.append(f"{title}: {exc}"))
    widget = AnnotatorWidget(make_napari_viewer(), folder)
    panel, project = widget.targets, widget.state.project
    panel.name.setText("liver")
    panel.add_button.click()
    assert [t.name for t in project.targets] == ["liver"] and not said
    panel.name.setText("livre")
    panel.add_button.click()
    assert [t.name for t in project.targets] == ["liver"]  # refused: no target 2
    assert len(said) == 1 and "liver" in said[0] and "livre" in said[0]
    assert panel.name.text() == "livre"  # kept, so that asking again is one click
    panel.add_button.click()
    assert [t.name for t in project.targets] == ["liver", "livre"] and len(said) == 1
    assert panel.list.count() == 2
