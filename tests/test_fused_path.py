"""The default path (atlas localizer, 'atlas' mode) writes the templates' fused masks, on every door.

Each test asserts the path taken on a real head-and-neck patient of ``validation-pats``: the written mask of every
target equals, voxel for voxel, the mask the localizer fused in that same run (recorded by a spy around it), the run
summary says so (``source``, ``agreement``, no ``fallback``).  A Dice floor would not do: LiteMedSAM from the box
clears a loose one too, which is how a regression that dropped the templates' masks went unseen.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.localization.localize import AtlasLocalizer, LocalizedTarget
from medlsam_training.project.pipeline import (
    OWN_MASK,
    RESULTS_NAME,
    SOURCE_BONE,
    SOURCE_FUSED,
    SOURCE_OWN_MASK,
    SOURCE_SAM,
)
from medlsam_training.segmentation.propagate import PropagationConfig, bone_in_box, clean_mask, for_target
from medlsam_training.volumes.boxes import Box3D
from medlsam_training.volumes.io import read_label, read_volume, write_mask

pytestmark = pytest.mark.slow
runner = CliRunner()
TARGETS = {"brainstem": 1, "mandible": 7}  # OpenKBP's values; apart from each other, so no merge decides a voxel
TEMPLATES = ("pt_1", "pt_2")  # train-pats, both contoured
QUERY = "pt_202"  # validation-pats, recommended, both contoured


class SpyLocalizer(AtlasLocalizer):
    """The product's localizer, keeping what it returned for each query (the fused masks among it)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: dict[str, list[LocalizedTarget]] = {}

    def localize(self, query, templates):
        out = super().localize(query, templates)
        self.seen[str(Path(query.path).resolve())] = out
        return out


@pytest.fixture()
def spy(monkeypatch) -> SpyLocalizer:
    localizer = SpyLocalizer()
    import medlsam_training.localization.localize as localize

    monkeypatch.setattr(localize, "make_localizer", lambda *a, **k: localizer)
    return localizer


def fused(t: LocalizedTarget) -> np.ndarray:
    """The fused mask as the pipeline writes it (its largest piece for a one-piece organ)."""
    assert t.mask is not None, f"{t.target}: the localizer fused no mask"
    return clean_mask(t.mask, for_target(PropagationConfig(), t.target).largest_component, fill_holes=False)


def assert_fused_written(spy: SpyLocalizer, volume: Path, written: np.ndarray, record: dict,
                         targets=TARGETS) -> None:
    located = {t.target: t for t in spy.seen[str(volume.resolve())]}
    for name, value in targets.items():
        info = record["targets"][name]
        assert info["method"] == "atlas" and info["source"] == SOURCE_FUSED, info
        assert info["fallback"] is None and info["agreement"] is not None, info
        assert np.array_equal(written == value, fused(located[name])), f"{volume}: {name} is not the fused mask"


