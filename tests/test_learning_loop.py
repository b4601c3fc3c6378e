"""The learning loop on a project of real head-and-neck CT: reviewed work trains the slice network, which
pre-segments the rest by the label policy, never over a locked target, geometry kept."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.engine.checkpoint import load_checkpoint
from medlsam_training.errors import DatasetError
from medlsam_training.learning.project_loop import (
    finetune_project,
    pending_volumes,
    presegment_project,
    training_volumes,
)
from medlsam_training.learning.train import KIND_SEG, LearnConfig, fit_summary
from medlsam_training.project.folder import Project
from medlsam_training.volumes.io import read_label, read_volume

TARGETS = {"brainstem": 1, "parotid_right": 3, "parotid_left": 4, "mandible": 7}  # the hn_project fixture's
REVIEWED, PARTLY, PENDING = ("pt_1", "pt_2"), "pt_4", "pt_9"

runner = CliRunner()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reviewed_volumes_and_locked_targets_are_the_training_set(hn_project) -> None:
    project = Project.open(hn_project.folder)
    used = {tv.name: tv.targets for tv in training_volumes(project)}
    assert used == {"pt_1": list(TARGETS), "pt_2": list(TARGETS), PARTLY: ["mandible"]}
    assert pending_volumes(project) == [PARTLY, PENDING]
    empty = Project.open(hn_project.folder)
    for name in REVIEWED:
        empty.set_locked(name, "brainstem", False)  # un-reviews it: the other three stay locked
    assert "brainstem" not in {t for tv in training_volumes(empty) for t in tv.targets}


@pytest.mark.slow
def test_fine_tune_and_presegment_keep_reviewed_work_and_locks(hn_project) -> None:
    project = Project.open(hn_project.folder)
    before = {n: _sha(project.mask_path(n)) for n in (*REVIEWED, PARTLY)}
    partly_before = read_label(project.mask_path(PARTLY)).array
    result = finetune_project(project, cfg=LearnConfig(steps=300), init=None)
    assert result.scores["mandible"] > 0.5 and set(result.scores) == set(TARGETS)  # the fit is measured
    state = load_checkpoint(result.path, KIND_SEG)
    assert state["meta"]["targets"] == list(TARGETS) and state["meta"]["values"] == list(TARGETS.values())
    assert state["meta"]["volumes"] == [*REVIEWED, PARTLY]

    report = presegment_project(project, result.path, policy="empty")
    assert report.written == [PARTLY, PENDING]
    for name in REVIEWED:  # reviewed masks: not a byte changed
        assert _sha(project.mask_path(name)) == before[name]
    after = read_label(project.mask_path(PARTLY)).array
    assert np.array_equal(after == 7, partly_before == 7)  # the locked mandible: untouched
    assert np.array_equal(after[partly_before > 0], partly_before[partly_before > 0])  # "empty": painted kept
    assert ((after > 0) & (partly_before == 0)).any()  # and the network filled empty voxels
    [copy] = (project.mask_path(PARTLY).parent / ".previous").glob(f"{PARTLY}-*.nii.gz")
    assert np.array_equal(read_label(copy).array, partly_before)

    image = read_volume(project.volume_path(PENDING))
    written = read_label(project.mask_path(PENDING))
    assert written.spacing == image.spacing and written.origin == image.origin
    assert written.direction == image.direction
    truth = hn_project.truth(PENDING, image)
    pred = written.array
    dice = 2 * ((pred == 7) & (truth == 7)).sum() / ((pred == 7).sum() + (truth == 7).sum())
    assert dice > 0.5, dice  # bone after 300 steps on three volumes: learned, not noise
    reopened = Project.open(hn_project.folder)
    assert reopened.entry(PENDING).status == "segmented" and reopened.entry("pt_1").status == "reviewed"


def test_a_target_the_network_lost_is_said_not_hidden() -> None:
    line = fit_summary({"brainstem": 0.0, "mandible": 0.84})
    assert "brainstem 0.00" in line and "NOT LEARNED (never written): brainstem (" in line
    assert "mandible" not in line.split("NOT")[1] and "more steps" in line and "fewer steps" not in line
    assert "NOT LEARNED" not in fit_summary({"brainstem": 0.7})


def test_nothing_to_learn_from_is_one_clear_error(tmp_path: Path, openkbp: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "pt_9.nii.gz").symlink_to(openkbp / "imagesTr" / "pt_9_0000.nii.gz")
    project = Project.open(folder)
    project.add_target("mandible", 7)
    with pytest.raises(DatasetError, match="no reviewed volume"):
        finetune_project(project, cfg=LearnConfig(steps=1))
    result = runner.invoke(app, ["finetune", "--project", str(folder), "--steps", "1"])
    assert result.exit_code == 2 and "no reviewed volume" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["finetune", "--project", str(folder), "--policy", "overwritee"])
    assert result.exit_code == 2 and "overwrite" in result.output
    result = runner.invoke(app, ["finetune", "--project", str(folder), "--targets", "liver"])
    assert result.exit_code == 2 and "liver" in result.output


def test_cli_trains_from_reviewed_and_presegments_pending(hn_project) -> None:
    result = runner.invoke(app, ["finetune", "--project", str(hn_project.folder), "--steps", "20", "--policy", "keep"])
    assert result.exit_code == 0, result.output
    assert "3 volumes (pt_1, pt_2, pt_4)" in result.output
    assert "Dice on its training volumes: brainstem" in result.output
    # 20 steps learn nothing: every target is said by name and nothing is written
    assert "NOT LEARNED (never written): brainstem, parotid_right, parotid_left, mandible" in \
        result.output.replace("\n", " ")
    assert "nothing pre-segmented" in result.output and "pre-segmented (" not in result.output
    project = Project.open(hn_project.folder)
    assert project.entry(PENDING).status == "pending" and not project.mask_path(PENDING).is_file()
    assert load_checkpoint(hn_project.folder / "models" / "slicenet.pt", KIND_SEG)["step"] == 20
    # Volume Fusion on slices of unlabelled CT, then a second run from it: a new model, the finished one kept as a
    # copy (not resumed), the pretrained body loaded under the new head
    unlabelled = hn_project.folder.parent / "unlabelled"
    unlabelled.mkdir()
    (unlabelled / "pt_12.nii.gz").symlink_to(hn_project.openkbp / "imagesTr" / "pt_12_0000.nii.gz")
    vf = hn_project.folder.parent / "vf.pt"
    result = runner.invoke(app, ["pretrain-vf", "--network", "slicenet", "--data", str(unlabelled), "--out", str(vf),
                                 "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(vf, "slicenet-vf")["step"] == 3
    result = runner.invoke(app, ["finetune", "--project", str(hn_project.folder), "--steps", "10", "--no-presegment",
                                 "--init", str(vf)])
    assert result.exit_code == 0, result.output
    assert f"from {vf}" in result.output.replace("\n", "")
    assert load_checkpoint(hn_project.folder / "models" / "slicenet.pt", KIND_SEG)["step"] == 10
    assert len(list((hn_project.folder / "models" / ".previous").glob("slicenet-*.pt"))) == 1
