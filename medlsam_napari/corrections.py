"""Which axial slices of which labels a paint event changed: napari's undo atoms read back (Qt-free, testable)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

_ITK_LOADING: list[threading.Thread] = []


def painted_slices(atoms: Iterable) -> dict[int, set[int]]:
    """Label value -> axial slices (z) where a stroke painted it or painted over it (background left out).

    An atom is napari's masked paint atom (``slice_key``, ``mask``, ``old_values``, ``new_value``: brush, fill,
    polygon) or the ``(indices, old_values, new_values)`` of ``data_setitem``.
    """
    out: dict[int, set[int]] = defaultdict(set)
    for atom in atoms:
        if hasattr(atom, "slice_key"):
            z0 = atom.slice_key[0].start or 0
            olds = np.asarray(atom.old_values)
            if atom.mask is None:  # every voxel of the box changed: old_values is the whole box
                zs = z0 + np.arange(olds.shape[0])
            else:
                changed = np.asarray(atom.mask)
                zs = z0 + np.nonzero(changed.reshape(changed.shape[0], -1).any(axis=1))[0]
            values = set(np.unique(olds).tolist()) | {int(atom.new_value)}
        else:
            indices, olds, news = atom
            zs = np.unique(np.asarray(indices[0]))
            values = set(np.unique(np.asarray(olds)).tolist()) | set(np.unique(np.asarray(news)).tolist())
        for v in values:
            if int(v) != 0:
                out[int(v)].update(int(z) for z in zs)
    return dict(out)


def load_itk_in_background() -> None:
    """Once per process, after the first correction: ITK's filters load on a daemon thread (about 10 s on two cores)
    so that the first 'Update the rest' does not wait for them; ITK's lazy loading holds its own lock."""
    from medlsam_training.correction.update import load_itk_filters

    if not _ITK_LOADING:
        _ITK_LOADING.append(threading.Thread(target=load_itk_filters, name="load ITK filters", daemon=True))
        _ITK_LOADING[0].start()
