"""Seeding on real head-and-neck CT: the classifier's body crops (and their way back), OpenKBP's target volumes as
tags, the refinement network's training slices, and the organ path (box or localizer mask -> prior -> LiteMedSAM)
through the API and the CLI, with the image's geometry and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medlsam_training.cam.classifier import SIZE, body_slices, prepare_slices, to_slice_grid
from medlsam_training.cam.data import labelled_cases, load_tagged
from medlsam_training.cam.organ import Prior, box_prior, prior_kind, seed_organ_volume, slice_boxes
from medlsam_training.cam.rvc import RES, load_net, segment_ticked, train_rvc, training_slices
from medlsam_training.cam.tags import ABSENT, PRESENT
from medlsam_training.cli import app
from medlsam_training.errors import DatasetError, MedLSAMError
from medlsam_training.metrics import dice_score
from medlsam_training.volumes.boxes import Box3D
from medlsam_training.volumes.io import read_volume

runner = CliRunner()


@pytest.fixture(scope="module")
def ptv_cases(openkbp):
    return labelled_cases(openkbp, "validation-pats", recommended_only=True, labels="ptvTr")


def test_target_volumes_come_from_their_own_folder(openkbp, ptv_cases) -> None:
    case = ptv_cases[0]
    assert case.label.parent.name == "ptvTr" and case.label_names == {1: "ptv56", 2: "ptv63", 3: "ptv70"}
    [(_, prep, tags, lab)] = load_tagged([case], ["ptv70", "brainstem"])
    # ptv70's slices are tagged from the PTV map; brainstem is not a name of that map: unknown, never absent
    assert np.array_equal(tags[:, 0] == PRESENT, (lab == 3).any(axis=(1, 2)))
    assert np.all(tags[:, 1] == -1)
    with pytest.raises(DatasetError, match="unknown label folder 'gtvTr'"):
        labelled_cases(openkbp, "validation-pats", labels="gtvTr")


def test_body_crops_fill_the_input_and_maps_go_back_exactly(ptv_cases) -> None:
    image, _ = ptv_cases[0].load()
    prep = prepare_slices(image)
    body = body_slices(prep.canonical.array)
    neck = int(np.argmin(np.where(body.any(axis=(1, 2)), body.sum(axis=(1, 2)), 1 << 30)))
    # the neck (the smallest body section) fills the crop: its body covers a good part of the 128 x 128 input
    assert (prep.images[neck, 0].float() > 0).float().mean() > 0.3
    ys, xs = np.nonzero(body[neck])
    y0, x0, y1, x1 = prep.crops[neck]
    assert y0 <= ys.min() and x0 <= xs.min() and y1 >= ys.max() + 1 and x1 >= xs.max() + 1
    # a map on the input goes back onto the slice grid where it came from: the soft-tissue channel returns
    rows = np.arange(prep.images.shape[0])[body.any(axis=(1, 2))]
    back = to_slice_grid(prep.images[rows, 0].float().numpy(), body.shape[1:], prep.crops[rows])
    windowed = np.clip((prep.canonical.array[rows].astype(np.float32) + 160) / 400, 0, 1)
    assert np.abs(back - windowed)[body[rows]].mean() < 0.06
    assert prep.images.shape[2:] == (SIZE, SIZE)


@pytest.mark.slow
def test_refinement_network_learns_from_clean_masks_and_segments_only_ticked_slices(ptv_cases, tmp_path) -> None:
    """Trained on three volumes' PTV70 (clean masks standing in for pseudo-masks), it segments a fourth: better
    than the body on the ticked slices, nothing off them."""
    tagged = load_tagged(ptv_cases[:4], ["ptv70"])
    rng = np.random.default_rng(0)
    parts = [training_slices(prep, lab == 3, tags[:, 0], rng) for _, prep, tags, lab in tagged[:3]]
    images, masks = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    assert images.shape[1:] == (2, RES, RES) and masks.shape[1:] == (RES, RES)
    n_present = sum(int(np.sum((t[:, 0] == PRESENT) & p.body)) for _, p, t, _ in tagged[:3])
    assert n_present < len(images) and masks[:n_present].sum() > 0  # absent slices follow, all background
    net = load_net(train_rvc(images, masks, tmp_path / "rvc.pt", steps=300, batch=8))
    _, prep, tags, lab = tagged[3]
    ticks = tags[:, 0]
    _, mask = segment_ticked(net, prep, ticks)
    truth = lab == 3
    body = body_slices(prep.canonical.array) & (ticks == PRESENT)[:, None, None]
    assert not mask[ticks != PRESENT].any()
    assert dice_score(mask, truth) > dice_score(body, truth)


def test_box_priors_and_slice_boxes() -> None:
    shape = (20, 40, 40)
    box = np.zeros(shape, bool)
    box[5:15, 10:30, 8:32] = True
    ell = box_prior(np.zeros(shape), box, Prior.ELLIPSOID)
    assert ell[10, 20, 20] and not ell[5, 10, 8] and ell.sum() == pytest.approx(np.pi / 6 * box.sum(), rel=0.1)
    image = np.zeros(shape)
    image[8:12, 15:18, 10:30] = 700  # a bone bar inside the box, another outside it
    image[1:3, 1:3, 1:3] = 700
    assert np.array_equal(box_prior(image, box, Prior.BONE), image[...] * box > 0)
    assert prior_kind("mandible", None) == Prior.BONE and prior_kind("parotid_left", None) == Prior.ELLIPSOID
    assert prior_kind("brainstem", box) == Prior.WARPED
    ticks = np.full(shape[0], ABSENT)
    ticks[3:17] = PRESENT
    boxes = slice_boxes(ell, ticks)
    # every ticked slice gets a box; beyond the prior's slices, the nearest slice's box
    assert sorted(boxes) == list(range(3, 17)) and np.array_equal(boxes[3], boxes[min(np.flatnonzero(ell.any((1, 2))))])


@pytest.fixture(scope="module")
def organ_case(openkbp):
    case = next(c for c in labelled_cases(openkbp, "validation-pats", recommended_only=True)
                if c.name == "pt_201")
    image, label = case.load()
    return case, image, label


@pytest.mark.slow
def test_organ_seeding_from_the_localizer_mask_and_from_a_box(organ_case) -> None:
    from medlsam_training.segmentation.segmenters import load_segmenter

    case, image, label = organ_case
    sam = load_segmenter("litemedsam")
    truth = label.array == case.label_value("brainstem")
    # a localizer mask one voxel off in-plane (what registration gives) -> LiteMedSAM on every ticked slice
    warped = np.roll(truth, 1, axis=2)
    ticks = np.where(truth.any(axis=(1, 2)), PRESENT, ABSENT)
    mask, prior, kind = seed_organ_volume(image, "brainstem", segmenter=sam, warped=warped, own_ticks=ticks)
    assert kind == Prior.WARPED and mask.shape == image.array.shape
    assert not mask[ticks != PRESENT].any() and dice_score(mask, truth) > 0.5
    # the default seed is the prior itself on the ticked slices (LiteMedSAM measured worse at 4 mm)
    plain, prior, _ = seed_organ_volume(image, "brainstem", warped=warped | np.roll(truth, -3, axis=0), own_ticks=ticks)
    assert np.array_equal(plain, prior) and not plain[ticks != PRESENT].any()
    assert dice_score(plain, truth) > dice_score(warped | np.roll(truth, -3, axis=0), truth)
    # the mandible from its true box: the bone threshold inside it, LiteMedSAM per slice
    bone = label.array == case.label_value("mandible")
    mask, prior, kind = seed_organ_volume(image, "mandible", segmenter=sam, box=Box3D.from_mask(bone))
    assert kind == Prior.BONE and dice_score(prior, bone) > 0.5 and mask.any()
    with pytest.raises(MedLSAMError, match="prior mask of brainstem is empty"):
        seed_organ_volume(image, "brainstem", warped=np.zeros_like(truth))
    with pytest.raises(MedLSAMError, match="prior mask has shape"):
        seed_organ_volume(image, "brainstem", warped=truth[1:])


@pytest.mark.slow
def test_cli_seeds_an_organ_from_a_box_with_the_image_geometry(organ_case, tmp_path) -> None:
    case, image, label = organ_case
    box = Box3D.from_mask(label.array == case.label_value("parotid_left"))
    text = ",".join(str(v) for v in (*box.lo, *box.hi))
    out = tmp_path / "parotid.nii.gz"
    result = runner.invoke(app, ["cam-seed", "organ", str(case.image), "--target", "parotid_left", "--box", text,
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "prior: ellipsoid" in result.output
    written = read_volume(out)
    assert written.geometry.is_close(image.geometry) and written.array.any()
    result = runner.invoke(app, ["cam-seed", "organ", str(case.image), "--target", "parotid_left", "--box", "1,2,3",
                                 "--out", str(out)])
    assert result.exit_code == 2 and "six numbers" in result.output
    result = runner.invoke(app, ["cam-seed", "organ", str(case.image), "--target", "parotid_left",
                                 "--out", str(out)])
    assert result.exit_code == 2 and "exactly one of --prior or --box" in result.output
