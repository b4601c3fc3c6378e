"""One predicted label map scored against its ground truth (what ``medlsam evaluate`` does per volume, in this
process or as one task on a cluster)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from ..errors import GeometryMismatchError
from ..metrics import label_metrics
from ..volumes.io import read_label
from ..volumes.resample import resample_to_reference


def score_pair(pred: Path, truth: Path, labels: Collection[int] | None, targeted: Collection[int] | None,
               nsd_mm: float, apl_mm: float, resample: bool = False, missing_is_absent: bool = False
               ) -> dict[int, dict[str, float]]:
    """Label value -> its metrics (Dice, HD95, NSD, APL).  ``labels``: the values asked for; else the ones the run
    ``targeted`` and those it predicted (an organ it missed counts, Dice 0); else every value in either map.  A
    prediction off its ground truth's grid is refused unless ``resample`` (nearest neighbour onto it).

    A value the ground truth does not hold was not contoured (radiotherapy data: "not drawn", not "absent"):
    ``{"contoured": False}`` and its predicted voxels, never a Dice 0; with ``missing_is_absent`` it is scored (the
    predicted voxels are false positives)."""
    ref = read_label(truth, allow_empty=True)
    try:
        prd = read_label(pred, ref, allow_empty=True)
    except GeometryMismatchError as exc:
        if not resample:
            raise GeometryMismatchError(f"{exc}; pass --resample to resample it onto the ground truth") from exc
        prd = resample_to_reference(read_label(pred, allow_empty=True), ref, is_label=True)
    predicted = {int(v) for v in np.unique(prd.array) if v}
    if labels:
        values = sorted(int(v) for v in labels)
    elif targeted is not None:
        values = sorted(set(targeted) | predicted)
    else:
        values = sorted(predicted | {int(v) for v in np.unique(ref.array) if v})
    drawn = {int(v) for v in np.unique(ref.array) if v}
    scored = [v for v in values if v in drawn or missing_is_absent]
    out: dict[int, dict[str, float]] = {v: {**m, "contoured": True} for v, m in
                                        label_metrics(prd.array, ref.array, ref.spacing_zyx, scored, nsd_mm,
                                                      apl_mm).items()}
    for v in values:
        if v not in out:
            out[v] = {"contoured": False, "predicted_voxels": int((prd.array == v).sum())}
    return {v: out[v] for v in values}
