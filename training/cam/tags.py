"""Slice tags: per case and target, which axial slices show the target (present), which do not (absent), and
which were not looked at (unknown). Read from JSON/CSV or derived from a mask."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from ..errors import MedLSAMError

PRESENT, ABSENT, UNKNOWN = 1, 0, -1


class TagError(MedLSAMError, ValueError):
    """Tags that cannot train or seed anything."""


def tags_from_mask(mask: np.ndarray) -> np.ndarray:
    """(Z,) tags of an LPS-oriented (z, y, x) boolean mask: present where the slice has a voxel, else absent."""
    return np.where(mask.reshape(mask.shape[0], -1).any(axis=1), PRESENT, ABSENT).astype(np.int8)


def tags_from_ranges(n_slices: int, present: list[list[int]], absent: list[list[int]] | None = None,
                     *, where: str = "tags") -> np.ndarray:
    """(Z,) tags from inclusive [z0, z1] slice ranges; slices in neither list are unknown.

    ``absent`` None means every slice not present is absent (the common "tick the organ's slices" case).
    """
    tags = np.full(n_slices, UNKNOWN if absent is not None else ABSENT, np.int8)
    for state, ranges in ((PRESENT, present), (ABSENT, absent or [])):
        for r in ranges:
            if len(r) != 2 or not all(isinstance(v, int) for v in r):
                raise TagError(f"{where}: a range must be [first, last] slice indices, got {r!r}")
            lo, hi = sorted(r)
            if lo < 0 or hi >= n_slices:
                raise TagError(f"{where}: slices {lo}-{hi} lie outside the volume's 0-{n_slices - 1}")
            tags[lo:hi + 1] = state
    return tags


def require_usable(tags: np.ndarray, where: str) -> None:
    """A target needs both present and absent slices: a classifier cannot learn from one kind."""
    if not np.any(tags == PRESENT):
        raise TagError(f"{where}: no slice tagged present; tick at least one slice that shows the target")
    if not np.any(tags == ABSENT):
        raise TagError(f"{where}: no slice tagged absent; tick at least one slice without the target")


def read_tags(path: str | os.PathLike[str]) -> dict[str, dict[str, dict[str, list[list[int]]]]]:
    """``{case: {target: {"present": [[z0, z1], …], "absent": [[…]]}}}`` from JSON, or from CSV rows
    ``case,target,first,last,state`` (state present/absent). Slice indices are LPS-oriented axial indices."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            out: dict = {}
            with path.open(newline="", encoding="utf-8") as f:
                for i, row in enumerate(csv.DictReader(f), start=2):
                    state = row["state"].strip().lower()
                    if state not in ("present", "absent"):
                        raise TagError(f"{path}:{i}: state must be present or absent, got {row['state']!r}")
                    out.setdefault(row["case"], {}).setdefault(row["target"], {"present": [], "absent": []})[
                        state].append([int(row["first"]), int(row["last"])])
            return out
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as exc:
        if isinstance(exc, TagError):
            raise
        raise TagError(f"{path}: not a tag file ({exc})") from exc
    if not isinstance(data, dict):
        raise TagError(f"{path}: expected {{case: {{target: {{present: [...], absent: [...]}}}}}}")
    return data