def test_cli_segment_defaults_write_the_fused_masks(openkbp: Path, tmp_path: Path, spy: SpyLocalizer) -> None:
    """``medlsam segment`` with its defaults: a query gets the fused masks, a template volume its own mask."""
    files = []
    for pt in TEMPLATES:
        for name, value in TARGETS.items():
            files.append(tmp_path / f"{pt}_{name}.json")
            r = runner.invoke(app, ["extreme-points", str(openkbp / "imagesTr" / f"{pt}_0000.nii.gz"),
                                    str(openkbp / "labelsTr" / f"{pt}.nii.gz"), "--target", name,
                                    "--value", str(value), "--out", str(files[-1])])
            assert r.exit_code == 0, r.output
    out = tmp_path / "masks"
    query, own = openkbp / "imagesTr" / f"{QUERY}_0000.nii.gz", openkbp / "imagesTr" / f"{TEMPLATES[0]}_0000.nii.gz"
    args = ["segment", *sum((["-t", str(f)] for f in files), []), "-q", str(query), "-q", str(own),
            "--out", str(out), "--device", "cpu", "--cache", str(tmp_path / "cache")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / RESULTS_NAME).read_text())
    image = read_volume(query)
    written = read_label(out / f"{QUERY}_0000.nii.gz", image, allow_empty=True)
    assert written.geometry.is_close(image.geometry, tol=1e-6)
    assert_fused_written(spy, query, written.array, summary[f"{QUERY}_0000"])
    # the template's own volume: its own mask, as it is
    tpl = read_volume(own)
    truth = read_label(openkbp / "labelsTr" / f"{TEMPLATES[0]}.nii.gz", tpl).array
    mine = read_label(out / f"{TEMPLATES[0]}_0000.nii.gz", tpl, allow_empty=True).array
    record = summary[f"{TEMPLATES[0]}_0000"]
    assert record["template"]
    for name, value in TARGETS.items():
        assert record["targets"][name]["method"] == OWN_MASK
        assert record["targets"][name]["source"] == SOURCE_OWN_MASK
        assert np.array_equal(mine == value, clean_mask(truth == value, for_target(PropagationConfig(), name)
                                                         .largest_component, fill_holes=False))


def linked_project(openkbp: Path, folder: Path, reviewed: tuple[str, ...], pending: tuple[str, ...],
                   clicked: tuple[str, ...]):
    """A project of OpenKBP volumes linked in (never copied): the ``reviewed`` ones with their contours of TARGETS as
    masks, the ``clicked`` ones templates with their six points taken from those contours."""
    from medlsam_training.localization.extreme_points import extreme_points_from_mask
    from medlsam_training.project.folder import Project

    folder.mkdir()
    for pt in (*reviewed, *pending):
        (folder / f"{pt}.nii.gz").symlink_to(openkbp / "imagesTr" / f"{pt}_0000.nii.gz")
    project = Project.open(folder)
    for name, value in TARGETS.items():
        project.add_target(name, value)
    for pt in reviewed:
        image = read_volume(project.volume_path(pt))
        label = read_label(openkbp / "labelsTr" / f"{pt}.nii.gz", image)
        truth = np.where(np.isin(label.array, list(TARGETS.values())), label.array, 0).astype(np.uint8)
        project.set_status(pt, "segmented", write_mask(truth, image, project.mask_path(pt)))
        if pt in clicked:
            project.set_template(pt)
            for name, value in TARGETS.items():
                ep = extreme_points_from_mask(name, value, image, label)
                project.points.setdefault(pt, {})[name] = [[float(v) for v in i] for i in ep.indices()]
        project.mark_reviewed(pt)
    project.save()
    return project


def hn_project(openkbp: Path, folder: Path) -> "object":
    """Two reviewed train-pats templates (points from their contours) and the validation patient, pending, with
    its mandible painted by hand and locked: the run must fuse its brainstem and leave its mandible alone."""
    project = linked_project(openkbp, folder, reviewed=TEMPLATES, pending=(QUERY,), clicked=TEMPLATES)
    image = read_volume(project.volume_path(QUERY))
    hand = np.zeros(image.array.shape, np.uint8)
    hand[40:44, 50:60, 50:70] = TARGETS["mandible"]  # a hand-drawn (wrong-looking) mandible: locked, so kept
    project.set_status(QUERY, "segmented", write_mask(hand, image, project.mask_path(QUERY)))
    project.set_locked(QUERY, "mandible")
    project.save()
    return project, hand


def check_project_run(project, hand: np.ndarray, spy: SpyLocalizer) -> None:
    image = read_volume(project.volume_path(QUERY))
    written = read_label(project.mask_path(QUERY), image).array
    record = json.loads((project.mask_path(QUERY).parent / RESULTS_NAME).read_text())[QUERY]
    assert_fused_written(spy, project.volume_path(QUERY), written, record, {"brainstem": TARGETS["brainstem"]})
    assert "mandible" not in record["targets"]  # locked: neither localized nor changed
    assert np.array_equal(written == TARGETS["mandible"], hand == TARGETS["mandible"])


