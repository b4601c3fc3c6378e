"""The atlas + network mix learned from reviewed volumes (training/learning/combination.py), on real contours.

Each sample is a real OpenKBP mandible with the systematic errors the issue names: an atlas vote that is too wide
(the contour dilated) and a network that is sure inside the organ and half-sure in a rim around it.  The fixed mix
takes that rim; a learned one must find a mix that does not, and keep it only where it wins leave-one-out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medlsam_training.correction.votes import TemplateVotes, with_probability
from medlsam_training.learning.combination import MIN_VOLUMES, choose, dice_table, grid_index, sample
from medlsam_training.project.pipeline import combination_share
from medlsam_training.volumes.boxes import Box3D
from medlsam_training.volumes.io import read_label

MANDIBLE = 7
PATIENTS = ("pt_1", "pt_2", "pt_4", "pt_6", "pt_7")


def stored_combination(truth: np.ndarray) -> TemplateVotes:
    """Votes as a run stores them: two templates' warped masks (too wide) and the network's probability as the last
    voter, in the fixed mix."""
    wide = ndimage.binary_dilation(truth, iterations=2)
    rim = ndimage.binary_dilation(truth, iterations=2) & ~truth
    box = Box3D.from_mask(wide)
    atlas = TemplateVotes(box, np.stack([wide[box.slices], wide[box.slices]]).astype(np.float32), np.ones(2), 0.4)
    probability = np.where(truth, 0.9, np.where(rim, 0.35, 0.0)).astype(np.float32)
    return with_probability(atlas, probability, *combination_share(True))


@pytest.fixture(scope="module")
def truths(openkbp: Path) -> dict[str, np.ndarray]:
    return {pt: read_label(openkbp / "labelsTr" / f"{pt}.nii.gz").array == MANDIBLE for pt in PATIENTS}


def test_a_sample_is_the_stored_atlas_vote_and_network_probability(truths) -> None:
    truth = truths["pt_1"]
    votes = stored_combination(truth)
    s = sample("pt_1", votes, truth)
    assert s is not None and s.outside == 0 and s.truth.sum() == truth.sum()
    assert np.allclose(s.atlas.max(), 1.0) and np.allclose(s.network.max(), 0.9)
    # the fixed mix of the stored sample is what the run wrote: the vote of all voters above the stored threshold
    fixed = dice_table(s)[grid_index(combination_share(True)[0], votes.threshold)]
    written = votes.vote() >= votes.threshold
    dice = 2 * (written & s.truth).sum() / (written.sum() + s.truth.sum())
    assert np.isclose(fixed, dice, atol=1e-6)
    # not a combination: the atlas alone, a mask no template made, nothing reviewed
    assert sample("pt_1", TemplateVotes(votes.box, votes.warped[:-1], votes.weights[:-1], 0.4), truth) is None
    assert sample("pt_1", votes, np.zeros_like(truth)) is None


def test_the_learned_mix_fixes_a_systematic_error_on_a_volume_it_never_saw(truths) -> None:
    tables = {pt: dice_table(sample(pt, stored_combination(t), t)) for pt, t in truths.items()}
    chosen, held_out = list(PATIENTS[:4]), PATIENTS[4]
    mix = choose([tables[pt] for pt in chosen], chosen)
    assert mix.learned and mix.volumes == chosen
    assert mix.loo_dice > mix.fixed_loo_dice
    assert (mix.share, mix.threshold) != combination_share(True)
    # on the fifth patient, never used to choose: the learned mix is ahead of the fixed one
    learned = tables[held_out][grid_index(mix.share, mix.threshold)]
    fixed = tables[held_out][grid_index(*combination_share(True))]
    assert learned > fixed + 0.02


def test_too_few_volumes_or_no_gain_keep_the_fixed_mix(truths) -> None:
    few = [dice_table(sample(pt, stored_combination(truths[pt]), truths[pt])) for pt in PATIENTS[:MIN_VOLUMES - 1]]
    mix = choose(few, list(PATIENTS[:MIN_VOLUMES - 1]))
    assert not mix.learned and (mix.share, mix.threshold) == combination_share(True)
    assert f"{MIN_VOLUMES} are needed" in mix.why
    # the fixed mix already right everywhere (every mix scores the same): nothing learned, said why
    flat = [np.ones_like(few[0]) for _ in range(MIN_VOLUMES + 1)]
    mix = choose(flat, [f"v{i}" for i in range(len(flat))])
    assert not mix.learned and "not ahead" in mix.why and (mix.share, mix.threshold) == combination_share(True)
