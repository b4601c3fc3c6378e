"""The guarded writer: every automatic change of a volume's label map (a run, a correction update, a
pre-segmentation; in this process or on a Dask worker) passes through :func:`guard_change` and, when it goes to
disk, :func:`write_automatic`.

What it keeps, whatever the source computed:

* a reviewed volume is never written;
* a locked (reviewed) target's voxels never change, and no voxel becomes a locked target;
* a corrected axial slice (drawn or fixed by the annotator, for any target) stays as it was, background included;
* a voxel only becomes a target the source may write (one it learned, or was given a template for), and only such a
  target's voxels may become background: a source never erases what it does not know.

Each write also records what it left on every axial slice of every target (``.auto/<case>.json`` beside the masks),
so that a slice later claimed as corrected can be told from one nobody changed (:func:`unchanged_slices`).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MedLSAMError
from ..volumes.atomic import keep_previous, write_json_atomic
from ..volumes.io import write_mask
from ..volumes.volume import Volume

log = logging.getLogger(__name__)
AUTO_DIR = ".auto"


class ReviewedVolumeError(MedLSAMError, ValueError):
    """An automatic write to a volume the annotator marked reviewed."""


@dataclass(frozen=True)
class WriteGuard:
    """What one automatic write to one volume's label map must keep (label values, axial slice indices)."""

    volume: str
    writable: frozenset[int]  # values the source may write: targets it learned or was given a template for
    locked: frozenset[int] = frozenset()  # values of locked (reviewed) targets: never changed
    corrected: tuple[int, ...] = ()  # axial slices the annotator drew or fixed: never changed
    reviewed: bool = False  # the whole volume is reviewed: nothing is written

    @classmethod
    def of(cls, volume: str, writable: Iterable[int], locked: Iterable[int] = (), corrected: Iterable[int] = (),
           reviewed: bool = False) -> "WriteGuard":
        return cls(volume, frozenset(int(v) for v in writable), frozenset(int(v) for v in locked),
                   tuple(sorted({int(z) for z in corrected})), reviewed)

    @classmethod
    def for_project(cls, project, name: str, targets: Iterable[str]) -> "WriteGuard":
        """The guard of volume ``name`` of a :class:`~.folder.Project` for a source that writes ``targets``."""
        values = {t.name: t.label for t in project.targets}
        locked = project.locked_targets(name)
        return cls.of(name, [values[t] for t in targets if t in values and t not in locked],
                      [values[t] for t in locked if t in values], project.all_corrected(name),
                      project.entry(name).status == "reviewed")


@dataclass
class GuardReport:
    """What a guard refused, in voxels, by reason (a corrected slice kept is the rule, not a warning)."""

    locked: int = 0
    unknown: int = 0  # changes to or from targets the source may not write
    corrected: int = 0
    values: set[int] = field(default_factory=set)  # the values it refused to write


def guard_change(before: np.ndarray | None, after: np.ndarray, guard: WriteGuard
                 ) -> tuple[np.ndarray, GuardReport]:
    """``after`` less every change ``guard`` forbids (``before``: the label map on disk, None when there is none)
    -> (the label map to write, what was refused)."""
    after = np.asarray(after)
    if guard.reviewed:
        raise ReviewedVolumeError(f"{guard.volume} is reviewed: an automatic write to it is refused")
    before = np.zeros(after.shape, after.dtype) if before is None else np.asarray(before)
    if before.shape != after.shape:
        raise ValueError(f"{guard.volume}: a label map of shape {after.shape} cannot replace one of {before.shape}")
    changed = before != after
    report = GuardReport()
    if not changed.any():
        return after.astype(np.result_type(before.dtype, after.dtype), copy=True), report
    writable = list(guard.writable)
    new_ok = np.isin(after, writable) | ((after == 0) & np.isin(before, writable))
    lockedv = list(guard.locked)
    touches_locked = (np.isin(before, lockedv) | np.isin(after, lockedv)) if lockedv else np.zeros_like(changed)
    refused_unknown = changed & ~new_ok & ~touches_locked
    refused_locked = changed & touches_locked
    out = np.where(changed & new_ok & ~touches_locked, after, before).astype(np.result_type(before.dtype,
                                                                                           after.dtype))
    zs = [z for z in guard.corrected if 0 <= z < out.shape[0]]
    if zs:
        report.corrected = int((out[zs] != before[zs]).sum())
        out[zs] = before[zs]
    report.locked, report.unknown = int(refused_locked.sum()), int(refused_unknown.sum())
    report.values = {int(v) for v in np.unique(after[refused_unknown | refused_locked])} - {0}
    if report.locked or report.unknown:
        log.warning("%s: the guarded writer refused %d voxel(s) of locked targets and %d of targets its source may "
                    "not write (values %s)", guard.volume, report.locked, report.unknown, sorted(report.values))
    return out, report


