"""Automatic changes to a Labels layer as steps of napari's own undo history.

A run's result, a re-prompted slice, a re-propagation, an accepted seed, a fine-tune "replace": each is written with
``Labels.data_setitem`` on the voxels that change, so Ctrl+Z undoes exactly that change and Ctrl+Shift+Z redoes it,
as with a brush stroke.  Replacing ``layer.data`` instead would silently wipe the history.
"""

from __future__ import annotations

import numpy as np


def apply_labels(layer, new: np.ndarray) -> int:
    """Write ``new`` into the Labels ``layer`` as one undo step; returns the number of voxels changed."""
    new = np.asarray(new)
    old = np.asarray(layer.data)
    if new.shape != old.shape:
        raise ValueError(f"{layer.name}: a change of shape {new.shape} cannot go into a layer of shape {old.shape}")
    changed = np.nonzero(old != new)
    if changed[0].size == 0:
        return 0
    layer.data_setitem(changed, new[changed].astype(old.dtype, copy=False))
    return int(changed[0].size)
