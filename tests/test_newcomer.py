"""What a new user hit (issue 42): the words of a refused point, a typo that became a target, what a re-run skipped,
the advice after an under-trained network."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.localization.extreme_points import POINT_PROMPTS, point_conflict
from medlsam_training.project.folder import Project, SimilarNameError

runner = CliRunner()


def test_a_refused_point_is_explained_by_the_point_just_clicked() -> None:
    left = np.array([60.0, 0.0, 0.0])  # LPS: x grows to the patient's left
    points = [None, left, None, None, None, None]
    why = point_conflict(points, 0, np.array([70.0, 0.0, 0.0]))  # a 'right' click left of the left point
    assert why.startswith("the right point would lie further left than the left point, which marks the target's "
                          "leftmost voxel")
    assert "most left" not in why and "not taken" not in why  # the project adds "point not taken" once
    # an 'anterior' click behind the left point set before (LPS: y grows to the back)
    why = point_conflict(points, 2, np.array([50.0, 10.0, 0.0]))
    assert why.startswith("the left point (set before) lies further anterior than this anterior point, which must "
                          "mark the target's most anterior (front) voxel")
    assert "belly" not in POINT_PROMPTS["anterior"]  # the prompts serve head-and-neck organs too


def test_a_typo_of_a_name_the_folder_offers_is_refused_once_with_that_name(openkbp: Path, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "pt_9.nii.gz").symlink_to(openkbp / "imagesTr" / "pt_9_0000.nii.gz")
    (folder / "dataset.json").symlink_to(openkbp / "dataset.json")
    project = Project.open(folder)
    assert project.offered_targets()["mandible"] == 7
    with pytest.raises(SimilarNameError, match="'mandibel' looks like 'mandible' \\(label 7\\), which the folder"):
        project.add_target("mandibel")
    assert not project.targets
    for name in ("parotid_left", "parotid_right", "spinal_cord"):  # siblings are not typos of each other
        project.add_target(name, project.offered_targets()[name])
    project.add_target("mandibel", similar_ok=True)  # asked again: the user's name is kept
    assert [t.name for t in project.targets][-1] == "mandibel"
    r = runner.invoke(app, ["correct", "pt_9", "--project", str(folder), "--target", "parotid_lft"])
    assert r.exit_code == 2
    assert "no target named 'parotid_lft' (did you mean 'parotid_left'?); the project's targets: parotid_left, " \
           "parotid_right, spinal_cord, mandibel" in r.output.replace("\n", "")


@pytest.mark.slow
def test_a_rerun_of_the_project_counts_what_it_runs_and_says_how_to_redo_skipped_volumes(cli_project: Path,
                                                                                       tmp_path: Path) -> None:
    folder = shutil.copytree(cli_project, tmp_path / "p")
    project = Project.open(folder)
    project.mark_reviewed("phantom_002")
    r = runner.invoke(app, ["segment", "--project", str(folder), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    text = r.output.replace("\n", " ")
    assert "MedLSAM: 2 volumes" in text and "1 reviewed volume(s) left as they are: phantom_002" in text
    assert "2 volumes already had a mask and were skipped: --existing keep segments them again" in text


def test_the_annotator_launcher_says_a_missing_folder_once_and_opens_no_window(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "medlsam_napari.launcher", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"medlsam-napari: error: {tmp_path / 'nope'}: does not exist"]
    help_text = subprocess.run([sys.executable, "-m", "medlsam_napari.launcher", "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    assert "``" not in help_text and "annotator docked" in help_text
