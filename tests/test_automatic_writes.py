"""Fault tests of the automatic writes (issue 41): partial projects, corrected slices and locks during every kind of
automatic write, a bad value in each field of the session file, a corrupt run summary, a renamed target, a failing
volume on the cluster, the update repeated in one process.  Each asserts what is on disk afterwards: which targets
and voxels were written, and the statuses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.correction.votes import load_votes, votes_path
from medlsam_training.errors import MedLSAMError
from medlsam_training.learning.project_loop import finetune_project, presegment_project
from medlsam_training.learning.train import LearnConfig
from medlsam_training.project.folder import SESSION_FILE, Project
from medlsam_training.project.guard import ReviewedVolumeError, WriteGuard, guard_change
from medlsam_training.volumes.io import read_label, read_volume, write_mask

runner = CliRunner()
#: OpenKBP's seven structures (its dataset.json): a new user's project offers all of them
OPENKBP = {"brainstem": 1, "spinal_cord": 2, "parotid_right": 3, "parotid_left": 4, "esophagus": 5, "larynx": 6,
           "mandible": 7}
DRAWN = ("parotid_left", "mandible")  # the only targets the reviewed volumes hold


def _link(folder: Path, openkbp: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.nii.gz").symlink_to(openkbp / "imagesTr" / f"{name}_0000.nii.gz")


def _truth(openkbp: Path, name: str, image, targets) -> np.ndarray:
    lab = read_label(openkbp / "labelsTr" / f"{name}.nii.gz", image).array
    values = [OPENKBP[t] for t in targets]
    return np.where(np.isin(lab, values), lab, 0).astype(np.uint8)


def partial_project(openkbp: Path, folder: Path, reviewed=("pt_1", "pt_2"), pending=("pt_9",)) -> Project:
    """A new user's project: the folder's seven targets, reviewed volumes holding the mandible and the left parotid
    only (nobody drew the rest yet), pending volumes without a mask."""
    _link(folder, openkbp, (*reviewed, *pending))
    project = Project.open(folder)
    for t, v in OPENKBP.items():
        project.add_target(t, v)
    for name in reviewed:
        image = read_volume(project.volume_path(name))
        project.set_status(name, "segmented", write_mask(_truth(openkbp, name, image, DRAWN), image,
                                                         project.mask_path(name)))
        project.mark_reviewed(name)
    return project


# --- the guarded writer itself --------------------------------------------------------------------------------------
def test_the_guarded_writer_keeps_locks_corrected_slices_and_unknown_targets(openkbp: Path) -> None:
    image = read_volume(openkbp / "imagesTr" / "pt_1_0000.nii.gz")
    before = _truth(openkbp, "pt_1", image, OPENKBP)
    zs = np.nonzero((before == 7).any(axis=(1, 2)))[0]
    corrected = int(zs[len(zs) // 2])
    after = before.copy()
    after[after == 7] = 0  # the source re-segments the mandible ...
    after[zs[0]:zs[-1] + 1, 100:140, 100:140] = 7
    after[before == 1] = 2  # ... and tries to relabel the locked brainstem as spinal cord
    after[5, :20, :20] = 5  # and to write an esophagus it was never given
    guard = WriteGuard.of("pt_1", [7], locked=[1], corrected=[corrected])
    out, report = guard_change(before, after, guard)
    assert np.array_equal(out == 1, before == 1) and not (out == 2)[before == 1].any()  # the lock holds
    assert np.array_equal(out[corrected], before[corrected])  # the corrected slice as it was
    assert not (out[5, :20, :20] == 5).any() and report.unknown > 0 and 5 in report.values
    rest = np.ones(len(out), bool)
    rest[corrected] = False
    assert np.array_equal(out[rest] == 7, after[rest] == 7)  # the target it may write: written as computed
    for other in (3, 4, 6):  # targets it does not know: not a voxel changed
        assert np.array_equal(out == other, before == other)
    with pytest.raises(ReviewedVolumeError, match="pt_1 is reviewed"):
        guard_change(before, after, WriteGuard.of("pt_1", [7], reviewed=True))


# --- item 1: the learning loop writes only what reviewed volumes hold, and what it learned ---------------------------
@pytest.mark.slow
def test_a_partial_project_trains_and_writes_only_the_targets_its_reviewed_volumes_hold(openkbp: Path,
                                                                                      tmp_path: Path) -> None:
    project = partial_project(openkbp, tmp_path / "p")
    said: list[str] = []
    result = finetune_project(project, cfg=LearnConfig(steps=300), device="cpu", say=said.append)
    assert set(result.scores) == set(DRAWN) and result.volumes == ["pt_1", "pt_2"]
    untrained = [t for t in OPENKBP if t not in DRAWN]
    assert sorted(result.untrained) == sorted(untrained)
    assert all(any(line.startswith(f"{t}: not trained") for line in said) for t in untrained)
    from medlsam_training.engine.checkpoint import load_checkpoint

    meta = load_checkpoint(result.path)["meta"]
    assert meta["targets"] == list(DRAWN) and "mandible" in meta["learned"]
    report = presegment_project(project, result.path, policy="empty", device="cpu")
    assert report.written == ["pt_9"]
    written = read_label(project.mask_path("pt_9")).array
    learned = {OPENKBP[t] for t in meta["learned"]}
    assert set(np.unique(written)) - {0} <= learned  # no spinal cord in the air, no brainstem over the head
    assert (written == 7).sum() > 1000  # and the learned mandible is there


@pytest.mark.slow
def test_presegmenting_a_target_the_atlas_segmented_combines_with_its_votes(hn_segmented) -> None:
    """pt_9 was segmented by the run (the atlas's votes stored); the network's pre-segmentation of its mandible is
    the run's combination of those votes and its probability (voxel for voxel), never the union of the two."""
    from medlsam_training.learning.project_loop import project_predictor
    from medlsam_training.project.pipeline import combination_share
    from medlsam_training.segmentation.propagate import clean_mask

    project = Project.open(hn_segmented.folder)
    name = hn_segmented.pending
    atlas = load_votes(votes_path(project.folder / project.output_dir, name))["mandible"]
    assert not atlas.network
    before = read_label(project.mask_path(name)).array
    result = finetune_project(project, cfg=LearnConfig(steps=300), device="cpu")
    presegment_project(project, result.path, policy="empty", device="cpu")
    after = read_label(project.mask_path(name)).array
    image = read_volume(project.volume_path(name))
    probability = project_predictor(project, result.path, "cpu").target_probabilities(image)["mandible"]
    from medlsam_training.correction.votes import with_probability

    combined = with_probability(atlas, probability, *combination_share(True))
    expected = np.zeros(image.array.shape, bool)
    expected[combined.box.slices] = combined.vote() >= combined.threshold
    expected = clean_mask(expected, True, fill_holes=False)
    # "keep": the mandible's old voxels replaced by the combination, which fills only voxels no other target holds
    # when it is written (the last of the pass: another learned target, written before it, may hold some or have
    # left some; what others hold after the pass is what they held then)
    others = (after != 7) & (after != 0)
    assert np.array_equal(after == 7, expected & ~others)
    assert (expected & ~(after == 7)).sum() <= (others & expected).sum()
    own = project_predictor(project, result.path, "cpu").predict(image) == 7
    assert (after == 7).sum() < ((before == 7) | own).sum()  # not the union
    stored = load_votes(votes_path(project.folder / project.output_dir, name))["mandible"]
    assert stored.network  # a correction re-thresholds what the annotator now sees


# --- item 2: a corrected slice is never refilled by the pre-segmentation ---------------------------------------------
@pytest.mark.slow
def test_presegmentation_keeps_a_corrected_slice_and_a_locked_target(hn_trained) -> None:
    project = Project.open(hn_trained.folder)
    name = hn_trained.pending
    image = read_volume(project.volume_path(name))
    truth = hn_trained.truth(name, image)
    zs = np.nonzero((truth == 7).any(axis=(1, 2)))[0]
    z = int(zs[len(zs) // 2])
    start = truth.copy()
    start[z][start[z] == 7] = 0  # the annotator erased the mandible on slice z ...
    project.set_status(name, "segmented", write_mask(start, image, project.mask_path(name)))
    project.add_corrected(name, "mandible", [z])  # ... and that slice is recorded as corrected
    project.set_locked(name, "brainstem")
    report = presegment_project(project, policy="keep", device="cpu")
    assert name in report.written
    after = read_label(project.mask_path(name)).array
    assert np.array_equal(after[z], start[z])  # not a voxel of the corrected slice changed
    assert np.array_equal(after == 1, start == 1)  # the locked brainstem as it was
    others = [k for k in zs if k != z]
    assert (after[others] != start[others]).any()  # the network did write the other slices (the path taken)


# --- item 3: one bad value in the session file ------------------------------------------------------------------------
BAD_VALUES = [("localizer", "atlass"), ("mode", "atlass"), ("existing", "keeep"), ("segmenter", 5),
              ("device", "gpu9"), ("output_dir", "/etc"), ("scheduler", 7), ("active_target", ["x"]),
              ("points", "x"), ("point_files", 4), ("targets", "x"), ("volumes[0].status", "done"),
              ("volumes[1].locked", 5), ("volumes[1].corrected", "x"), ("volumes[0].template", "yes"),
              ("targets[0].label", "seven")]


@pytest.fixture()
def reviewed_session(openkbp: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "s"
    _link(folder, openkbp, ("pt_1", "pt_2", "pt_9"))
    project = Project.open(folder)
    project.add_target("mandible", 7)
    for name in ("pt_1", "pt_2"):
        image = read_volume(project.volume_path(name))
        project.set_status(name, "segmented", write_mask(_truth(openkbp, name, image, ["mandible"]), image,
                                                         project.mask_path(name)))
    project.mark_reviewed("pt_1")
    project.set_locked("pt_2", "mandible")
    project.add_corrected("pt_2", "mandible", [40])
    return folder


@pytest.mark.parametrize("field,value", BAD_VALUES, ids=[f for f, _ in BAD_VALUES])
def test_one_bad_value_in_the_session_file_keeps_the_rest_of_the_session(reviewed_session: Path, field: str,
                                                                         value) -> None:
    path = reviewed_session / SESSION_FILE
    data = json.loads(path.read_text())
    where, key = data, field
    if "[" in field:  # volumes[0].status
        head, key = field.split(".")
        lst, i = head[:-3], int(head[-2])
        where = data[lst][i]
    where[key] = value
    path.write_text(json.dumps(data))
    project = Project.open(reviewed_session)
    [line] = [m for m in project.messages if SESSION_FILE in m]
    assert str(path) in line and str(value)[:20] in line and "the rest of the session is kept" in line
    for reopened in (project, Project.open(reviewed_session)):  # and after a save
        assert reopened.entry("pt_1").status == "reviewed"
        assert reopened.locked_targets("pt_2") == ["mandible"] or field == "volumes[1].locked"
        assert reopened.corrected_slices("pt_2", "mandible") == [40] or field == "volumes[1].corrected"
        assert [(t.name, t.label) for t in reopened.targets] == [("mandible", 7)]
        assert not list(reviewed_session.glob(f"{SESSION_FILE}.corrupt-*"))


def test_a_session_file_that_cannot_be_parsed_is_kept_and_statuses_come_from_disk(reviewed_session: Path) -> None:
    (reviewed_session / SESSION_FILE).write_text('{"schema": "medlsam-project", "volu')
    project = Project.open(reviewed_session)
    assert any("unreadable" in m and ".corrupt-" in m for m in project.messages)
    assert [project.entry(n).status for n in ("pt_1", "pt_2", "pt_9")] == ["segmented", "segmented", "pending"]
    assert [(t.name, t.label) for t in project.targets] == [("mandible", 7)]  # from masks/labels.json


# --- item 5: a renamed target keeps its votes; a deleted one leaves none behind ------------------------------------
@pytest.mark.slow
def test_a_renamed_target_keeps_its_atlas_votes_and_a_deleted_one_leaves_none(hn_segmented) -> None:
    from medlsam_training.correction.in_project import correct_in_project

    project = Project.open(hn_segmented.folder)
    name = hn_segmented.pending
    out = project.folder / project.output_dir
    assert {"mandible", "parotid_left"} <= set(load_votes(votes_path(out, name)))
    project.rename_target("mandible", "jaw")
    votes = load_votes(votes_path(out, name))
    assert "jaw" in votes and "mandible" not in votes
    summary = json.loads((out / "medlsam_results.json").read_text())
    assert "jaw" in summary[name]["targets"] and "mandible" not in summary[name]["targets"]
    image = read_volume(project.volume_path(name))
    label_map = read_label(project.mask_path(name), image).array
    zs = np.nonzero((label_map == 7).any(axis=(1, 2)))[0]
    project.add_corrected(name, "jaw", [int(zs[len(zs) // 2])])
    _, result = correct_in_project(project, name, "jaw", label_map, image.array, image.spacing_zyx)
    assert result.method != "fill"  # the update re-fused the renamed target's votes
    project.delete_target("parotid_left")
    project.add_target("parotid_left", 4)
    assert "parotid_left" not in load_votes(votes_path(out, name))  # the new target inherits nothing


# --- item 6: a corrupt run summary never stops a run --------------------------------------------------------------
def test_a_corrupt_run_summary_is_kept_aside_and_the_run_goes_on(cli_project: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(cli_project, tmp_path / "p")
    summary = folder / "masks" / "medlsam_results.json"
    summary.write_text('{"phantom_001": {"status": "do')
    (folder / "masks" / "phantom_002.nii.gz").unlink()
    r = runner.invoke(app, ["segment", "-t", str(folder / "templates" / "liver.json"), "-q", str(folder),
                            "--out", str(folder / "masks"), "--localizer", "registration", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (folder / "masks" / "phantom_002.nii.gz").is_file()
    assert json.loads(summary.read_text())["phantom_002"]["status"] == "done"
    [kept] = (folder / "masks" / ".previous").glob("medlsam_results-*.json")
    assert kept.read_text() == '{"phantom_001": {"status": "do'


# --- item 7: a failing volume on the cluster stops the rest, and every written mask is recorded ----------------------
@pytest.mark.slow
def test_a_volume_failing_on_the_cluster_stops_the_rest_and_statuses_match_the_disk(hn_trained) -> None:
    from medlsam_training.cluster import open_engine

    project = Project.open(hn_trained.folder)
    bad = project.volume_path(hn_trained.partly)
    data = bad.read_bytes()
    bad.unlink()
    bad.write_bytes(data[:4000])  # a truncated file: reading it fails on the worker
    pending = hn_trained.pending
    with open_engine(1, None, "atlas", "litemedsam", "cpu") as engine:
        with pytest.raises(MedLSAMError, match=hn_trained.partly) as caught:
            presegment_project(project, names=[hn_trained.partly, pending], policy="keep", device="cpu",
                               engine=engine)
    assert "every try failed" not in str(caught.value)  # an error is not retried
    session = {v["name"]: v for v in json.loads((hn_trained.folder / SESSION_FILE).read_text())["volumes"]}
    written = project.mask_path(pending).is_file()
    assert (session[pending]["status"] == "segmented") == written  # a mask on disk is a status recorded
    assert not list(project.mask_path(pending).parent.glob(".*.tmp*"))


# --- item 8: the update repeated in one process --------------------------------------------------------------------
def test_the_update_repeated_fifty_times_in_one_process_exits_cleanly(openkbp: Path) -> None:
    code = f"""
import numpy as np
from medlsam_training.correction.update import fill_between, update_target
from medlsam_training.volumes.io import read_label
lab = read_label({str(openkbp / "labelsTr" / "pt_1.nii.gz")!r}).array
mask = lab == 7
zs = np.nonzero(mask.any(axis=(1, 2)))[0]
picks = [int(zs[1]), int(zs[len(zs) // 2]), int(zs[-2])]
for _ in range(50):
    out = fill_between(mask, picks)
    res = update_target(mask, picks, "fill", target="mandible")
assert np.array_equal(out[picks], mask[picks]) and res.mask.any()
print("done", int(out.sum()))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "done" in run.stdout, run.stderr[-2000:]


# --- item 9: a slice nobody changed is not recorded as corrected ---------------------------------------------------
def test_correct_records_only_slices_that_differ_from_the_automatic_write(cli_project: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(cli_project, tmp_path / "p")
    project = Project.open(folder)
    name = "phantom_001"
    image = read_volume(project.volume_path(name))
    label_map = read_label(project.mask_path(name), image).array
    zs = np.nonzero((label_map == 1).any(axis=(1, 2)))[0]
    fixed, untouched = int(zs[len(zs) // 2]), int(zs[1])
    painted = label_map.copy()
    painted[fixed][painted[fixed] == 1] = 0  # the annotator erased the liver on one slice; the other is as written
    write_mask(painted, image, project.mask_path(name))
    r = runner.invoke(app, ["correct", name, "--project", str(folder), "--target", "liver", "--corrected",
                            f"{untouched},{fixed}", "--method", "fill"])
    assert r.exit_code == 0, r.output
    assert f"slice(s) {untouched} are as the last automatic write left them" in r.output.replace("\n", " ")
    assert Project.open(folder).corrected_slices(name, "liver") == [fixed]
    after = read_label(project.mask_path(name), image).array
    assert np.array_equal(after[fixed], painted[fixed])


# --- item 10: a reviewed volume without a contour --------------------------------------------------------------------
def test_a_reviewed_volume_without_any_contour_is_left_out_with_a_line(openkbp: Path, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    project = partial_project(openkbp, folder, reviewed=("pt_1",), pending=("pt_2",))
    image = read_volume(project.volume_path("pt_2"))
    write_mask(np.zeros(image.array.shape, np.uint8), image, project.mask_path("pt_2"))  # emptied on purpose
    project.set_status("pt_2", "segmented", project.mask_path("pt_2"))
    project.mark_reviewed("pt_2")
    r = runner.invoke(app, ["finetune", "--project", str(folder), "--steps", "2", "--no-presegment"])
    assert r.exit_code == 0, r.output
    text = r.output.replace("\n", " ")
    assert "pt_2: left out of the training: its mask holds none of" in text
    assert "1 volume (pt_1)" in text and "spinal_cord: not trained" in text
