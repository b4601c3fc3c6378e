"""The 'Learn from reviewed volumes' dock on real head-and-neck CT: trains from the reviewed volumes and locked
targets, pre-segments the pending ones by the label policy, never over a locked target, one undo step."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
    pytest.skip("napari layers need a GL context: run the tests under xvfb-run (see README)",
                allow_module_level=True)

from medlsam_plugins.finetune_dock import FinetuneWidget  # noqa: E402
from medlsam_training.options import LabelPolicy  # noqa: E402
from medlsam_training.project.folder import Project  # noqa: E402
from medlsam_training.volumes.io import read_label  # noqa: E402


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dock_trains_from_reviewed_and_presegments_pending(make_napari_viewer, qtbot, hn_project) -> None:
    folder, partly, pending = hn_project.folder, hn_project.partly, hn_project.pending
    viewer = make_napari_viewer()
    dock = FinetuneWidget(viewer, folder)
    assert dock.train_list.count() == 3 and dock.predict_list.count() == 2  # reviewed + a locked mandible; pending
    assert "mandible" in dock.train_list.item(2).text()
    dock.steps.setValue(300)  # enough to learn the mandible (only learned targets are written)
    dock.start_training()
    # the GUI stays usable while it trains (issue 43, item 3): the annotator opens a volume beside the training, and
    # the training's progress reaches the dock's bar while it runs
    from medlsam_napari.annotator import AnnotatorWidget

    annotator = AnnotatorWidget(viewer)
    annotator.state.show_volume(pending)
    assert dock.worker is not None and annotator.state.volume_name == pending
    qtbot.waitUntil(lambda: dock.bar.value() > 0 or dock.worker is None, timeout=600_000)
    assert dock.bar.value() > 0
    qtbot.waitUntil(lambda: dock.worker is None, timeout=600_000)
    assert dock.checkpoint is not None and dock.checkpoint.is_file(), dock.status.text()
    assert len(dock.curve.values) == 300 and dock.bar.value() == 300
    assert "Dice on its training volumes: brainstem" in dock.status.text()

    # the volume with the locked mandible is open in the annotator (same project object)
    assert annotator.state.project is dock.project
    annotator.state.show_volume(partly)
    layer = viewer.layers[f"{partly} mask"]
    before = np.array(layer.data)
    reviewed = _sha(dock.project.mask_path("pt_1"))
    dock.policy.setCurrentIndex(list(LabelPolicy).index(LabelPolicy.KEEP))
    dock.start_prediction()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=300_000)
    text = dock.status.text()
    assert f"{partly}: pre-segmented" in text and f"{pending}: pre-segmented" in text, text  # every volume's line
    after = np.array(layer.data)
    assert np.array_equal(after == 7, before == 7)  # the locked mandible: not a voxel changed
    assert (after != before).any()  # the rest was written into the open layer ...
    assert np.array_equal(read_label(dock.project.mask_path(partly)).array, after)  # ... and saved
    layer.undo()  # one step back to what the annotator had, saved too
    assert np.array_equal(layer.data, before)
    assert np.array_equal(read_label(dock.project.mask_path(partly)).array, before)
    assert _sha(dock.project.mask_path("pt_1")) == reviewed  # reviewed work untouched
    assert Project.open(folder).entry(pending).status == "segmented"
    assert dock.predict_list.count() == 2  # both still pending review (segmented, not reviewed)


def test_dock_without_reviewed_work_says_what_to_do(make_napari_viewer, hn_project) -> None:
    project = Project.open(hn_project.folder)
    for name in (*hn_project.reviewed, hn_project.partly):
        for target in hn_project.targets:
            project.set_locked(name, target, False)  # un-reviewed: nothing locked anywhere
    dock = FinetuneWidget(make_napari_viewer(), hn_project.folder)
    assert dock.train_list.count() == 0
    dock.start_training()
    assert dock.worker is None and "Review some volumes first" in dock.status.text()
    dock.start_prediction()
    assert "Train from reviewed volumes first" in dock.status.text()


def test_dock_opened_after_the_project_sees_it_and_follows_reviews(make_napari_viewer, hn_project) -> None:
    """Opened from Plugins once the annotator has the project open: its lists are filled at once, and marking a
    volume reviewed in the annotator adds it to what the dock learns from."""
    from medlsam_napari.annotator import AnnotatorWidget

    viewer = make_napari_viewer()
    annotator = AnnotatorWidget(viewer, hn_project.folder)
    dock = FinetuneWidget(viewer)  # no folder: the viewer's project
    assert dock.train_list.count() == 3 and dock.predict_list.count() == 2
    partly = hn_project.partly  # its mandible locked so far; now the whole volume is reviewed
    annotator.state.project.mark_reviewed(partly)
    annotator.state.changed("status")  # what 'Mark reviewed' says to every dock
    row = next(dock.train_list.item(i).text() for i in range(3) if dock.train_list.item(i).text().startswith(partly))
    assert all(t in row for t in hn_project.targets), row
    assert dock.predict_list.count() == 1


def test_dock_never_carries_a_network_to_another_project_and_trains_on_the_checked_volumes(
        make_napari_viewer, qtbot, hn_trained, hn_project) -> None:
    from qtpy.QtCore import Qt

    from medlsam_training.engine.checkpoint import load_checkpoint

    viewer = make_napari_viewer()
    dock = FinetuneWidget(viewer, hn_trained.folder)
    assert dock.checkpoint is not None and hn_trained.folder in dock.checkpoint.parents
    dock.open_project(hn_project.folder)  # another project, never trained
    assert dock.checkpoint is None
    dock.start_prediction()
    assert dock.worker is None and "Train from reviewed volumes first" in dock.status.text()
    assert not Project.open(hn_project.folder).mask_path(hn_project.pending).is_file()  # A's network wrote nothing

    dock.project.add_target("spinal_cord", 2)  # no reviewed volume holds it: listed, not offered
    dock.state.changed("targets")
    qtbot.waitUntil(lambda: not dock.scan.busy and not dock._rescan, timeout=60_000)
    row = next(dock.target_list.item(i) for i in range(dock.target_list.count())
               if dock.target_list.item(i).data(Qt.UserRole) == "spinal_cord")
    assert "no reviewed volume holds it" in row.text() and row.checkState() == Qt.Unchecked
    assert not row.flags() & Qt.ItemIsEnabled
    for i in range(dock.train_list.count()):  # the user unchecks pt_2
        if dock.train_list.item(i).data(Qt.UserRole) == "pt_2":
            dock.train_list.item(i).setCheckState(Qt.Unchecked)
    dock.steps.setValue(3)
    dock.start_training()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=300_000)
    meta = load_checkpoint(hn_project.folder / "models" / "slicenet.pt")["meta"]
    assert meta["volumes"] == ["pt_1", hn_project.partly] and "spinal_cord" not in meta["targets"]