def test_segment_project_fuses_around_a_locked_target(openkbp: Path, tmp_path: Path, spy: SpyLocalizer) -> None:
    project, hand = hn_project(openkbp, tmp_path / "project")
    r = runner.invoke(app, ["segment", "--project", str(project.folder), "--device", "cpu",
                            "--cache", str(tmp_path / "cache"), "--existing", "keep"])
    assert r.exit_code == 0, r.output
    check_project_run(project, hand, spy)


def test_annotators_run_job_fuses_the_reviewed_templates_masks(openkbp: Path, tmp_path: Path, monkeypatch) -> None:
    """What 'Localize & segment all' runs in its worker: the project's models, templates and run."""
    import medlsam_training.project.run as project_run
    from medlsam_training.project.folder import Project

    project, hand = hn_project(openkbp, tmp_path / "project")
    project.existing = "keep"
    project.save()
    spy = SpyLocalizer()
    monkeypatch.setattr("medlsam_training.localization.localize.make_localizer", lambda *a, **k: spy)
    from medlsam_napari.jobs import load_models  # imports make_localizer by name: patch it there too

    monkeypatch.setattr("medlsam_napari.jobs.make_localizer", lambda *a, **k: spy)
    project = Project.open(project.folder)
    localizer, segmenter = load_models(project, {})
    assert localizer is spy
    results = project_run.run_project(project, project_run.build_templates(project), project.to_segment, localizer,
                                      segmenter, cache_dir=tmp_path / "cache")
    assert [r.name for r in results] == [QUERY]  # the reviewed templates are left as they are
    check_project_run(project, hand, spy)


def test_a_fallback_is_recorded_per_target_and_said_once(openkbp: Path, tmp_path: Path, caplog) -> None:
    """Templates without masks: the atlas mode cannot fuse; SAM segments from the box, and the run says so once
    and records it on every volume (not a silent change of method)."""
    from medlsam_training.localization.extreme_points import extreme_points_from_mask
    from medlsam_training.localization.localize import Template
    from medlsam_training.project.pipeline import query_cases, run_queries
    from medlsam_training.segmentation.segmenters import load_segmenter

    templates = []
    for pt in TEMPLATES:
        image = read_volume(openkbp / "imagesTr" / f"{pt}_0000.nii.gz")
        label = read_label(openkbp / "labelsTr" / f"{pt}.nii.gz", image)
        templates.append(Template(image, [extreme_points_from_mask(n, v, image, label) for n, v in TARGETS.items()]))
    queries = [openkbp / "imagesTr" / f"{pt}_0000.nii.gz" for pt in ("pt_201", QUERY)]
    with caplog.at_level("WARNING", logger="medlsam_training.project.pipeline"):
        results = list(run_queries(query_cases(queries), templates, AtlasLocalizer(), load_segmenter("litemedsam"),
                                   tmp_path / "masks", cache_dir=tmp_path / "cache"))
    summary = json.loads((tmp_path / "masks" / RESULTS_NAME).read_text())
    for r in results:
        for name in TARGETS:
            info = summary[r.name]["targets"][name]
            # a bone from its box is a CT threshold (mandible), the rest SAM from the box
            assert info["status"] == "found" and info["source"] == (SOURCE_BONE if name == "mandible" else SOURCE_SAM)
            assert f"no mask of {name}" in info["fallback"] and info["source"] in info["fallback"], info
        image = read_volume(r.image)
        written = read_label(r.output, image, allow_empty=True).array
        box = Box3D(*np.reshape(summary[r.name]["targets"]["mandible"]["box"], (2, 3)).tolist())
        assert np.array_equal(written == TARGETS["mandible"], bone_in_box(image, box, "mandible"))
    for name in TARGETS:
        assert len([m for m in caplog.messages if f"no mask of {name}" in m]) == 1, caplog.messages


