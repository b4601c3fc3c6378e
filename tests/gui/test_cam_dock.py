"""The 'CAM seeding' dock: ticks along z (strip, shortcuts, ranges), tags saved and loaded, training and seeding
in a worker, result layers, and accepting a pseudo-mask without overwriting painted voxels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
    pytest.skip("napari layers need a GL context: run the tests under xvfb-run (see README)",
                allow_module_level=True)

from medlsam_napari.layer_geometry import layer_kwargs  # noqa: E402
from medlsam_plugins.cam_dock import CamSeedWidget  # noqa: E402
from medlsam_training.cam.tags import ABSENT, PRESENT, UNKNOWN  # noqa: E402
from medlsam_training.volumes.io import read_label, read_volume  # noqa: E402
from medlsam_training.volumes.phantom import write_phantom_dataset  # noqa: E402


def test_cam_dock_tags_trains_seeds_and_accepts(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    write_phantom_dataset(tmp_path, n=1, size=(64, 56, 24), spacing=(5.4, 5.4, 9.0))
    image = read_volume(tmp_path / "phantom_000" / "image.nii.gz")
    truth = read_label(tmp_path / "phantom_000" / "label.nii.gz", image).array == 1  # liver
    viewer = make_napari_viewer()
    viewer.add_image(image.array, **layer_kwargs(image, "ct"))
    painted = np.zeros(image.array.shape, np.uint8)
    painted[truth.nonzero()[0][0], :, :] = 7            # one slice already painted by hand
    viewer.add_labels(painted, **layer_kwargs(image.with_array(painted), "mask", labels=True))
    dock = CamSeedWidget(viewer)
    dock.target.setText("liver")
    assert dock.image_box.currentText() == "ct" and dock.labels_box.currentText() == "mask"

    # ticks: one by click/shortcut, then a range from the last ticked slice to the current one
    present = np.nonzero(truth.any(axis=(1, 2)))[0]
    dock.tag(int(present[0]), PRESENT)
    viewer.dims.set_point(0, image.index_to_physical([0, 0, int(present[-1])])[2])
    assert dock.current_slice() == int(present[-1])
    dock.tag_range(dock.current_slice(), PRESENT)
    dock.tag(0, ABSENT)
    dock.tag_range(int(present[0]) - 1, ABSENT)
    tags = dock.tags[("ct", "liver")]
    assert np.all(tags[present[0]:present[-1] + 1] == PRESENT) and np.all(tags[:present[0]] == ABSENT)
    assert np.all(tags[present[-1] + 1:] == UNKNOWN)
    assert f"{present.size} present" in dock.summary.text()

    saved = dock.save_tags(tmp_path / "tags.json")
    dock.tags.clear()
    dock.load_tags(saved)
    assert np.array_equal(dock.tags[("ct", "liver")], tags)

    dock.start_training(slices_per_epoch=96)
    qtbot.waitUntil(lambda: dock.worker is None, timeout=120_000)
    assert dock.model is not None and dock.model_targets == ["liver"], dock.status.text()
    dock.start_seeding()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=120_000)
    for name in ("liver UM-CAM", "liver uncertainty", "liver pseudo-mask"):
        assert name in viewer.layers and viewer.layers[name].data.shape == image.array.shape, dock.status.text()
    assert np.allclose(viewer.layers["liver UM-CAM"].affine.affine_matrix, viewer.layers["ct"].affine.affine_matrix)

    # accepting never overwrites painted voxels, and can be undone
    proposal = truth | np.roll(truth, 3, axis=2)
    dock.results["liver"]["mask"] = proposal.astype(np.uint8)
    dock.value.setValue(1)
    dock.accept()
    data = viewer.layers["mask"].data
    assert np.all(data[painted == 7] == 7)
    assert np.all(data[proposal & (painted == 0)] == 1)
    dock.undo()
    assert np.array_equal(viewer.layers["mask"].data, painted)


def test_cam_dock_seeds_an_organ_from_the_localizer_mask(make_napari_viewer, qtbot, openkbp: Path) -> None:
    """The organ path: the labels layer's brainstem (the localizer's result) is the prior, the ticks limit the
    slices, LiteMedSAM segments them; accepting under 'keep other labels' replaces the brainstem only."""
    from medlsam_plugins.cam_dock import CLASSES
    from medlsam_training.cam.data import labelled_cases
    from medlsam_training.metrics import dice_score

    case = next(c for c in labelled_cases(openkbp, "validation-pats") if c.name == "pt_201")
    image, label = case.load()
    brainstem = case.label_value("brainstem")
    truth = label.array == brainstem
    localized = np.where(truth, 0, label.array).astype(np.uint8)
    localized[np.roll(truth, 1, axis=2)] = brainstem          # the localizer's mask, one voxel off
    viewer = make_napari_viewer()
    viewer.add_image(image.array, **layer_kwargs(image, "ct"))
    viewer.add_labels(localized, **layer_kwargs(image.with_array(localized), "organs", labels=True))
    dock = CamSeedWidget(viewer)
    dock.target.setText("brainstem")
    dock.class_box.setCurrentIndex(list(CLASSES).index("organ"))
    assert "LiteMedSAM" in dock.class_help.text() and not dock.train_btn.isEnabled()
    dock.value.setValue(brainstem)
    present = np.flatnonzero(truth.any(axis=(1, 2)))
    dock.tag(int(present[0]), PRESENT)
    viewer.dims.set_point(0, image.index_to_physical([0, 0, int(present[-1])])[2])
    dock.tag_range(dock.current_slice(), PRESENT)
    dock.start_seeding()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=300_000)
    assert "brainstem pseudo-mask" in viewer.layers and "brainstem prior" in viewer.layers, dock.status.text()
    seeded = viewer.layers["brainstem pseudo-mask"].data.astype(bool)
    assert dice_score(seeded, truth) > 0.5 and not seeded[np.setdiff1d(np.arange(len(seeded)), present)].any()
    dock.policy_box.setCurrentIndex(dock.policy_box.findData("keep"))
    dock.accept()
    data = viewer.layers["organs"].data
    assert np.array_equal(data == brainstem, seeded & ((localized == 0) | (localized == brainstem)))
    assert np.array_equal(data[(data != brainstem) & (localized != brainstem)],
                          localized[(data != brainstem) & (localized != brainstem)])
    dock.undo()
    assert np.array_equal(viewer.layers["organs"].data, localized)


def test_cam_dock_organ_path_without_a_prior_says_what_it_needs(make_napari_viewer, openkbp: Path) -> None:
    from medlsam_training.cam.data import labelled_cases

    case = labelled_cases(openkbp, "validation-pats")[0]
    image, _ = case.load()
    viewer = make_napari_viewer()
    viewer.add_image(image.array, **layer_kwargs(image, "ct"))
    dock = CamSeedWidget(viewer)
    dock.target.setText("parotid_left")
    dock.class_box.setCurrentIndex(dock.class_box.findData("organ"))
    dock.start_seeding()
    assert dock.worker is None and "needs a prior" in dock.status.text()


def test_a_tick_on_a_volume_stored_head_first_is_the_files_slice(make_napari_viewer, openkbp: Path) -> None:
    """OpenKBP stores slices head first (direction z = -1): napari's slider counts the other way, and a tick
    records the file's own slice index (what tags files and the CLI use), never the slider's number."""
    image = read_volume(openkbp / "imagesTr" / "pt_1_0000.nii.gz")
    assert image.geometry.direction[8] < 0  # stored head first
    viewer = make_napari_viewer()
    viewer.add_image(image.array, **layer_kwargs(image, "ct"))
    dock = CamSeedWidget(viewer)
    dock.target.setText("brainstem")
    viewer.dims.set_point(0, image.index_to_physical([0, 0, 78])[2])
    slider = viewer.dims.current_step[0]
    assert slider == image.array.shape[0] - 1 - 78  # the slider's number is not the file's
    assert dock.current_slice() == 78
    dock.tag(dock.current_slice(), PRESENT)
    assert dock.tags[("ct", "brainstem")][78] == PRESENT


def test_the_two_checkpoints_load_from_one_path_each_and_a_bad_file_is_one_line(make_napari_viewer,
                                                                                tmp_path: Path) -> None:
    """'Load classifier…' and 'Load refinement network…': the shipped head-and-neck classifier loads and names its
    targets; a file that is no checkpoint leaves the dock as it was with one line naming the file."""
    from medlsam_training.cam.classifier import load_classifier

    dock = CamSeedWidget(make_napari_viewer())
    shipped = Path(__file__).resolve().parents[2] / "training" / "cam" / "continue" / "hn_slice_classifier.pt"
    dock.load_model(shipped)
    assert dock.model_targets == load_classifier(shipped)[1]
    assert dock.status.text() == f"classifier for {', '.join(dock.model_targets)}"
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    for load in (dock.load_model, dock.load_refiner):
        dock.status.setText("")
        load(bad)
        assert str(bad) in dock.status.text() and "\n" not in dock.status.text()
    assert dock.refiner is None and dock.model_targets == load_classifier(shipped)[1]
