"""The coreset probe on real head-and-neck CT: body-centred crops, uncontoured targets never taught as background,
and a planted wrong label found first by the suspicious ranking."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medlsam_training.cam.data import labelled_cases
from medlsam_training.coreset.probe import CROP, PIXEL_MM, SliceCase, crossfit_checkpoints, load_slice_case, probe_loss
from medlsam_training.coreset.run import mirror_pairs, suspicious_ranking

TARGETS = ["mandible", "parotid_right", "parotid_left"]


@pytest.fixture(scope="module")
def pool(openkbp: Path) -> list[SliceCase]:
    """The first 16 recommended train-pats patients with all three targets contoured."""
    out = []
    for case in labelled_cases(openkbp, "train-pats", recommended_only=True):
        s = load_slice_case(case, TARGETS)
        if s.contoured.all():
            out.append(s)
        if len(out) == 16:
            break
    return out


def test_crops_follow_the_body_and_keep_every_contoured_voxel_in_view(pool: list[SliceCase]) -> None:
    case = pool[0]
    assert case.images.shape[1:] == (2, CROP, CROP) and case.labels.shape[1:] == (CROP, CROP)
    # a 256 mm field centred on the body holds the mandible and both parotids: each is in the crops
    for t in range(len(TARGETS)):
        assert (case.labels == t + 1).any(), TARGETS[t]
    assert CROP * PIXEL_MM == 256.0
    z = case.rows[len(case.rows) // 2]
    soft = case.images[z, 0].float()
    assert soft[CROP // 2 - 4:CROP // 2 + 4, CROP // 2 - 4:CROP // 2 + 4].mean() > 0.2  # tissue at the centre


def test_an_uncontoured_target_is_not_taught_as_background() -> None:
    """The marginal loss: where a volume has no mandible contour, predicting mandible costs nothing extra."""
    logits = torch.zeros(1, 4, 8, 8)
    logits[0, 1, 2:5, 2:5] = 6.0  # confident mandible in a 3 x 3 patch
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    absent = probe_loss(logits, labels, torch.tensor([[False, True, True]]))
    claimed = probe_loss(logits, labels, torch.tensor([[True, True, True]]))
    clean = probe_loss(torch.zeros(1, 4, 8, 8), labels, torch.tensor([[False, True, True]]))
    assert absent < claimed  # a contoured-but-empty mandible would punish the patch...
    assert absent <= clean + 1e-6  # ...an uncontoured one does not


@pytest.mark.slow
def test_a_swapped_label_planted_in_a_real_pool_is_ranked_in_the_top_tenth(pool: list[SliceCase]) -> None:
    """Valued by probes that never trained on it (two folds), a volume with its parotids swapped left/right is
    among the first 10 % of the ranking, and the reason says which target and why."""
    planted = 3
    bad = pool[planted]
    lab = bad.labels.clone()
    r, left = TARGETS.index("parotid_right") + 1, TARGETS.index("parotid_left") + 1
    lab[bad.labels == r], lab[bad.labels == left] = left, r
    cases = [SliceCase(c.name, c.images, lab if i == planted else c.labels, c.contoured, c.rows, c.z_mm)
             for i, c in enumerate(pool)]
    torch.set_num_threads(1)
    checkpoints = crossfit_checkpoints(cases, len(TARGETS), steps=600, seed=0, value_every=100,
                                       mirror=mirror_pairs(TARGETS))
    ranking = suspicious_ranking(cases, checkpoints, TARGETS, from_step=300)
    top = ranking[:max(2, round(0.1 * len(ranking)))]
    assert planted in [s.index for s in top], [(s.case, round(s.score, 2), s.reason) for s in ranking[:3]]
    found = next(s for s in top if s.index == planted)
    assert found.reason.startswith("parotid_") and "Dice" in found.reason, found.reason
    assert found.worst_z_mm == pytest.approx(bad.z_mm[found.worst_slice])
