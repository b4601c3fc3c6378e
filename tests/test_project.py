"""Annotation projects: sessions resume exactly, bad sessions and moved files never lose work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medlsam_training.localization.extreme_points import ExtremePointsError
from medlsam_training.project.folder import SESSION_FILE, Project, ProjectError
from medlsam_training.volumes.io import read_volume
from medlsam_training.volumes.phantom import write_phantom_dataset


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    write_phantom_dataset(tmp_path, n=2, size=(48, 40, 12), spacing=(7.2, 7.2, 12.0))
    return tmp_path


def test_new_project_finds_volumes_and_session_round_trips(folder: Path) -> None:
    p = Project.open(folder)
    assert [v.name for v in p.volumes] == ["phantom_000", "phantom_001"]
    p.add_target("liver", 1)
    p.add_target("spleen")
    p.set_template("phantom_000")
    p.set_point("phantom_000", "liver", 0, (3, 20, 6), (48, 40, 12))
    p.set_status("phantom_001", "segmented", folder / "masks" / "phantom_001.nii.gz")

    again = Project.open(folder)
    assert again.to_json() == p.to_json()
    assert again.target("spleen").label == 2 and again.templates == ["phantom_000"]
    assert again.next_point("phantom_000", "liver") == 1
    assert again.entry("phantom_001").mask == "masks/phantom_001.nii.gz"


def test_rename_and_delete_targets_carry_points(folder: Path) -> None:
    p = Project.open(folder)
    p.add_target("liver", 5)
    p.set_point("phantom_000", "liver", 2, (10, 10, 5), (48, 40, 12))
    p.rename_target("liver", "hepar")
    assert p.points["phantom_000"]["hepar"][2] == [10.0, 10.0, 5.0] and p.active_target == "hepar"
    with pytest.raises(ProjectError, match="used"):
        p.add_target("other", 5)
    p.delete_target("hepar")
    assert p.targets == [] and "hepar" not in p.points["phantom_000"]


def test_points_outside_or_incomplete_are_refused(folder: Path) -> None:
    p = Project.open(folder)
    p.add_target("liver", 1)
    with pytest.raises(ProjectError, match="outside"):
        p.set_point("phantom_000", "liver", 0, (60, 10, 5), (48, 40, 12))
    vol = read_volume(p.volume_path("phantom_000"))
    with pytest.raises(ProjectError, match="1 of six points"):
        p.set_point("phantom_000", "liver", 0, (5, 20, 6), (48, 40, 12))
        p.extreme_points(vol, "phantom_000", "liver")
    # six points with a swapped pair: the validation names it
    for i, idx in enumerate([(40, 20, 6), (5, 20, 6), (20, 5, 6), (20, 35, 6), (20, 20, 1), (20, 20, 10)]):
        p.set_point("phantom_000", "liver", i, idx, (48, 40, 12))
    with pytest.raises(ExtremePointsError, match="swapped"):
        p.extreme_points(vol, "phantom_000", "liver")
    p.set_point("phantom_000", "liver", 0, (5, 20, 6), (48, 40, 12))
    p.set_point("phantom_000", "liver", 1, (40, 20, 6), (48, 40, 12))
    ep = p.extreme_points(vol, "phantom_000", "liver")
    assert ep.points_mm.shape == (6, 3)


def test_corrupt_session_is_kept_as_backup_and_user_told(folder: Path) -> None:
    (folder / SESSION_FILE).write_text('{"schema": "medlsam-project", "version": 1, "volumes": [')
    p = Project.open(folder)
    backups = list(folder.glob(f"{SESSION_FILE}.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text().endswith("[")
    assert any("unreadable" in m for m in p.messages)
    assert len(p.volumes) == 2


def test_moved_volume_is_reported_and_its_points_kept(folder: Path) -> None:
    p = Project.open(folder)
    p.add_target("liver", 1)
    p.set_point("phantom_001", "liver", 0, (5, 5, 5), (48, 40, 12))
    (folder / "phantom_001").rename(folder.parent / f"{folder.name}_moved_away")
    again = Project.open(folder)
    assert again.entry("phantom_001").status == "missing"
    assert any("missing" in m for m in again.messages)
    assert again.points["phantom_001"]["liver"][0] == [5.0, 5.0, 5.0]
    assert again.queries == ["phantom_000"]
    data = json.loads((folder / SESSION_FILE).read_text())
    assert data["version"] == 1


def test_review_hint_names_the_least_confident_target(folder: Path) -> None:
    """The volume list shows each segmented volume's weakest target from the last run; not found counts 0."""
    (folder / "masks").mkdir()
    (folder / "masks" / "medlsam_results.json").write_text(json.dumps({
        "phantom_001": {"status": "done", "targets": {
            "liver": {"status": "found", "agreement": 0.91, "similarity": 0.7},
            "spleen": {"status": "partly outside the scan", "agreement": None, "similarity": 0.64},
            "kidney_left": {"status": "not found", "similarity": 0.31}}},
        "phantom_000": "not a record"}))
    p = Project.open(folder)
    confidence, note = p.review_hint("phantom_001")
    assert confidence == 0.0 and note.startswith("least sure: kidney_left 0.00 (not found; not a Dice to the truth)")
    assert "spleen partly outside the scan" in note and "liver" not in note
    assert p.review_hint("phantom_000") == (None, "") and p.review_hint("absent") == (None, "")
    record = json.loads((folder / "masks" / "medlsam_results.json").read_text())
    del record["phantom_001"]["targets"]["kidney_left"]
    (folder / "masks" / "medlsam_results.json").write_text(json.dumps(record))
    # the number is what it is: how well the templates match (or agree), never a Dice to the truth
    assert p.review_hint("phantom_001")[1].startswith(
        "least sure: spleen 0.64 (its templates match the scan; not a Dice to the truth)")
    (folder / "masks" / "medlsam_results.json").write_text("{broken")
    assert p.review_hint("phantom_001") == (None, "")


