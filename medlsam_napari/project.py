"""An annotation project: a folder of volumes plus a versioned session file (no Qt here, testable alone).

The session records which volumes are templates, the targets (name, label value, colour), each
template's extreme points per target (voxel indices of that volume, x, y, z), the chosen localizer,
segmenter, device and propagation mode, and each volume's status.  Every change is saved atomically,
so reopening the folder resumes exactly where the annotator stopped.  A corrupt session file is kept
as a backup and the user is told; volumes that moved are reported, their points kept.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlsam_training.atomic import write_json_atomic
from medlsam_training.datasets import find_cases
from medlsam_training.errors import DatasetError, MedLSAMError
from medlsam_training.extreme_points import POINT_NAMES, ExtremePoints
from medlsam_training.volume import Volume

SESSION_FILE = "medlsam_project.json"
SCHEMA = "medlsam-project"
VERSION = 1
STATUSES = ("pending", "segmented", "reviewed", "failed", "missing")
PALETTE = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe")


class ProjectError(MedLSAMError, ValueError):
    """A project action that cannot be done (unknown target, duplicate label, ...)."""


@dataclass
class Target:
    name: str
    label: int
    color: str


@dataclass
class VolumeEntry:
    name: str
    path: str
    template: bool = False
    status: str = "pending"
    mask: str | None = None


@dataclass
class Project:
    folder: Path
    volumes: list[VolumeEntry] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    points: dict[str, dict[str, list[list[float] | None]]] = field(default_factory=dict)
    active_target: str | None = None
    localizer: str = "medlam"  # best on the head-and-neck benchmark (docs/benchmarks.md, section 1)
    segmenter: str = "litemedsam"
    device: str = "auto"
    mode: str = "mask"
    output_dir: str = "masks"
    messages: list[str] = field(default_factory=list)  # what opening found (moved files, backups); not saved

    # --- opening and saving ---------------------------------------------------------------
    @property
    def session_path(self) -> Path:
        return self.folder / SESSION_FILE

    @classmethod
    def open(cls, folder: str | Path) -> "Project":
        """Resume the session in ``folder``, or start one over the volumes found there."""
        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise ProjectError(f"{folder}: not a folder")
        project = cls(folder)
        if project.session_path.is_file():
            try:
                project._load(json.loads(project.session_path.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                backup = folder / f"{SESSION_FILE}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
                shutil.copy2(project.session_path, backup)
                project = cls(folder)
                project.messages.append(f"The session file was unreadable ({exc}); it was kept as {backup.name} "
                                        "and a new session was started.")
        project._discover()
        project.save()
        return project

    def _load(self, data: dict[str, Any]) -> None:
        if data.get("schema") != SCHEMA:
            raise ValueError("not a medlsam project session")
        if data.get("version") != VERSION:
            raise ValueError(f"session version {data.get('version')} is not supported (expected {VERSION})")
        self.volumes = [VolumeEntry(**v) for v in data["volumes"]]
        self.targets = [Target(**t) for t in data["targets"]]
        self.points = {v: {t: list(p) for t, p in tp.items()} for v, tp in data.get("points", {}).items()}
        for key in ("active_target", "localizer", "segmenter", "device", "mode", "output_dir"):
            if key in data:
                setattr(self, key, data[key])
        for v in self.volumes:
            if v.status not in STATUSES:
                raise ValueError(f"volume {v.name}: unknown status {v.status!r}")

    def _discover(self) -> None:
        """Add volumes that appeared in the folder; flag those that moved."""
        known = {v.name for v in self.volumes}
        try:
            cases = find_cases(self.folder)
        except DatasetError:
            cases = []
        out_dir = (self.folder / self.output_dir).resolve()
        for case in cases:
            if out_dir in case.image.resolve().parents:
                continue  # our own masks are not volumes to annotate
            if case.name not in known:
                self.volumes.append(VolumeEntry(case.name, self._relative(case.image)))
        for v in self.volumes:
            if not self.volume_path(v.name).exists():
                if v.status != "missing":
                    self.messages.append(f"{v.name}: {v.path} is missing (moved or deleted); its points are kept.")
                v.status = "missing"
            elif v.status == "missing":
                v.status = "segmented" if v.mask and (self.folder / v.mask).is_file() else "pending"
        if not self.volumes:
            self.messages.append(f"{self.folder}: no volume found (NIfTI, NRRD, MHA or DICOM folders).")

    def _relative(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.folder))
        except ValueError:
            return str(Path(path).resolve())

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": VERSION, "volumes": [asdict(v) for v in self.volumes],
                "targets": [asdict(t) for t in self.targets], "points": self.points,
                "active_target": self.active_target, "localizer": self.localizer, "segmenter": self.segmenter,
                "device": self.device, "mode": self.mode, "output_dir": self.output_dir}

    def save(self) -> None:
        write_json_atomic(self.to_json(), self.session_path)

    # --- volumes --------------------------------------------------------------------------
    def entry(self, name: str) -> VolumeEntry:
        for v in self.volumes:
            if v.name == name:
                return v
        raise ProjectError(f"no volume named {name!r} in this project")

    def volume_path(self, name: str) -> Path:
        p = Path(self.entry(name).path)
        return p if p.is_absolute() else self.folder / p

    def keep_previous_mask(self, name: str) -> Path | None:
        """Copy a volume's existing mask to ``<masks>/.previous/`` before something replaces it."""
        existing = self.mask_path(name)
        if not existing.is_file():
            return None
        backup = existing.parent / ".previous" / existing.name
        backup.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(existing, backup)
        return backup

    def mask_path(self, name: str) -> Path:
        return self.folder / self.output_dir / f"{name}.nii.gz"

    def set_template(self, name: str, is_template: bool = True) -> None:
        self.entry(name).template = is_template
        self.save()

    def set_status(self, name: str, status: str, mask: Path | None = None) -> None:
        if status not in STATUSES:
            raise ProjectError(f"unknown status {status!r}")
        entry = self.entry(name)
        entry.status = status
        if mask is not None:
            entry.mask = self._relative(mask)
        self.save()

    @property
    def templates(self) -> list[str]:
        return [v.name for v in self.volumes if v.template and v.status != "missing"]

    @property
    def queries(self) -> list[str]:
        return [v.name for v in self.volumes if not v.template and v.status != "missing"]

    # --- targets --------------------------------------------------------------------------
    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise ProjectError(f"no target named {name!r}")

    def add_target(self, name: str, label: int | None = None) -> Target:
        name = name.strip()
        if not name:
            raise ProjectError("a target needs a name")
        if any(t.name == name for t in self.targets):
            raise ProjectError(f"a target named {name!r} exists already")
        label = label or max((t.label for t in self.targets), default=0) + 1
        if not 0 < label < 65536 or any(t.label == label for t in self.targets):
            raise ProjectError(f"label value {label} is invalid or used by another target")
        target = Target(name, int(label), PALETTE[len(self.targets) % len(PALETTE)])
        self.targets.append(target)
        self.active_target = self.active_target or name
        self.save()
        return target

    def rename_target(self, old: str, new: str) -> None:
        new = new.strip()
        if not new or any(t.name == new for t in self.targets):
            raise ProjectError(f"cannot rename {old!r} to {new!r}: empty or already used")
        self.target(old).name = new
        for per_volume in self.points.values():
            if old in per_volume:
                per_volume[new] = per_volume.pop(old)
        if self.active_target == old:
            self.active_target = new
        self.save()

    def delete_target(self, name: str) -> None:
        self.targets.remove(self.target(name))
        for per_volume in self.points.values():
            per_volume.pop(name, None)
        if self.active_target == name:
            self.active_target = self.targets[0].name if self.targets else None
        self.save()

    # --- extreme points -------------------------------------------------------------------
    def point_slots(self, volume: str, target: str) -> list[list[float] | None]:
        self.target(target)
        return self.points.setdefault(volume, {}).setdefault(target, [None] * len(POINT_NAMES))

    def next_point(self, volume: str, target: str) -> int | None:
        """Index (into POINT_NAMES) of the first point still to click, None when all six are set."""
        slots = self.point_slots(volume, target)
        return next((i for i, p in enumerate(slots) if p is None), None)

    def set_point(self, volume: str, target: str, which: int, index_xyz: Any, size_xyz: tuple[int, int, int]) -> None:
        """Record one clicked point (voxel index x, y, z); refuses points outside the volume."""
        idx = np.asarray(index_xyz, dtype=float)
        if idx.shape != (3,) or not np.all(np.isfinite(idx)):
            raise ProjectError(f"a point needs three finite coordinates, got {index_xyz}")
        if np.any(idx < -0.5) or np.any(idx > np.asarray(size_xyz) - 0.5):
            raise ProjectError(f"the point {np.round(idx, 1).tolist()} lies outside the volume of size {size_xyz}")
        self.point_slots(volume, target)[which] = [float(v) for v in idx]
        self.save()

    def clear_point(self, volume: str, target: str, which: int) -> None:
        self.point_slots(volume, target)[which] = None
        self.save()

    def extreme_points(self, volume: Volume, name: str, target: str) -> ExtremePoints:
        """The validated ExtremePoints of a target on a template (raises with the reason when incomplete)."""
        slots = self.point_slots(name, target)
        missing = [POINT_NAMES[i] for i, p in enumerate(slots) if p is None]
        if missing:
            raise ProjectError(f"{target} on {name}: {6 - len(missing)} of six points set; missing {', '.join(missing)}")
        t = self.target(target)
        return ExtremePoints.from_index_points(target, t.label, volume, np.array(slots))

    def ready_templates(self) -> dict[str, list[str]]:
        """Template name -> targets whose six points are complete on it."""
        out: dict[str, list[str]] = {}
        for name in self.templates:
            done = [t.name for t in self.targets if self.next_point(name, t.name) is None]
            if done:
                out[name] = done
        return out
