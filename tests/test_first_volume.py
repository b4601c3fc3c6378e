"""The first volume of an empty project (issue 43, item 2): six points per target and nothing else.

The path taken is asserted on a real head-and-neck patient, through the annotator's run (``run_project``): a soft-tissue
target's mask is the ellipsoid inscribed in its six points' box, a bone's the CT threshold in it (voxel for voxel, the
run summary naming the source), and each is stored as its own one voter, so that the first correction shifts that
mask toward the drawn slice (refuse+shift) instead of filling between drawn slices.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medlsam_training.correction import load_votes, votes_path
from medlsam_training.correction.in_project import correct_in_project
from medlsam_training.learning.project_loop import _atlas_part
from medlsam_training.localization.extreme_points import extreme_points_from_mask
from medlsam_training.localization.localize import AtlasLocalizer
from medlsam_training.project.folder import Project
from medlsam_training.project.pipeline import RESULTS_NAME, SOURCE_BONE, SOURCE_PRIOR
from medlsam_training.project.run import build_templates, run_project
from medlsam_training.segmentation.propagate import bone_in_box, ellipsoid_in_box
from medlsam_training.segmentation.segmenters import load_segmenter
from medlsam_training.volumes.boxes import Box3D
from medlsam_training.volumes.io import read_label, read_volume

pytestmark = pytest.mark.slow  # the run loads LiteMedSAM (it prompts none of these targets)
TARGETS = {"brainstem": 1, "mandible": 7}  # OpenKBP's values; apart, so no merge decides a voxel
PATIENT = "pt_1"  # train-pats, both contoured


def test_six_points_alone_give_the_box_prior_and_the_first_update_shifts_it(openkbp: Path, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / f"{PATIENT}.nii.gz").symlink_to(openkbp / "imagesTr" / f"{PATIENT}_0000.nii.gz")
    project = Project.open(folder)
    for name, value in TARGETS.items():
        project.add_target(name, value)
    project.set_template(PATIENT)
    image = read_volume(project.volume_path(PATIENT))
    truth = read_label(openkbp / "labelsTr" / f"{PATIENT}.nii.gz", image)
    for name, value in TARGETS.items():  # the annotator's six clicks, taken from the manual contour
        for i, idx in enumerate(extreme_points_from_mask(name, value, image, truth).indices()):
            project.set_point(PATIENT, name, i, idx, image.size, image.geometry)

    results = run_project(project, build_templates(project), [PATIENT], AtlasLocalizer(),
                          load_segmenter("litemedsam", device="cpu"), cache_dir=tmp_path / "cache")
    assert [r.status for r in results] == ["done"]
    summary = json.loads((project.mask_path(PATIENT).parent / RESULTS_NAME).read_text())[PATIENT]["targets"]
    written = read_label(project.mask_path(PATIENT), image).array
    votes = load_votes(votes_path(project.mask_path(PATIENT).parent, PATIENT))
    for name, value in TARGETS.items():
        box = Box3D(*np.reshape(summary[name]["box"], (2, 3)).tolist())
        expected = bone_in_box(image, box, name) if name == "mandible" else ellipsoid_in_box(image.array.shape, box)
        assert summary[name]["source"] == (SOURCE_BONE if name == "mandible" else SOURCE_PRIOR), summary[name]
        assert np.array_equal(written == value, expected), name  # the path's own mask, nothing else
        own = votes[name]
        assert own.own and not own.network and len(own.weights) == 1
        stored = np.zeros(written.shape, bool)
        stored[own.box.slices] = own.vote() >= own.threshold
        assert np.array_equal(stored, written == value), name
        assert _atlas_part(own) is None  # the learning loop never takes it for the atlas's votes

    # the annotator redraws one slice of the brainstem and updates the rest
    true_stem = truth.array == TARGETS["brainstem"]
    zs = np.nonzero(true_stem.any(axis=(1, 2)))[0]
    z = int(zs[len(zs) // 2])
    label = written.copy()
    label[z][label[z] == TARGETS["brainstem"]] = 0
    label[z][true_stem[z] & (label[z] == 0)] = TARGETS["brainstem"]
    project.add_corrected(PATIENT, "brainstem", [z])
    new, result = correct_in_project(project, PATIENT, "brainstem", label, image.array, image.spacing_zyx)
    assert result.method == "refuse+shift" and result.changed > 0  # not "fill": one drawn slice fills nothing
    assert np.array_equal(new[z], label[z])  # the drawn slice as drawn
    near = [k for k in (z - 1, z + 1) if not np.array_equal(new[k], label[k])]
    assert near, "the drawn slice's change reaches its neighbours"
    others = label != TARGETS["brainstem"]
    assert np.array_equal(new[others & (new != TARGETS["brainstem"])], label[others & (new != TARGETS["brainstem"])])