def test_project_pool_and_network_make_the_pending_masks(openkbp: Path, tmp_path: Path, monkeypatch) -> None:
    """A small real project, 3 reviewed and 4 pending: the reviewed volumes join the clicked template as templates
    (points from their masks, no clicks), the atlas registers the best-matching of the pool, and once the project
    has a fine-tuned network the pending masks are the combination of the atlas vote and the network, voxel for
    voxel, the run summary saying so.  Three of them are then reviewed: the next training learns each target's mix
    from what their runs stored (``learning.combination``), and the last pending volume is written in that mix."""
    from medlsam_training.correction import load_votes, votes_path
    from medlsam_training.learning.combination import dice_table, grid_index, learn_combination, reviewed_samples
    from medlsam_training.learning.project_loop import finetune_project, training_set
    from medlsam_training.learning.train import LearnConfig, SliceNetPredictor
    from medlsam_training.project.folder import Project
    from medlsam_training.project.pipeline import (
        NETWORK_WEIGHT,
        SOURCE_COMBINED,
        SOURCE_FUSED,
        combination_share,
        combine,
    )

    folder = tmp_path / "project"
    reviewed, pending = ("pt_1", "pt_2", "pt_4"), ("pt_202", "pt_209", "pt_207", "pt_210")
    # pt_1 the one clicked template; pt_2 and pt_4 are only reviewed
    linked_project(openkbp, folder, reviewed=reviewed, pending=pending, clicked=("pt_1",))

    spy = SpyLocalizer(max_templates=2)  # a pool of 3 per target: the choice is exercised
    monkeypatch.setattr("medlsam_training.localization.localize.make_localizer", lambda *a, **k: spy)
    args = ["segment", "--project", str(folder), "--device", "cpu", "--cache", str(tmp_path / "cache")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads((folder / "masks" / RESULTS_NAME).read_text())
    assert set(summary) == set(pending)  # reviewed volumes are never re-segmented
    for pt in pending:
        image = read_volume(folder / f"{pt}.nii.gz")
        written = read_label(folder / "masks" / f"{pt}.nii.gz", image).array
        assert_fused_written(spy, folder / f"{pt}.nii.gz", written, summary[pt])
        for name in TARGETS:
            assert summary[pt]["targets"][name]["pool"] == 3 and summary[pt]["targets"][name]["templates"] == 2

    project = Project.open(folder)
    finetune_project(project, cfg=LearnConfig(steps=300), device="cpu")  # enough to learn the mandible
    r = runner.invoke(app, [*args, "--existing", "overwrite"])
    assert r.exit_code == 0, r.output
    assert "network" in r.output  # the run says which sources it uses
    summary = json.loads((folder / "masks" / RESULTS_NAME).read_text())
    net = SliceNetPredictor(folder / "models" / "slicenet.pt", "cpu")
    learned = [t for t in TARGETS if t in net.targets]  # only targets it learned join the atlas
    assert "mandible" in learned
    for pt in pending:
        path = folder / f"{pt}.nii.gz"
        image = read_volume(path)
        written = read_label(folder / "masks" / f"{pt}.nii.gz", image).array
        probs = net.target_probabilities(image)
        located = {t.target: t for t in spy.seen[str(path.resolve())]}
        for name, value in TARGETS.items():
            if name not in learned:  # not learned: the atlas alone, its fused mask as written
                assert summary[pt]["targets"][name]["source"] == SOURCE_FUSED, summary[pt]["targets"][name]
                continue
            assert summary[pt]["targets"][name]["source"] == SOURCE_COMBINED, summary[pt]["targets"][name]
            assert net.share(name, True) == combination_share(True)  # nothing reviewed after a network ran yet
            expected = clean_mask(combine(located[name], probs[name]),
                                  for_target(PropagationConfig(), name).largest_component, fill_holes=False)
            assert np.array_equal(written == value, expected), f"{pt}: {name} is not the combination"
        # a correction re-thresholds what made the mask: the stored votes hold the network's probability and
        # vote as the pipeline combined (to the stored uint8 precision)
        votes = load_votes(votes_path(folder / "masks", pt))
        for name in learned:
            v = votes[name]
            assert v.network and len(v.warped) >= 2  # the templates' warped masks and the network's probability
            assert np.isclose(v.weights[-1], v.weights[:-1].sum() * NETWORK_WEIGHT / (1 - NETWORK_WEIGHT))
            stored = np.zeros(image.array.shape, bool)
            stored[v.box.slices] = v.vote() >= v.threshold
            combined = combine(located[name], probs[name])
            assert (stored != combined).sum() <= 0.01 * combined.sum(), name

    # three pending volumes are reviewed by an annotator who draws the mandible one voxel tighter than the templates'
    # contours (a house style the atlas and the network do not know): their stored votes hold what the network and
    # the atlas said before review, and the next training learns each target's mix from them
    project = Project.open(folder)
    for pt in pending[:3]:
        image = read_volume(folder / f"{pt}.nii.gz")
        label = read_label(openkbp / "labelsTr" / f"{pt}.nii.gz", image).array
        reviewed_mask = np.where(np.isin(label, list(TARGETS.values())), label, 0).astype(np.uint8)
        bone = reviewed_mask == TARGETS["mandible"]
        reviewed_mask[bone & ~ndimage.binary_erosion(bone)] = 0
        project.set_status(pt, "segmented", write_mask(reviewed_mask, image, project.mask_path(pt)))
        project.mark_reviewed(pt)
    fit = finetune_project(project, cfg=LearnConfig(steps=300), device="cpu")
    net = SliceNetPredictor(folder / "models" / "slicenet.pt", "cpu")
    stored = net.combination
    assert set(stored) == set(fit.combination) == set(TARGETS)  # every trained target has a record
    for name in learned:
        mix = stored[name]
        # chosen on the reviewed volumes that a network ran on, and only them
        assert sorted(mix.volumes) == sorted(pending[:3])
        trained_on = training_set(project, [name]).volumes
        samples = reviewed_samples(project, [name], trained_on)[name]
        assert [s.volume for s in samples] == mix.volumes
        again = learn_combination(project, [name], trained_on)[name]  # the stored choice is what they make
        assert (again.share, again.threshold, again.learned) == (mix.share, mix.threshold, mix.learned)
        table = np.mean([dice_table(s) for s in samples], axis=0)
        if mix.learned:  # the best mix on them, ahead of the fixed one leave-one-out
            assert mix.loo_dice > mix.fixed_loo_dice
            assert np.isclose(table.max(), table[grid_index(mix.share, mix.threshold)])
    assert stored["mandible"].learned, stored["mandible"]  # the tighter house style is learned

    last = pending[3]
    r = runner.invoke(app, [*args, "--existing", "overwrite"])
    assert r.exit_code == 0, r.output
    path = folder / f"{last}.nii.gz"
    image = read_volume(path)
    written = read_label(folder / "masks" / f"{last}.nii.gz", image).array
    probs = net.target_probabilities(image)
    located = {t.target: t for t in spy.seen[str(path.resolve())]}
    share = net.share("mandible", True)
    assert share == (stored["mandible"].share, stored["mandible"].threshold) != combination_share(True)
    expected = clean_mask(combine(located["mandible"], probs["mandible"], share),
                          for_target(PropagationConfig(), "mandible").largest_component, fill_holes=False)
    assert np.array_equal(written == TARGETS["mandible"], expected), "the last volume is not in the learned mix"
    v = load_votes(votes_path(folder / "masks", last))["mandible"]
    assert np.isclose(v.threshold, share[1])  # an update re-thresholds the mix that was written
