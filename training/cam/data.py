"""Tagged training cases from a labelled dataset: tags derived from masks (for benchmarks and tests) or read
from a tag file; a target a case does not contain is unknown there, never absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..progress import ProgressFn
from ..report.measure import guess_modality
from ..volumes.datasets import Case, find_cases, split_members
from ..volumes.volume import orient
from .classifier import PreparedSlices, prepare_slices
from .tags import UNKNOWN, tags_from_mask, tags_from_ranges

#: label maps kept beside ``labelsTr/`` in a folder of their own, and where their value names are: OpenKBP's
#: radiotherapy target volumes (``ptvTr/``, names in manifest.json's "ptv_labels")
LABEL_FOLDERS = {"ptvTr": ("manifest.json", "ptv_labels")}


def labelled_cases(root: str | Path, split: str | None = None, recommended_only: bool = False,
                   labels: str | None = None) -> list[Case]:
    """The labelled cases of ``root`` (a split of its manifest, its recommended cases); with ``labels`` a folder
    of ``LABEL_FOLDERS`` (e.g. "ptvTr"), that folder's label maps instead of ``labelsTr/``."""
    cases = find_cases(root, require_labels=True)
    members = split_members(root, split)
    if members is not None:
        cases = [c for c in cases if c.name in members]
    manifest = Path(root) / "manifest.json"
    if recommended_only and manifest.is_file():
        ok = {c["patient"] for c in json.loads(manifest.read_text())["cases"] if c.get("recommended", True)}
        cases = [c for c in cases if c.name in ok]
    if labels is not None:
        cases = _with_label_folder(Path(root), cases, labels)
    return cases


def _with_label_folder(root: Path, cases: list[Case], folder: str) -> list[Case]:
    if folder not in LABEL_FOLDERS:
        raise DatasetError(f"{root}: unknown label folder {folder!r} (known: {', '.join(LABEL_FOLDERS)})")
    names_file, key = LABEL_FOLDERS[folder]
    try:
        names = {int(v): str(n) for v, n in json.loads((root / names_file).read_text())[key].items()}
    except (OSError, KeyError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{root / names_file}: no {key!r} label names ({exc})") from exc
    out = []
    for case in cases:
        label = root / folder / case.label.name
        if label.is_file():
            out.append(Case(case.name, case.image, label, names))
    if not out:
        raise DatasetError(f"{root / folder}: no label map for any of the {len(cases)} cases")
    return out


def mask_tags(case: Case, label_canonical: np.ndarray, targets: list[str]) -> np.ndarray:
    """(Z, T) tags from the case's own mask; a target with no label value or no voxel is unknown."""
    tags = np.full((label_canonical.shape[0], len(targets)), UNKNOWN, np.int8)
    for t, name in enumerate(targets):
        try:
            value = case.label_value(name)
        except DatasetError:
            continue
        if np.any(label_canonical == value):
            tags[:, t] = tags_from_mask(label_canonical == value)
    return tags


def load_tagged(cases: list[Case], targets: list[str], tag_file: dict | None = None, modality: str | None = None,
                progress: ProgressFn | None = None
                ) -> list[tuple[Case, PreparedSlices, np.ndarray, np.ndarray | None]]:
    """(case, prepared slices, tags (Z, T), LPS-oriented label array or None) per case; each case windowed as its
    own modality unless ``modality`` is given."""
    out = []
    for i, case in enumerate(cases):
        image, label = case.load()
        prep = prepare_slices(image, modality or guess_modality(image))
        lab = orient(label, "LPS").array if label is not None else None
        if tag_file is not None and case.name in tag_file:
            tags = np.full((prep.images.shape[0], len(targets)), UNKNOWN, np.int8)
            for t, name in enumerate(targets):
                entry = tag_file[case.name].get(name)
                if entry:
                    tags[:, t] = tags_from_ranges(prep.images.shape[0], entry.get("present", []),
                                                  entry.get("absent"), where=f"{case.name}/{name}")
        elif lab is not None:
            tags = mask_tags(case, lab, targets)
        else:
            continue
        out.append((case, prep, tags, lab))
        if progress:
            progress(i + 1, len(cases), case.name)
    return out
