"""Writing one target into a volume's single label map: what happens to the labels already there.

Every target of a volume lives in one label map (one file, one napari Labels layer).  When a target is
(re)segmented, the annotator chooses what its new voxels may replace:

* ``keep`` (default): the target's old voxels are replaced; other targets' voxels are kept as they are.
* ``overwrite``: the target's old voxels are replaced and its new voxels win over other targets too.
* ``empty``: nothing already labelled changes, the target's own voxels included; new voxels fill only
  empty (0) voxels.

A locked (reviewed) target is never changed, whatever the policy: its voxels are neither cleared nor
painted over, and asking to write it is an error.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from ..errors import MedLSAMError
from ..options import ExistingMaps, LabelPolicy, choose


class LockedTargetError(MedLSAMError, ValueError):
    """A write to a target that the annotator locked (reviewed)."""


def check_policy(policy: str, *, rerun: bool = False) -> LabelPolicy | ExistingMaps:
    """``policy`` checked against the label policies, or with ``rerun`` against what a re-run may do with a
    volume whose label map exists (``ExistingMaps``: skip it, or merge by a policy)."""
    return choose(policy, ExistingMaps if rerun else LabelPolicy, "policy")


def merge_target(label_map: np.ndarray, mask: np.ndarray, value: int, policy: str = "keep",
                 locked: Collection[int] = ()) -> np.ndarray:
    """A copy of ``label_map`` with ``mask`` written as ``value`` under ``policy``; locked values untouched.

    Works on any shape (a whole volume or one slice); ``mask`` is boolean and of the map's shape.
    """
    check_policy(policy)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != label_map.shape:
        raise ValueError(f"mask of shape {mask.shape} does not match the label map {label_map.shape}")
    if value in set(locked):
        raise LockedTargetError(f"label {value} is locked (reviewed); unlock it before re-segmenting it")
    if not 0 < value <= np.iinfo(label_map.dtype).max:
        raise ValueError(f"label value {value} does not fit a {label_map.dtype} label map")
    out = np.array(label_map, copy=True)
    if policy != "empty":
        out[out == value] = 0
    if policy == "overwrite":
        writable = ~np.isin(out, list(locked)) if len(locked) else np.ones_like(mask)
    else:
        writable = out == 0
    out[mask & writable] = value
    return out
