"""The 'Fine-tune from annotations' dock trains on reviewed masks and pre-segments the rest."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
    pytest.skip("napari layers need a GL context: run the tests under xvfb-run (see README)",
                allow_module_level=True)

from medlsam_plugins.finetune_dock import FinetuneWidget  # noqa: E402
from medlsam_training.io import read_label, read_volume, write_mask  # noqa: E402
from medlsam_training.phantom import write_phantom_dataset  # noqa: E402
from medlsam_training.project import Project  # noqa: E402

TINY_TOML = """[vf]
spacing = 6.0
crop = [16, 32, 32]
channels = [4, 8, 16, 32, 64]
heads = [1, 2, 4]
window = 2
batch = 2
lr = 2e-3
steps = 20
save_every = 10
"""


def test_dock_fine_tunes_and_presegments(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    write_phantom_dataset(tmp_path, n=3, size=(64, 56, 24), spacing=(5.4, 5.4, 9.0))
    project = Project.open(tmp_path)
    project.add_target("liver", 1)
    for name in ("phantom_000", "phantom_001"):  # two annotated volumes
        image = read_volume(project.volume_path(name))
        truth = read_label(tmp_path / name / "label.nii.gz").array == 1
        project.set_status(name, "reviewed", write_mask(truth.astype(np.uint8), image, project.mask_path(name)))
    (tmp_path / "tiny.toml").write_text(TINY_TOML)

    viewer = make_napari_viewer()
    dock = FinetuneWidget(viewer, tmp_path, config=tmp_path / "tiny.toml")
    assert dock.train_list.count() == 2 and dock.predict_list.count() == 1
    dock.start_training()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=300_000)
    assert dock.checkpoint is not None and dock.checkpoint.is_file(), dock.status.text()
    assert len(dock.curve.values) == 20 and dock.bar.value() == 20

    # one project per viewer: the annotator docked beside it works on the very same object
    from medlsam_napari.annotator import AnnotatorWidget

    annotator = AnnotatorWidget(viewer)
    assert annotator.state.project is dock.project
    assert "3 volumes" in annotator.project_label.text()  # and shows it, though another dock opened it

    # phantom_002 already has a mask painted by hand (not yet marked reviewed): the default keeps it
    image = read_volume(project.volume_path("phantom_002"))
    painted = np.zeros(image.array.shape, np.uint8)
    painted[5:10, 20:30, 20:30] = 1
    painted_path = write_mask(painted, image, dock.project.mask_path("phantom_002"))
    dock.project.set_status("phantom_002", "segmented", painted_path)
    dock.start_prediction()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=300_000)
    layer = viewer.layers["phantom_002 PCT-Net"]
    assert layer.data.shape == image.array.shape
    np.testing.assert_array_equal(read_label(dock.project.mask_path("phantom_002"), allow_empty=True).array, painted)
    assert "kept" in dock.status.text()

    # asked to replace: the new mask is written, the painted one is kept in masks/.previous/
    from medlsam_plugins.finetune_dock import REPLACE

    dock.existing.setCurrentText(REPLACE)
    dock.start_prediction()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=300_000)
    [previous] = (dock.project.mask_path("phantom_002").parent / ".previous").glob("phantom_002-*.nii.gz")
    np.testing.assert_array_equal(read_label(previous, allow_empty=True).array, painted)
    assert Project.open(tmp_path).entry("phantom_002").status == "segmented"
    assert Project.open(tmp_path).entry("phantom_000").status == "reviewed"
