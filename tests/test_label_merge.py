"""One label map per volume: what (re)segmenting a target does to the labels already there, and locks."""

from __future__ import annotations

import numpy as np
import pytest

from medlsam_training.segmentation.label_merge import LockedTargetError, merge_target

# a row of five voxels: target 1 on [0, 1], target 2 on [2, 3], empty at 4; the new target-1 mask covers [1, 2, 4]
BEFORE = np.array([1, 1, 2, 2, 0], np.uint8)
NEW = np.array([False, True, True, False, True])


@pytest.mark.parametrize(("policy", "expected"), [
    ("keep", [0, 1, 2, 2, 1]),       # target 1 replaced; target 2 kept where the new mask overlaps it
    ("overwrite", [0, 1, 1, 2, 1]),  # target 1 replaced, and it wins over target 2
    ("empty", [1, 1, 2, 2, 1]),      # nothing labelled changes; only the empty voxel is filled
])
def test_policies_for_existing_labels(policy: str, expected: list[int]) -> None:
    out = merge_target(BEFORE, NEW, 1, policy)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(BEFORE, [1, 1, 2, 2, 0])  # the caller's map is never changed in place


@pytest.mark.parametrize("policy", ["keep", "overwrite", "empty"])
def test_locked_labels_never_change(policy: str) -> None:
    out = merge_target(BEFORE, np.ones(5, bool), 1, policy, locked=[2])
    np.testing.assert_array_equal(out[2:4], [2, 2])
    with pytest.raises(LockedTargetError, match="locked"):
        merge_target(BEFORE, NEW, 2, policy, locked=[2])


def test_bad_policy_shape_and_value_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        merge_target(BEFORE, NEW, 1, "replace")
    with pytest.raises(ValueError, match="does not match"):
        merge_target(BEFORE, NEW[:3], 1)
    with pytest.raises(ValueError, match="does not fit"):
        merge_target(BEFORE, NEW, 300)


def test_works_on_one_slice_of_a_volume() -> None:
    volume = np.zeros((3, 4, 4), np.uint16)
    volume[1, :2] = 7
    volume[1] = merge_target(volume[1], np.eye(4, dtype=bool), 3, "keep", locked=[7])
    assert volume[1, 0, 0] == 7 and volume[1, 3, 3] == 3 and volume[0].max() == 0
