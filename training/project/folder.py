"""An annotation project: one folder that the annotator and the ``medlsam`` command line both open.

The folder layout (the same whichever door wrote it)::

    <project>/
      <volumes>                    any layout ``find_cases`` reads: files, case folders, DICOM folders
      medlsam_project.json         the session: targets, templates, clicked points, statuses, locks, settings
      templates/<name>.json        extreme points per template and target, the CLI's format
                                   ('medlsam extreme-points'); the annotator writes one when six points are valid
      masks/<volume>.nii.gz        one label map per volume, every target in it, the volume's own geometry
      masks/labels.json            label value -> target name
      masks/medlsam_results.json   the last runs: per volume and target, box, status, spread, similarity
      masks/.previous/             a copy of every mask before a run or a tool replaced it

The session records which volumes are templates, the targets (name, label value, colour), each
template's extreme points per target (voxel indices of that volume, x, y, z), the chosen localizer,
segmenter, device, propagation mode and policy for existing labels, and each volume's status and
locked targets.  Every change is saved atomically, so reopening the folder resumes exactly where the
annotator stopped.  Opening also takes in what the CLI wrote: extreme-point files in ``templates/``
(newer than the session: the file wins), masks and failures of ``masks/medlsam_results.json``, and
target names from ``masks/labels.json``.  A corrupt session file is kept as a backup and the user is
told; volumes that moved are reported, their points kept.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..correction.votes import VOTES_DIR, load_votes, save_votes
from ..errors import DatasetError, MedLSAMError
from ..interop.colours import colour_hex
from ..localization.extreme_points import POINT_NAMES, ExtremePoints, point_conflict, template_volume_path
from ..options import LOCALIZER_ALIASES, LocalizerName, PropagationMode, choose
from ..segmentation.label_merge import check_policy
from ..volumes.atomic import write_json_atomic
from ..volumes.datasets import find_cases, label_names_near, read_label_names
from ..volumes.io import probe_volume
from ..volumes.volume import Geometry, Volume
from .pipeline import LABELS_NAME, RESULTS_NAME, target_confidence, write_label_names

SESSION_FILE = "medlsam_project.json"
TEMPLATES_DIR = "templates"
SCHEMA = "medlsam-project"
VERSION = 1
STATUSES = ("pending", "segmented", "reviewed", "failed", "missing")
UNREADABLE = "unreadable: "  # the start of a failed volume's error when its file cannot be read


class ProjectError(MedLSAMError, ValueError):
    """A project action that cannot be done (unknown target, duplicate label, ...)."""


class SimilarNameError(ProjectError):
    """A new target's name that looks like a typo of a name the folder or the project already has."""


