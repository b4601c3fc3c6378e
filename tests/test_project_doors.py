"""One project, two doors: what the CLI writes opens as the annotator's project, and what the annotator saves
runs with the CLI; reviewed volumes and locked targets survive both."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medlsam_training.cli import app, expand_list_options
from medlsam_training.localization.extreme_points import ExtremePoints, extreme_points_from_mask
from medlsam_training.metrics import binary_metrics
from medlsam_training.project.folder import SESSION_FILE, Project
from medlsam_training.project.run import build_templates
from medlsam_training.volumes.io import read_image_label, read_label, read_volume, write_mask
from medlsam_training.volumes.phantom import write_phantom_dataset

runner = CliRunner()


@pytest.mark.slow
def test_cli_made_project_opens_as_the_same_project(cli_project: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(cli_project, tmp_path / "p")
    assert not (folder / SESSION_FILE).exists()  # nothing but CLI outputs
    p = Project.open(folder)
    assert p.messages == []
    assert [v.name for v in p.volumes] == ["phantom_000", "phantom_001", "phantom_002"]
    assert p.templates == ["phantom_000"] and p.queries == ["phantom_001", "phantom_002"]
    assert [(t.name, t.label) for t in p.targets] == [("liver", 1)]
    ep = ExtremePoints.load(folder / "templates" / "liver.json")
    np.testing.assert_allclose(p.points["phantom_000"]["liver"], ep.indices(), atol=1e-6)
    for name in ("phantom_001", "phantom_002"):
        assert p.entry(name).status == "segmented" and p.entry(name).mask == f"masks/{name}.nii.gz"
    assert p.template_file("phantom_000", "liver") == folder / "templates" / "liver.json"

    before = (folder / "templates" / "liver.json").read_bytes()
    [template] = build_templates(p)  # the annotator's run uses the CLI's file as it is (its slabs kept)
    assert template.targets[0].target == "liver"
    assert (folder / "templates" / "liver.json").read_bytes() == before
    assert sorted(f.name for f in (folder / "templates").iterdir()) == ["liver.json"]  # no second copy
    assert Project.open(folder).to_json() == p.to_json()  # and it resumes as it is


def _click_template(p: Project, image, label, targets: dict[str, int]) -> None:
    for target, value in targets.items():
        p.add_target(target, value)
        for i, idx in enumerate(extreme_points_from_mask(target, value, image, label).indices()):
            p.set_point("phantom_000", target, i, idx, image.size)
        p.export_template(image, "phantom_000", target)


@pytest.mark.slow
def test_annotator_made_project_runs_with_the_cli_and_keeps_locks(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    write_phantom_dataset(folder, n=2, size=(192, 160, 20), spacing=(1.8, 1.8, 6.0))
    p = Project.open(folder)
    p.set_template("phantom_000")
    image, label = read_image_label(folder / "phantom_000" / "image.nii.gz", folder / "phantom_000" / "label.nii.gz")
    _click_template(p, image, label, {"liver": 1, "spleen": 2})
    files = sorted((folder / "templates").glob("*.json"))
    assert [f.name for f in files] == ["phantom_000_liver.json", "phantom_000_spleen.json"]
    assert json.loads(files[0].read_text())["template"]["path"] == "../phantom_000/image.nii.gz"  # movable

    # the plain command over the annotator's files
    cache = ["--cache", str(tmp_path / "cache"), "--device", "cpu", "--localizer", "registration"]
    r = runner.invoke(app, expand_list_options(["segment", "-t", *map(str, files), "-q", str(folder),
                                                "--out", str(folder / "masks"), *cache]))  # as the shell runs it
    assert r.exit_code == 0, r.output
    query = read_volume(folder / "phantom_001" / "image.nii.gz")
    truth = read_label(folder / "phantom_001" / "label.nii.gz").array
    mask = read_label(folder / "masks" / "phantom_001.nii.gz", query).array
    for value in (1, 2):  # both targets in the one label map
        assert binary_metrics(mask == value, truth == value, query.spacing_zyx)["dice"] > 0.8
    assert json.loads((folder / "masks" / "labels.json").read_text()) == {"1": "liver", "2": "spleen"}

    # the annotator reviews the spleen (a correction: two slices erased) and locks it
    p = Project.open(folder)
    assert p.entry("phantom_001").status == "segmented"
    corrected = mask.copy()
    zs = np.nonzero((mask == 2).any(axis=(1, 2)))[0]
    corrected[zs[0]][corrected[zs[0]] == 2] = 0
    corrected[zs[1]][corrected[zs[1]] == 2] = 0
    write_mask(corrected, query, p.mask_path("phantom_001"))
    p.set_locked("phantom_001", "spleen")

    # the project door, told to overwrite: the liver is redone, the locked spleen is exactly the corrected one
    r = runner.invoke(app, ["segment", "--project", str(folder), "--existing", "overwrite", *cache])
    assert r.exit_code == 0, r.output
    redone = read_label(folder / "masks" / "phantom_001.nii.gz", query).array
    np.testing.assert_array_equal(redone == 2, corrected == 2)
    assert binary_metrics(redone == 1, truth == 1, query.spacing_zyx)["dice"] > 0.8
    assert list((folder / "masks" / ".previous").glob("phantom_001-*.nii.gz"))  # the replaced file was copied
    assert Project.open(folder).entry("phantom_001").locked == ["spleen"]

    # a reviewed volume is never touched again, whatever the policy
    p = Project.open(folder)
    p.mark_reviewed("phantom_001")
    stamp = (folder / "masks" / "phantom_001.nii.gz").stat().st_mtime_ns
    r = runner.invoke(app, ["segment", "--project", str(folder), "--existing", "overwrite", *cache])
    assert r.exit_code == 0, r.output
    assert (folder / "masks" / "phantom_001.nii.gz").stat().st_mtime_ns == stamp
    assert "1 reviewed volume(s) left as they are: phantom_001" in r.output
    assert Project.open(folder).entry("phantom_001").status == "reviewed"


@pytest.fixture()
def small_project(tmp_path: Path) -> Path:
    folder = tmp_path / "p"
    write_phantom_dataset(folder, n=2, size=(64, 64, 12), spacing=(4.0, 4.0, 8.0))
    return folder


def test_template_files_follow_the_clicked_points(small_project: Path) -> None:
    p = Project.open(small_project)
    p.set_template("phantom_000")
    image, label = read_image_label(small_project / "phantom_000" / "image.nii.gz",
                                    small_project / "phantom_000" / "label.nii.gz")
    _click_template(p, image, label, {"liver": 1})
    path = p.template_file("phantom_000", "liver")
    assert path.is_file()
    p.clear_point("phantom_000", "liver", 3)
    assert not path.exists()  # incomplete points must not run from a stale file
    idx = extreme_points_from_mask("liver", 1, image, label).indices()
    p.set_point("phantom_000", "liver", 3, idx[3], image.size)
    p.export_template(image, "phantom_000", "liver")
    p.rename_target("liver", "hepar")
    assert not path.exists() and not p.point_files["phantom_000"]
    p.export_template(image, "phantom_000", "hepar")
    assert p.template_file("phantom_000", "hepar").name == "phantom_000_hepar.json"
    p.delete_target("hepar")
    assert list((small_project / "templates").glob("*.json")) == []
    assert json.loads((small_project / "masks" / "labels.json").read_text()) == {}  # the name is gone everywhere
    assert Project.open(small_project).targets == []


def test_a_template_file_newer_than_the_session_wins(small_project: Path, monkeypatch) -> None:
    p = Project.open(small_project)
    p.set_template("phantom_000")
    image, label = read_image_label(small_project / "phantom_000" / "image.nii.gz",
                                    small_project / "phantom_000" / "label.nii.gz")
    _click_template(p, image, label, {"liver": 1})
    # re-derived on the command line, from the project's folder, with a relative path
    monkeypatch.chdir(small_project.parent)
    r = runner.invoke(app, ["extreme-points", "p/phantom_000/image.nii.gz", "p/phantom_000/label.nii.gz",
                            "--target", "liver", "--value", "2", "--out", "p/templates/phantom_000_liver.json"])
    assert r.exit_code == 0, r.output
    stamp = (small_project / SESSION_FILE).stat().st_mtime
    os.utime(small_project / "templates" / "phantom_000_liver.json", (stamp + 5, stamp + 5))
    again = Project.open(small_project)
    spleen = extreme_points_from_mask("liver", 2, image, label).indices()
    np.testing.assert_allclose(again.points["phantom_000"]["liver"], spleen, atol=1e-6)
    assert any("newer than the session" in m for m in again.messages)
    assert any("label 2 there and 1 in this project" in m for m in again.messages)
    # an older file does not override what was clicked since
    os.utime(small_project / "templates" / "phantom_000_liver.json", (stamp - 100, stamp - 100))
    assert Project.open(small_project).points == again.points


def test_files_a_project_cannot_use_are_messages(small_project: Path) -> None:
    (small_project / "templates").mkdir()
    (small_project / "templates" / "junk.json").write_text("{not json")
    image, label = read_image_label(small_project / "phantom_000" / "image.nii.gz",
                                    small_project / "phantom_000" / "label.nii.gz")
    ep = extreme_points_from_mask("liver", 1, image, label)
    ep.template_path = "/elsewhere/other.nii.gz"
    ep.save(small_project / "templates" / "other.json")
    (small_project / "masks").mkdir()
    (small_project / "masks" / "medlsam_results.json").write_text("[")
    p = Project.open(small_project)
    text = "\n".join(p.messages)
    assert "junk.json: not a readable extreme-points JSON file" in text
    assert "other.json: its template /elsewhere/other.nii.gz is not a volume of this project" in text
    assert "unreadable run summary" in text
    assert p.templates == [] and p.points == {}


def test_segment_options_for_projects_are_checked_before_any_model(small_project: Path) -> None:
    r = runner.invoke(app, ["segment", "--project", str(small_project), "-q", str(small_project)])
    assert r.exit_code == 2 and "--project takes its templates" in r.output
    r = runner.invoke(app, ["segment", "--out", str(small_project / "m")])
    assert r.exit_code == 2 and "or --project FOLDER" in r.output
    r = runner.invoke(app, ["segment", "--project", str(small_project), "--existing", "replace"])
    assert r.exit_code == 2 and "unknown policy 'replace'" in r.output
    r = runner.invoke(app, ["segment", "--project", str(small_project), "--localizer", "registration"])
    assert r.exit_code == 2 and "no target" in r.output


def test_statuses_follow_the_last_run(cli_project: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(cli_project, tmp_path / "p")
    summary_path = folder / "masks" / "medlsam_results.json"
    summary = json.loads(summary_path.read_text())
    summary["phantom_002"]["status"] = "failed"  # a later run failed on it; its earlier mask is still there
    summary_path.write_text(json.dumps(summary))
    p = Project.open(folder)
    assert p.entry("phantom_001").status == "segmented" and p.entry("phantom_002").status == "failed"
    summary["phantom_002"]["status"] = "done"  # and a run after that succeeded
    summary_path.write_text(json.dumps(summary))
    assert Project.open(folder).entry("phantom_002").status == "segmented"


def test_names_beside_the_masks_never_rename_the_projects_targets(small_project: Path) -> None:
    p = Project.open(small_project)
    p.add_target("hepar", 1)
    (small_project / "masks" / "labels.json").write_text(json.dumps({"1": "liver", "2": "spleen"}))
    (small_project / "masks" / "medlsam_results.json").write_text(json.dumps(["not", "a", "summary"]))
    again = Project.open(small_project)
    assert [(t.name, t.label) for t in again.targets] == [("hepar", 1), ("spleen", 2)]
    assert any("label 1 is named liver there and hepar in this project" in m for m in again.messages)
    assert any("not a run summary" in m for m in again.messages)


def test_segment_project_says_which_targets_have_no_template(cli_project: Path, tmp_path: Path) -> None:
    """A target that no template holds is said, not skipped without a word ('done: 4 segmented')."""
    import shutil

    from typer.testing import CliRunner

    from medlsam_training.cli import app
    from medlsam_training.project.folder import Project

    folder = tmp_path / "project"
    shutil.copytree(cli_project, folder)
    Project.open(folder).add_target("spleen", 2)
    r = CliRunner().invoke(app, ["segment", "--project", str(folder), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "no template for spleen: not segmented" in r.output, r.output
