"""Corrections in 3D in the annotator, on a real head-and-neck patient segmented by the project's run: the slices the
annotator paints are recorded as corrected, 'Update the rest' changes the other slices toward the manual contour
off the GUI thread, the corrected slices stay as drawn, and one Ctrl+Z takes the whole update back."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("qtpy")
if not os.environ.get("DISPLAY"):
    pytest.skip("napari layers need a GL context: run the tests under xvfb-run (see README)",
                allow_module_level=True)

from medlsam_napari.annotator import AnnotatorWidget  # noqa: E402
from medlsam_napari.state import CHANGES_LAYER  # noqa: E402
from medlsam_training.project.folder import Project  # noqa: E402
from medlsam_training.volumes.io import read_label  # noqa: E402

pytestmark = pytest.mark.slow
TARGET, VALUE = "parotid_left", 4


def stroke(layer, z: int, truth: np.ndarray) -> None:
    """The annotator redraws slice ``z`` of the target as the manual contour has it, in one stroke (napari's own
    begin/commit: one undo step, one paint event)."""
    data = np.asarray(layer.data)
    wrong = np.nonzero((data[z] == VALUE) & (truth[z] != VALUE))
    missing = np.nonzero((truth[z] == VALUE) & (data[z] == 0))
    layer._begin_stroke()
    if wrong[0].size:
        layer.data_setitem((np.full(wrong[0].size, z), *wrong), 0)
    if missing[0].size:
        layer.data_setitem((np.full(missing[0].size, z), *missing), VALUE)
    layer._commit_stroke()


def test_update_the_rest_follows_painted_slices_keeps_them_and_is_one_undo(make_napari_viewer, qtbot,
                                                                           hn_segmented) -> None:
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer, hn_segmented.folder)
    state, name = widget.state, hn_segmented.pending
    state.project.active_target = TARGET
    state.changed("active_target")
    widget.volumes.open(name)
    layer = state.mask_layer
    truth = hn_segmented.truth(name, state.volume)
    zs = np.nonzero((truth == VALUE).any(axis=(1, 2)))[0]
    picks = [int(zs[len(zs) // 4]), int(zs[len(zs) // 2]), int(zs[3 * len(zs) // 4])]
    for z in picks:
        stroke(layer, z, truth)
    assert Project.open(hn_segmented.folder).corrected_slices(name, TARGET) == sorted(picks)  # kept: resumes
    assert f"{len(picks)} corrected slices" in widget.review.corrections.text()
    drawn = np.array(layer.data, copy=True)

    def off(data: np.ndarray) -> int:  # voxels of the target away from the manual contour, off the drawn slices
        rest = np.ones(data.shape[0], bool)
        rest[picks] = False
        return int(((data == VALUE) != (truth == VALUE))[rest].sum())

    widget.review.buttons["Update the rest ⟳"].click()
    qtbot.waitUntil(lambda: not widget.review.job.busy, timeout=120_000)
    updated = np.array(layer.data, copy=True)
    assert np.array_equal(updated[picks], drawn[picks])  # the corrected slices as drawn
    assert off(updated) < off(drawn)  # the rest moved toward the manual contour
    assert CHANGES_LAYER in viewer.layers and viewer.layers[CHANGES_LAYER].data.any()
    assert viewer.layers.selection.active is layer  # the brush is ready for the next slice
    assert "changed" in widget.review.status.text()
    saved = read_label(state.project.mask_path(name), state.volume, allow_empty=True).array
    assert np.array_equal(saved, updated)  # autosaved
    layer.undo()
    assert np.array_equal(layer.data, drawn)  # one Ctrl+Z: the whole update taken back


def test_an_update_that_changes_nothing_offers_no_undo(make_napari_viewer, qtbot, hn_project) -> None:
    """No atlas votes (nothing was run) and one corrected slice: filling between slices has nothing to fill.  The
    dock says so and why, and does not offer Ctrl+Z (which would undo the annotator's own stroke)."""
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer, hn_project.folder)
    state, name = widget.state, hn_project.pending
    state.project.active_target = "brainstem"
    state.changed("active_target")
    widget.volumes.open(name)
    layer = state.mask_layer
    truth = hn_project.truth(name, state.volume)
    zs = np.nonzero((truth == 1).any(axis=(1, 2)))[0]
    z = int(zs[len(zs) // 2])
    yx = np.nonzero(truth[z] == 1)
    layer._begin_stroke()
    layer.data_setitem((np.full(yx[0].size, z), *yx), 1)
    layer._commit_stroke()
    assert state.project.corrected_slices(name, "brainstem") == [z]
    painted = np.array(layer.data, copy=True)
    widget.review.buttons["Update the rest ⟳"].click()
    qtbot.waitUntil(lambda: not widget.review.job.busy, timeout=120_000)
    text = widget.review.status.text()
    assert "changed nothing" in text and "two corrected slices" in text and "Ctrl+Z" not in text, text
    assert np.array_equal(layer.data, painted)