def typo_distance(a: str, b: str) -> int:
    """Letters changed, added, dropped or swapped with a neighbour between ``a`` and ``b`` (optimal string
    alignment): 'mandibel' is 1 from 'mandible', 'parotid_left' 4 from 'parotid_right'."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


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
    locked: list[str] = field(default_factory=list)  # targets reviewed on this volume: never re-segmented
    error: str | None = None  # why it failed (unreadable file, last run's error): shown in full in the annotator
    #: per target, the axial slices the annotator drew or fixed: no automatic change alters them there
    corrected: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Project:
    folder: Path
    volumes: list[VolumeEntry] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    points: dict[str, dict[str, list[list[float] | None]]] = field(default_factory=dict)
    active_target: str | None = None
    localizer: str = LocalizerName.ATLAS.value  # best on the head-and-neck benchmark (docs/benchmarks.md, sec. 1)
    segmenter: str = "litemedsam"
    device: str = "auto"
    mode: str = PropagationMode.ATLAS.value
    existing: str = "keep"  # what re-segmenting a target does to labels there (training/segmentation/label_merge.py)
    output_dir: str = "masks"
    scheduler: str = ""  # a Dask scheduler's address for the annotator's runs ("" : this process, as always)
    point_files: dict[str, dict[str, str]] = field(default_factory=dict)  # volume -> target -> templates/ file
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
            raise ProjectError(f"{folder}: " + ("not a folder" if folder.exists() else "does not exist"))
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
        project._take_in_cli_outputs()
        project.save()
        return project

    def _load(self, data: dict[str, Any]) -> None:
        """The session from its parsed file.  Only a file that is no session at all raises; a bad value in one
        field is one message naming the file and the value, that field falls back (a volume's status to what its
        files show, an option to its default) and the rest of the session is kept."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError("not a medlsam project session")
        if data.get("version") != VERSION:
            raise ValueError(f"session version {data.get('version')} is not supported (expected {VERSION})")

        def bad(what: str, value: Any, instead: str) -> None:
            self.messages.append(f"{self.session_path}: {what} {str(value)[:80]!r} is not valid; {instead}, "
                                 "the rest of the session is kept.")

        for raw in _listed(data.get("targets"), "targets", bad):
            try:
                t = Target(str(raw["name"]), int(raw["label"]), str(raw.get("color") or colour_hex(int(raw["label"]))))
                if not t.name.strip() or not 0 < t.label < 65536 or any(o.name == t.name or o.label == t.label
                                                                         for o in self.targets):
                    raise ValueError(t)
                self.targets.append(t)
            except (KeyError, TypeError, ValueError):
                bad("target", raw, "it is left out (a labels.json beside the masks names it again)")
        self.volumes = []
        for raw in _listed(data.get("volumes"), "volumes", bad):
            entry = self._volume_entry(raw, bad)
            if entry is not None and all(v.name != entry.name for v in self.volumes):
                self.volumes.append(entry)
        points = data.get("points", {})
        try:
            self.points = {str(v): {str(t): [None if p is None else [float(c) for c in p] for p in slots]
                                    for t, slots in tp.items()} for v, tp in points.items()}
        except (AttributeError, TypeError, ValueError):
            bad("points", points, "the clicked points are taken from templates/ instead")
        point_files = data.get("point_files", {})
        try:
            self.point_files = {str(v): {str(t): str(f) for t, f in tf.items()} for v, tf in point_files.items()}
        except (AttributeError, TypeError, ValueError):
            bad("point_files", point_files, "they are found in templates/ again")
        for key, check in (("localizer", lambda v: choose(v, LocalizerName, "localizer", LOCALIZER_ALIASES).value),
                           ("mode", lambda v: choose(v, PropagationMode, "propagation mode").value),
                           ("existing", lambda v: check_policy(v).value),
                           ("segmenter", _text), ("device", _device), ("output_dir", _relative_folder),
                           ("scheduler", lambda v: "" if v is None else _text(v, empty=True)),
                           ("active_target", lambda v: None if v is None else _text(v))):
            if key not in data:
                continue
            try:
                setattr(self, key, check(data[key]))
            except (TypeError, ValueError) as exc:
                bad(key, data[key], f"{getattr(self, key)!r} is used"
                    + (f" ({str(exc).split(';')[0]})" if "did you mean" in str(exc) else ""))
        if self.active_target is not None and all(t.name != self.active_target for t in self.targets):
            self.active_target = self.targets[0].name if self.targets else None

    def _volume_entry(self, raw: Any, bad) -> VolumeEntry | None:
        """One volume of the session file; a bad field of it falls back alone (its status to what is on disk)."""
        try:
            entry = VolumeEntry(_text(raw["name"]), _text(raw["path"]))
        except (KeyError, TypeError, ValueError):
            bad("volume", raw, "it is left out (found again in the folder when its file is there)")
            return None
        fields = {"template": lambda v: v if isinstance(v, bool) else _fail_value(v),
                  "mask": lambda v: None if v is None else _text(v),
                  "error": lambda v: None if v is None else str(v),
                  "locked": lambda v: [_text(t) for t in v] if isinstance(v, list) else _fail_value(v),
                  "corrected": lambda v: {_text(t): sorted({int(z) for z in zs}) for t, zs in v.items()}}
        for key, check in fields.items():
            if key in raw:
                try:
                    setattr(entry, key, check(raw[key]))
                except (AttributeError, TypeError, ValueError):
                    bad(f"{entry.name}'s {key}", raw[key], "it is left empty")
        status = raw.get("status", "pending")
        if status in STATUSES:
            entry.status = status
        else:
            has_mask = entry.mask is not None and (self.folder / entry.mask).is_file()
            entry.status = "segmented" if has_mask else "pending"
            if entry.locked and has_mask and {t.name for t in self.targets} <= set(entry.locked):
                entry.status = "reviewed"  # every target locked: what mark_reviewed leaves
            bad(f"{entry.name}'s status", status, f"{entry.status!r} is taken from its files")
        return entry

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
            if v.status == "pending" or (v.status == "failed" and v.error and v.error.startswith(UNREADABLE)):
                try:  # its header only: a corrupt file is "failed", with its reason, from the start
                    probe_volume(self.volume_path(v.name))
                    if v.status == "failed":
                        v.status, v.error = "pending", None  # replaced by a readable file since
                except MedLSAMError as exc:
                    v.status, v.error = "failed", f"{UNREADABLE}{exc}"
        if not self.volumes:
            self.messages.append(f"{self.folder}: no volume found (NIfTI, NRRD, MHA or DICOM folders).")

    # --- what the command line wrote -------------------------------------------------------
    def _take_in_cli_outputs(self) -> None:
        """Masks, failures and target names of CLI runs, and extreme-point files in ``templates/``."""
        out = self.folder / self.output_dir
        summary: dict[str, Any] = {}
        if (out / RESULTS_NAME).is_file():
            try:
                summary = json.loads((out / RESULTS_NAME).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                self.messages.append(f"{out / RESULTS_NAME}: unreadable run summary ({exc}); ignored.")
            if not isinstance(summary, dict):
                self.messages.append(f"{out / RESULTS_NAME}: not a run summary; ignored.")
                summary = {}
            summary = {k: r for k, r in summary.items() if isinstance(r, dict)}
        names: dict[int, str] = {}
        if (out / LABELS_NAME).is_file():
            try:
                names = read_label_names(out / LABELS_NAME)
            except DatasetError as exc:
                self.messages.append(f"{exc}; target names not taken from it.")
        else:  # an older run: the names its summary gave each label
            for record in summary.values():
                for target, info in (record.get("targets") or {}).items():
                    if isinstance(info, dict) and info.get("label"):
                        names.setdefault(int(info["label"]), target)
        for value, name in sorted(names.items()):
            owner = next((t for t in self.targets if t.label == value), None)
            if owner is not None and owner.name != name:  # the voxels of that value are the project's target
                self.messages.append(f"{out / LABELS_NAME}: label {value} is named {name} there and {owner.name} "
                                     f"in this project; {owner.name} is used.")
                continue
            self._adopt_target(name, value, str(out / LABELS_NAME))
        for v in self.volumes:  # the last run's word first; a mask without one (copied in) counts as segmented
            if v.status not in ("pending", "failed"):
                continue
            last = summary.get(v.name, {}).get("status")
            has_mask = self.mask_path(v.name).is_file()
            if has_mask and (last == "done" or (last is None and v.status == "pending")):
                v.status, v.mask = "segmented", self._relative(self.mask_path(v.name))
            elif last == "failed":
                v.status, v.error = "failed", summary.get(v.name, {}).get("error") or v.error
        for file in sorted((self.folder / TEMPLATES_DIR).glob("*.json")):
            try:
                self._take_in_template_file(file)
            except MedLSAMError as exc:
                self.messages.append(f"{exc}; not used.")

    def _adopt_target(self, name: str, value: int, where: str) -> Target:
        """The project's target of that name, added when new; a different label value is reported, ours kept."""
        for t in self.targets:
            if t.name == name:
                if value and t.label != value:
                    self.messages.append(f"{where}: {name} has label {value} there and {t.label} in this project; "
                                         f"{t.label} is used.")
                return t
        if value and any(t.label == value for t in self.targets):
            value = 0  # taken by another target: the next free value
        return self._append_target(name, value or max((t.label for t in self.targets), default=0) + 1)

    def _append_target(self, name: str, label: int) -> Target:
        target = Target(name, int(label), colour_hex(label))  # by value: the colour every export gives it
        self.targets.append(target)
        self.active_target = self.active_target or name
        return target

    def _take_in_template_file(self, file: Path) -> None:
        ep = ExtremePoints.load(file)
        volume = self._volume_of(file, ep.template_path or "")
        if volume is None:
            raise ProjectError(f"{file}: its template {ep.template_path} is not a volume of this project")
        target = self._adopt_target(ep.target, int(ep.label or 0), str(file))
        indices = ep.indices()  # inside the template: ExtremePoints.load checked them against its geometry
        slots = self.points.get(volume, {}).get(target.name)
        complete = slots is not None and all(p is not None for p in slots)
        newer = not self.session_path.is_file() or file.stat().st_mtime > self.session_path.stat().st_mtime
        if not complete or (newer and not np.allclose(np.array(slots, float), indices, atol=1e-3)):
            if complete:
                self.messages.append(f"{file.name} is newer than the session: its {target.name} points on {volume} "
                                     "replace the clicked ones.")
            self.points.setdefault(volume, {})[target.name] = [[float(v) for v in i] for i in indices]
        self.entry(volume).template = True
        self.point_files.setdefault(volume, {})[target.name] = self._relative(file)

    def _volume_of(self, file: Path, template_path: str) -> str | None:
        """The project volume a template file names: the same path, else the same trailing path parts."""
        wanted = template_volume_path(file, template_path).resolve() if template_path else None
        for v in self.volumes:
            if wanted is not None and self.volume_path(v.name).resolve() == wanted:
                return v.name
        tail = Path(template_path).parts
        for v in self.volumes:  # a relative path written from another working folder
            parts = Path(v.path).parts
            n = min(len(parts), len(tail))
            if n and parts[-n:] == tail[-n:] and (n > 1 or len(parts) == 1):
                return v.name
        return None

    def template_file(self, volume: str, target: str) -> Path:
        """Where a template's extreme points of ``target`` are exported for the CLI."""
        rel = self.point_files.get(volume, {}).get(target)
        return self.folder / rel if rel else self.folder / TEMPLATES_DIR / f"{volume}_{target}.json"

    def export_template(self, volume: Volume, name: str, target: str) -> Path:
        """Write ``templates/<volume>_<target>.json`` (CLI format) from the six clicked points.

        An existing file with the same points is left as it is (it may hold SPL slabs the session does not).
        """
        ep = self.extreme_points(volume, name, target)
        path = self.template_file(name, target)
        if path.is_file():
            try:
                old = ExtremePoints.load(path)
                if old.target == target and np.allclose(old.points_mm, ep.points_mm, atol=1e-3):
                    return path
            except MedLSAMError:
                pass  # unreadable: rewritten below
        data = ep.to_json()
        # relative to the file, so that the project folder can move (load_templates resolves it so)
        data["template"]["path"] = os.path.relpath(self.volume_path(name), path.parent)
        write_json_atomic(data, path)
        self.point_files.setdefault(name, {})[target] = self._relative(path)
        self.save()
        return path

    def _drop_template_file(self, volume: str, target: str) -> None:
        """Points no longer complete (or the target gone): the CLI must not run the stale file."""
        rel = self.point_files.get(volume, {}).pop(target, None)
        path = self.folder / rel if rel else self.template_file(volume, target)
        if path.is_file():
            path.unlink()

    def write_label_names(self) -> None:
        """``masks/labels.json`` from the targets, so masks carry their names to Slicer, reports and evaluate."""
        out = self.folder / self.output_dir
        if self.targets or (out / LABELS_NAME).is_file():
            write_label_names(out, {t.name: t.label for t in self.targets}, replace=True)

    def _relative(self, path: Path) -> str:
        """A path inside the project as the user sees it (a symlinked volume stays the link, not its target), so
        the folder can move; a path outside it stays absolute."""
        for candidate in (Path(os.path.abspath(path)), Path(path).resolve()):
            try:
                return str(candidate.relative_to(self.folder))
            except ValueError:
                continue
        return os.path.abspath(path)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": VERSION, "volumes": [asdict(v) for v in self.volumes],
                "targets": [asdict(t) for t in self.targets], "points": self.points,
                "active_target": self.active_target, "localizer": self.localizer, "segmenter": self.segmenter,
                "device": self.device, "mode": self.mode, "existing": self.existing, "output_dir": self.output_dir,
                "scheduler": self.scheduler, "point_files": self.point_files}

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

    def run_summary(self) -> dict[str, Any]:
        """``masks/medlsam_results.json`` (the last runs, per volume), or {} when absent or unreadable."""
        try:
            summary = json.loads((self.folder / self.output_dir / RESULTS_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return summary if isinstance(summary, dict) else {}

    def review_hint(self, name: str, summary: dict[str, Any] | None = None) -> tuple[float | None, str]:
        """(the least confidence over the volume's targets in the last run, a short note naming doubtful ones)
        from the run summary; (None, "") when no run localized it."""
        record = (self.run_summary() if summary is None else summary).get(name)
        targets = record.get("targets") if isinstance(record, dict) else None
        if not isinstance(targets, dict) or not targets:
            return None, ""
        scored = []
        for target, info in targets.items():
            if isinstance(info, dict):
                scored.append((target_confidence(info), target, str(info.get("status", ""))))
        known = [s for s in scored if s[0] is not None]
        worst = min(known) if known else None
        notes = [f"{t} {st}" for _, t, st in scored if st and st != "found"]
        if worst is not None:
            info = targets[worst[1]]
            what = ("not found" if info.get("status") == "not found" else "its templates' masks agree"
                    if isinstance(info.get("agreement"), (int, float)) else "its templates match the scan")
            # what the number is: agreement between templates, never a score against the truth
            notes.insert(0, f"least sure: {worst[1]} {worst[0]:.2f} ({what}; not a Dice to the truth)")
        return (worst[0] if worst else None), "; ".join(notes)

    def review_order(self, hints: dict[str, tuple[float | None, str]] | None = None) -> list[VolumeEntry]:
        """Volumes in the order to look at them: segmented ones to review, least confident first (the last
        run's templates agreed least there), then the rest as the project lists them."""
        if hints is None:
            summary = self.run_summary()
            hints = {v.name: self.review_hint(v.name, summary) for v in self.volumes}
        to_review = [v for v in self.volumes if v.status == "segmented" and not v.template]
        to_review.sort(key=lambda v: (hints[v.name][0] is None, hints[v.name][0] or 0.0))
        return to_review + [v for v in self.volumes if v not in to_review]

    def mask_path(self, name: str) -> Path:
        return self.folder / self.output_dir / f"{name}.nii.gz"

    def set_template(self, name: str, is_template: bool = True) -> None:
        self.entry(name).template = is_template
        if not is_template:
            for target in list(self.point_files.get(name, {})):
                self._drop_template_file(name, target)
        self.save()

    def set_status(self, name: str, status: str, mask: Path | None = None, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ProjectError(f"unknown status {status!r}")
        entry = self.entry(name)
        entry.status = status
        entry.error = error if status == "failed" else None
        if mask is not None:
            entry.mask = self._relative(mask)
        self.save()

    # --- review locks ---------------------------------------------------------------------
    def locked_targets(self, name: str) -> list[str]:
        """Targets never to re-segment or overwrite on this volume: all of them once it is reviewed."""
        entry = self.entry(name)
        if entry.status == "reviewed":
            return [t.name for t in self.targets]
        return [t.name for t in self.targets if t.name in entry.locked]

    def set_locked(self, name: str, target: str, locked: bool = True) -> None:
        """Lock (reviewed) or unlock one target of a volume; unlocking one of a reviewed volume un-reviews it."""
        self.target(target)
        entry = self.entry(name)
        if locked and target not in entry.locked:
            entry.locked.append(target)
        elif not locked:
            if entry.status == "reviewed":
                entry.locked = [t.name for t in self.targets]
                entry.status = "segmented" if entry.mask else "pending"
            entry.locked = [t for t in entry.locked if t != target]
        self.save()

    def corrected_slices(self, name: str, target: str) -> list[int]:
        """The axial slices of ``target`` the annotator drew or fixed on volume ``name`` (sorted)."""
        return list(self.entry(name).corrected.get(target, []))

    def all_corrected(self, name: str) -> list[int]:
        """Every axial slice of volume ``name`` corrected for any target: what an automatic change never alters."""
        return sorted({z for zs in self.entry(name).corrected.values() for z in zs})

    def add_corrected(self, name: str, target: str, slices: Iterable[int]) -> bool:
        """Record slices of ``target`` as corrected on volume ``name``; True when any was new (then saved)."""
        self.target(target)  # an unknown target is an error, not a silent record
        entry = self.entry(name)
        known = set(entry.corrected.get(target, []))
        new = {int(z) for z in slices} - known
        if not new:
            return False
        entry.corrected[target] = sorted(known | new)
        self.save()
        return True

    def clear_corrected(self, name: str, target: str | None = None) -> None:
        """Forget the corrected slices of one target (or all) on volume ``name``."""
        entry = self.entry(name)
        if target is None:
            entry.corrected.clear()
        else:
            entry.corrected.pop(target, None)
        self.save()

    def mark_reviewed(self, name: str) -> None:
        """The whole volume is reviewed: every target locked, the volume never re-segmented."""
        entry = self.entry(name)
        entry.status = "reviewed"
        entry.locked = [t.name for t in self.targets]
        self.save()

    @property
    def templates(self) -> list[str]:
        return [v.name for v in self.volumes if v.template and v.status != "missing"]

    @property
    def queries(self) -> list[str]:
        return [v.name for v in self.volumes if not v.template and v.status != "missing"]

    @property
    def to_segment(self) -> list[str]:
        """What a run segments: the queries and the template volumes (their own targets from their points)."""
        return [v.name for v in self.volumes if v.status != "missing"]

    # --- targets --------------------------------------------------------------------------
    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        names = [t.name for t in self.targets]
        close = difflib.get_close_matches(name, names, n=1)
        raise ProjectError(f"no target named {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                           + (f"; the project's targets: {', '.join(names)}" if names else "; the project has none"))

    def similar_name(self, name: str) -> tuple[str, int] | None:
        """A target name the folder offers or the project has that ``name`` looks like a typo of (one or two letters
        changed, swapped, added or dropped), with its label value; None when there is none."""
        offered = self.offered_targets()
        if name in offered:
            return None
        known = {**offered, **{t.name: t.label for t in self.targets}}

        def letters(text: str) -> str:  # rib_left_3 and rib_left_4 are two targets, not a typo
            return "".join(c for c in text.lower() if not c.isdigit())

        near = [(typo_distance(name.lower(), k.lower()), k) for k in known
                if k != name and letters(k) != letters(name)]
        near = [(d, k) for d, k in near if d <= (1 if len(name) < 6 else 2)]
        return (min(near)[1], known[min(near)[1]]) if near else None

    def offered_targets(self) -> dict[str, int]:
        """Structures the folder already names (a labels.json or dataset.json beside its volumes, or the folder's
        own), with their label values, less the project's targets: what the annotator offers as targets."""
        names: dict[int, str] = {}
        for v in self.volumes:
            path = self.volume_path(v.name)
            try:
                found = label_names_near(path, levels=len(path.relative_to(self.folder).parts) - 1)
            except (DatasetError, ValueError):  # an unreadable names file offers nothing; elsewhere it is an error
                continue
            for value, name in found.items():
                names.setdefault(value, name)
        taken = {t.name for t in self.targets} | {str(t.label) for t in self.targets}
        return {name: value for value, name in sorted(names.items())
                if name not in taken and str(value) not in taken}

    def add_target(self, name: str, label: int | None = None, *, similar_ok: bool = False) -> Target:
        """Add a target; a name that looks like a typo of one the folder or the project already names is refused
        (:class:`SimilarNameError`, naming it) unless ``similar_ok``."""
        name = name.strip()
        if not name:
            raise ProjectError("a target needs a name")
        if any(t.name == name for t in self.targets):
            raise ProjectError(f"a target named {name!r} exists already")
        similar = None if similar_ok else self.similar_name(name)
        if similar is not None:
            owner = "this project" if any(t.name == similar[0] for t in self.targets) else "the folder"
            raise SimilarNameError(f"{name!r} looks like {similar[0]!r} (label {similar[1]}), which {owner} names: "
                                   f"use {similar[0]!r}, or add {name!r} again to keep the new name")
        label = label or max((t.label for t in self.targets), default=0) + 1
        if not 0 < label < 65536 or any(t.label == label for t in self.targets):
            raise ProjectError(f"label value {label} is invalid or used by another target")
        target = self._append_target(name, label)
        self.write_label_names()
        self.save()
        return target

    def rename_target(self, old: str, new: str) -> None:
        new = new.strip()
        if not new or any(t.name == new for t in self.targets):
            raise ProjectError(f"cannot rename {old!r} to {new!r}: empty or already used")
        for volume in list(self.point_files):
            if old in self.point_files[volume]:
                self._drop_template_file(volume, old)  # rewritten under the new name when next exported
        self.target(old).name = new
        for per_volume in self.points.values():
            if old in per_volume:
                per_volume[new] = per_volume.pop(old)
        for v in self.volumes:
            v.locked = [new if t == old else t for t in v.locked]
            if old in v.corrected:
                v.corrected[new] = v.corrected.pop(old)
        if self.active_target == old:
            self.active_target = new
        self._rename_in_outputs(old, new)
        self.write_label_names()
        self.save()

    def _rename_in_outputs(self, old: str, new: str | None) -> None:
        """What the runs stored under a target's name beside the masks follows it: the atlas's votes
        (``.votes/``, which every later update of the target re-fuses) and the run summary's records; ``new``
        None drops them (a deleted target: a later one of that name starts clean)."""
        out = self.folder / self.output_dir
        for path in sorted((out / VOTES_DIR).glob("*.npz")):
            try:
                votes = load_votes(path)
            except (OSError, ValueError, KeyError) as exc:
                self.messages.append(f"{path}: unreadable votes ({exc}); left as they are")
                continue
            if old in votes:
                moved = votes.pop(old)
                if new is not None:
                    votes[new] = moved
                if votes:
                    save_votes(votes, path)
                else:
                    path.unlink()
        summary = self.run_summary()
        changed = False
        for record in summary.values():
            targets = record.get("targets") if isinstance(record, dict) else None
            if isinstance(targets, dict) and old in targets:
                moved = targets.pop(old)
                if new is not None:
                    targets[new] = moved
                changed = True
        if changed:
            write_json_atomic(summary, out / RESULTS_NAME)

    def delete_target(self, name: str) -> None:
        self.targets.remove(self.target(name))
        for volume in list(self.point_files):
            if name in self.point_files[volume]:
                self._drop_template_file(volume, name)
        for per_volume in self.points.values():
            per_volume.pop(name, None)
        for v in self.volumes:
            v.locked = [t for t in v.locked if t != name]
            v.corrected.pop(name, None)
        self._rename_in_outputs(name, None)
        self.write_label_names()
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

    def set_point(self, volume: str, target: str, which: int, index_xyz: Any, size_xyz: tuple[int, int, int],
                  geometry: Geometry | None = None) -> None:
        """Record one clicked point (voxel index x, y, z); refuses points outside the volume and, with the volume's
        ``geometry``, a point on top of another or on the wrong side of one (the left point right of the right)."""
        idx = np.asarray(index_xyz, dtype=float)
        if idx.shape != (3,) or not np.all(np.isfinite(idx)):
            raise ProjectError(f"a point needs three finite coordinates, got {index_xyz}")
        if np.any(idx < -0.5) or np.any(idx > np.asarray(size_xyz) - 0.5):
            raise ProjectError(f"the point {np.round(idx, 1).tolist()} lies outside the volume of size {size_xyz}")
        if geometry is not None:
            slots = self.point_slots(volume, target)
            mm = [None if p is None else geometry.index_to_physical(p) for p in slots]
            conflict = point_conflict(mm, which, geometry.index_to_physical(idx), 0.5 * min(geometry.spacing))
            if conflict:
                raise ProjectError(conflict)  # the caller says it was not taken ("Point not taken: ...")
        self.point_slots(volume, target)[which] = [float(v) for v in idx]
        self._drop_template_file(volume, target)  # exported again once the six points are valid
        self.save()

    def clear_point(self, volume: str, target: str, which: int) -> None:
        self.point_slots(volume, target)[which] = None
        self._drop_template_file(volume, target)
        self.save()

    def extreme_points(self, volume: Volume, name: str, target: str) -> ExtremePoints:
        """The validated ExtremePoints of a target on a template (raises with the reason when incomplete)."""
        slots = self.point_slots(name, target)
        missing = [POINT_NAMES[i] for i, p in enumerate(slots) if p is None]
        if missing:
            raise ProjectError(f"{target} on {name}: {6 - len(missing)} of six points set; "
                               f"missing {', '.join(missing)}")
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


def _listed(value: Any, what: str, bad) -> list:
    if isinstance(value, list):
        return value
    bad(what, value, "found again from the folder")
    return []


def _fail_value(value: Any):
    raise ValueError(value)


def _text(value: Any, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ValueError(value)
    return value


def _device(value: Any) -> str:
    text = _text(value).strip().lower()
    if text not in ("auto", "cpu", "mps") and not (text.startswith("cuda") and text[4:] in ("", *(
            f":{i}" for i in range(64)))):
        raise ValueError(value)
    return text


def _relative_folder(value: Any) -> str:
    text = _text(value)
    if Path(text).is_absolute() or ".." in Path(text).parts:
        raise ValueError(value)
    return text