def write_automatic(path: str | Path, reference: Volume, before: np.ndarray | None, after: np.ndarray,
                    guard: WriteGuard) -> tuple[np.ndarray, Path | None]:
    """Guard ``after`` against ``before`` (the file's label map; None when there is none), keep the file being
    replaced in ``.previous/``, write atomically with ``reference``'s geometry and record each slice of what it
    wrote -> (the label map written, the copy of the one it replaced or None)."""
    path = Path(path)
    out, _ = guard_change(before, after, guard)
    top = int(out.max()) if out.size else 0
    out = out.astype(np.uint16 if top > 255 else np.uint8, copy=False)
    backup = keep_previous(path)
    write_mask(out, reference, path)
    record_automatic(path, None if before is None else np.asarray(before), out)
    return out, backup


def _auto_path(mask: Path) -> Path:
    name = mask.name[:-7] if mask.name.endswith(".nii.gz") else mask.stem
    return mask.parent / AUTO_DIR / f"{name}.json"


def _digests(label_map: np.ndarray, value: int) -> list[int]:
    return [zlib.crc32(np.packbits(s == value).tobytes()) for s in label_map]


def _read_record(mask: Path, shape: tuple[int, ...]) -> dict[str, list[int | None]] | None:
    try:
        data = json.loads(_auto_path(Path(mask)).read_text(encoding="utf-8"))
        return data["values"] if list(data["shape"]) == list(shape) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_automatic(mask: Path, before: np.ndarray | None, label_map: np.ndarray) -> Path:
    """Per target value and axial slice, a checksum of what automatic writes left (``.auto/<case>.json``): a slice
    this write changed gets its new checksum; one it left alone keeps its earlier record, or none (null) where no
    automatic write made it (drawn or imported by a person)."""
    previous = _read_record(mask, label_map.shape) if before is not None else None
    values = sorted({int(v) for v in np.unique(label_map) if v} | {int(v) for v in (previous or {})})
    record: dict[str, list[int | None]] = {}
    for v in values:
        now = _digests(label_map, v)
        if before is None:
            record[str(v)] = now
            continue
        old = (previous or {}).get(str(v)) or [None] * len(now)
        changed = [bool(np.any((b == v) != (a == v))) for b, a in zip(before, label_map)]
        record[str(v)] = [n if c else o for n, o, c in zip(now, old, changed)]
    return write_json_atomic({"shape": list(label_map.shape), "values": record}, _auto_path(Path(mask)))


def unchanged_slices(mask: Path, label_map: np.ndarray, value: int, slices: Collection[int]) -> list[int]:
    """Of ``slices``, those where target ``value`` is exactly as an automatic write of ``mask`` left it (nobody
    corrected it since); [] where no automatic write is recorded (a mask drawn by hand: every slice is the user's)."""
    record = _read_record(mask, label_map.shape)
    if record is None:
        return []
    empty = zlib.crc32(np.packbits(np.zeros(label_map.shape[1:], bool)).tobytes())
    # a value no automatic write left anywhere: its slices were empty after each (when any was recorded)
    recorded = record.get(str(int(value))) or [empty] * label_map.shape[0]
    now = _digests(label_map, value)
    return [z for z in sorted({int(s) for s in slices}) if 0 <= z < len(now) and recorded[z] == now[z]]