def test_a_project_of_symlinked_volumes_offers_names_stores_links_and_moves(openkbp: Path, tmp_path: Path) -> None:
    """Volumes linked into the folder (not copied): the folder's dataset.json names are offered, paths are kept
    relative to the folder as the user sees it (never the links' targets), and the folder can move."""
    from medlsam_training.localization.extreme_points import extreme_points_from_mask
    from medlsam_training.volumes.io import read_label, read_volume

    folder = tmp_path / "project"
    folder.mkdir()
    for pt in ("pt_1", "pt_2"):
        (folder / f"{pt}.nii.gz").symlink_to(openkbp / "imagesTr" / f"{pt}_0000.nii.gz")
    (folder / "dataset.json").symlink_to(openkbp / "dataset.json")
    p = Project.open(folder)
    offered = p.offered_targets()
    assert offered.get("brainstem") == 1 and offered.get("mandible") == 7, offered
    assert sorted(v.path for v in p.volumes) == ["pt_1.nii.gz", "pt_2.nii.gz"]
    p.add_target("mandible", 7)
    p.set_template("pt_1")
    image = read_volume(p.volume_path("pt_1"))
    ep = extreme_points_from_mask("mandible", 7, image, read_label(openkbp / "labelsTr" / "pt_1.nii.gz", image))
    p.points.setdefault("pt_1", {})["mandible"] = [[float(v) for v in i] for i in ep.indices()]
    exported = p.export_template(image, "pt_1", "mandible")
    assert json.loads(exported.read_text())["template"]["path"] == "../pt_1.nii.gz"
    moved = folder.rename(tmp_path / "moved")
    again = Project.open(moved)
    assert not again.messages and all(v.status != "missing" for v in again.volumes), again.messages
    assert again.ready_templates() == {"pt_1": ["mandible"]}
