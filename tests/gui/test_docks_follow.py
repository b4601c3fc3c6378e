"""Docks follow the open project (issue 42, item 6): the coreset dock's folder and targets when targets are added
or another project is opened (what the user typed stays), the CAM dock's target class from the active target."""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("qtpy")
if not os.environ.get("DISPLAY"):
    pytest.skip("napari layers need a GL context: run the tests under xvfb-run (see README)", allow_module_level=True)

from medlsam_napari.annotator import AnnotatorWidget  # noqa: E402
from medlsam_plugins.cam_dock import CamSeedWidget  # noqa: E402
from medlsam_plugins.coreset_dock import CoresetWidget  # noqa: E402
from medlsam_training.options import TargetClass  # noqa: E402


def test_coreset_and_cam_docks_follow_the_project(make_napari_viewer, hn_project, tmp_path) -> None:
    other = shutil.copytree(hn_project.folder, tmp_path / "other", symlinks=True)  # another project, as it was
    viewer = make_napari_viewer()
    annotator = AnnotatorWidget(viewer, hn_project.folder)
    state = annotator.state
    coreset, cam = CoresetWidget(viewer), CamSeedWidget(viewer)
    assert coreset.folder.text() == str(state.project.folder)
    assert coreset.targets.text() == "brainstem,parotid_right,parotid_left,mandible"
    state.project.add_target("PTV70", 9)
    state.changed("targets")
    assert coreset.targets.text().endswith(",mandible,PTV70")  # a target added: listed

    state.project.active_target = "mandible"
    state.changed("active_target")
    assert cam.class_box.currentData() == TargetClass.ORGAN  # an organ is seeded from a box, not from ticks
    state.project.active_target = "PTV70"
    state.changed("active_target")
    assert cam.class_box.currentData() == TargetClass.LESION and cam.target.text() == "PTV70"

    coreset.labelled.setText("/data/annotated")  # the user's own entry
    state.open_project(other)
    assert coreset.folder.text() == str(other.resolve()) and "PTV70" not in coreset.targets.text()
    assert coreset.labelled.text() == "/data/annotated"
    coreset.targets.setText("mandible")  # typed by the user: kept when targets change
    state.project.add_target("larynx", 6)
    state.changed("targets")
    assert coreset.targets.text() == "mandible"
