"""Corrected slices as constraints: what an automatic change of a label map may not touch."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def keep_corrected(before: np.ndarray, after: np.ndarray, slices: Iterable[int]) -> np.ndarray:
    """``after`` with every corrected axial slice exactly as it was ``before``: a slice the annotator drew or
    fixed (for any target) is theirs, background included (what they erased stays erased)."""
    out = np.array(after, copy=True)
    zs = sorted({int(z) for z in slices if 0 <= int(z) < out.shape[0]})
    out[zs] = np.asarray(before)[zs]
    return out
