"""Finding image/label pairs in a dataset folder, with their label-name maps.

Understood layouts:
    * MSD / nnU-Net: ``imagesTr/`` + ``labelsTr/`` (image names may end in ``_0000``), label names in
      ``dataset.json`` (``{"0": "background", "1": "liver"}`` or ``{"liver": 1}``).
    * Case folders: a folder with ``image.<ext>`` (or a DICOM series folder ``dicom/``) and a label file
      (``label.<ext>``, ``seg.<ext>``, ``mask.<ext>`` or one other volume file named after its structure,
      like ``aorta.nii.gz``); names in ``labels.json`` beside it or in a parent folder.
    * Flat pairs: ``<case>_image.<ext>`` with ``<case>_label.<ext>`` in one folder.
    * Unlabelled volumes: any other volume file, or a folder of DICOM files, is a case without label.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from .atomic import compound_suffix
from .io import READ_SUFFIXES, dicom_series_ids, read_image_label, read_volume
from .volume import Volume

_LABEL_STEMS = ("label", "labels", "seg", "segmentation", "mask", "gt")


@dataclass
class Case:
    """One volume of a dataset, with its label map when there is one."""

    name: str
    image: Path
    label: Path | None = None
    label_names: dict[int, str] = field(default_factory=dict)

    def load(self) -> tuple[Volume, Volume | None]:
        """Read the image and (if any) its label map on the image's grid."""
        if self.label is None:
            return read_volume(self.image), None
        return read_image_label(self.image, self.label)

    def label_value(self, name_or_value: str | int) -> int:
        """Resolve 'liver' or 5 to a label value of this case."""
        if isinstance(name_or_value, int) or str(name_or_value).isdigit():
            return int(name_or_value)
        for value, name in self.label_names.items():
            if name == name_or_value:
                return value
        raise DatasetError(f"{self.name}: no label named '{name_or_value}' "
                           f"(known: {sorted(self.label_names.values())})")


def file_stem(path: Path) -> str:
    """A file's name without its (compound) extension: 'pt_1_0000' for 'pt_1_0000.nii.gz'."""
    suffix = compound_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _volume_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and compound_suffix(p).lower() in READ_SUFFIXES
                  and not p.name.startswith("."))


def read_label_names(path: Path) -> dict[int, str]:
    """Parse a labels.json / dataset.json label map into {value: name}, background dropped."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable label-name map ({exc})") from exc
    if isinstance(data, dict) and "labels" in data and isinstance(data["labels"], dict):
        data = data["labels"]
    names: dict[int, str] = {}
    for key, value in data.items():
        if str(key).lstrip("-").isdigit():  # {"1": "liver"}
            names[int(key)] = str(value)
        elif isinstance(value, int) or (isinstance(value, str) and value.isdigit()):  # {"liver": 1}
            names[int(value)] = str(key)
        else:
            raise DatasetError(f"{path}: cannot read label entry {key!r}: {value!r}")
    names.pop(0, None)
    return names


#: the files that name a label map's values, looked for beside it and in the folders above
NAME_FILES = ("labels.json", "dataset.json")


def _names_near(folder: Path, stop: Path) -> dict[int, str]:
    for parent in [folder, *folder.parents]:
        for fname in NAME_FILES:
            if (parent / fname).is_file():
                return read_label_names(parent / fname)
        if parent == stop:
            break
    return {}


def label_names_near(label: str | os.PathLike[str], levels: int = 2) -> dict[int, str]:
    """The names of a label map's values: the first labels.json / dataset.json beside it or up to ``levels``
    folders above (nnU-Net/MSD keep dataset.json above labelsTr/).  Every command looks names up here."""
    folder = Path(label).parent
    return _names_near(folder, ([folder, *folder.parents])[min(levels, len(folder.parents))])


def _msd_cases(root: Path) -> list[Case]:
    names = read_label_names(root / "dataset.json") if (root / "dataset.json").is_file() else {}
    labels = {file_stem(p): p for p in _volume_files(root / "labelsTr")} if (root / "labelsTr").is_dir() else {}
    cases = []
    for image in _volume_files(root / "imagesTr"):
        stem = file_stem(image)
        case = stem[:-5] if stem.endswith("_0000") else stem
        cases.append(Case(case, image, labels.get(case), names))
    return cases


def _folder_case(folder: Path, root: Path) -> Case | None:
    files = _volume_files(folder)
    image = next((p for p in files if file_stem(p).lower() in ("image", "img", "ct", "mr")), None)
    if image is None and (folder / "dicom").is_dir():
        image = folder / "dicom"
    if image is None:
        return None
    others = [p for p in files if p != image]
    label = next((p for p in others if file_stem(p).lower() in _LABEL_STEMS), None)
    names = _names_near(folder, root)
    if label is None and len(others) == 1:
        label = others[0]
        names = names or {1: file_stem(label)}
    name = folder.name if folder != root else root.name
    return Case(name, image, label, names)


def _flat_pairs(folder: Path, root: Path) -> list[Case]:
    cases = []
    files = {file_stem(p): p for p in _volume_files(folder)}
    for stem, path in sorted(files.items()):
        if stem.endswith("_image"):
            case = stem[: -len("_image")]
            label = files.get(f"{case}_label") or files.get(f"{case}_seg")
            cases.append(Case(case, path, label, _names_near(folder, root)))
    return cases


def _loose_volumes(folder: Path) -> list[Case]:
    """Unlabelled volumes: every non-label volume file, or the folder itself if it is a DICOM series."""
    files = _volume_files(folder)
    if any(p.suffix.lower() == ".dcm" for p in files) or (not files and bool(dicom_series_ids(folder))):
        return [Case(folder.name, folder)]  # DICOM files often have no extension at all
    hints = tuple(f"_{h}" for h in _LABEL_STEMS)
    return [Case(file_stem(p), p) for p in files
            if not file_stem(p).lower().endswith(hints) and file_stem(p).lower() not in _LABEL_STEMS]


def split_members(folder: str | os.PathLike[str], split: str | None) -> set[str] | None:
    """Case names of ``split`` from the folder's ``manifest.json`` (OpenKBP lists train-pats / validation-pats),
    or None when there is no split or no manifest."""
    manifest = Path(folder) / "manifest.json"
    if not split or not manifest.is_file():
        return None
    cases = json.loads(manifest.read_text(encoding="utf-8")).get("cases", [])
    return {c["patient"] for c in cases if c.get("split") == split}


def find_cases(root: str | os.PathLike[str], *, require_labels: bool = False, max_depth: int = 3) -> list[Case]:
    """All cases under ``root`` (see the module docstring for the layouts), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: " + ("not a folder" if root.exists() else "does not exist"))
    if (root / "imagesTr").is_dir():
        cases = _msd_cases(root)
    else:
        cases = []
        for dirpath, dirnames, _ in os.walk(root):
            folder = Path(dirpath)
            depth = len(folder.relative_to(root).parts)
            dirnames[:] = sorted(d for d in dirnames if d != "dicom" and not d.startswith("."))
            if depth >= max_depth:
                dirnames[:] = []
            case = _folder_case(folder, root)
            if case is not None:
                cases.append(case)
                continue
            pairs = _flat_pairs(folder, root)
            cases.extend(pairs or _loose_volumes(folder))
    if require_labels:
        cases = [c for c in cases if c.label is not None]
    if not cases:
        kind = "labelled image/label pairs" if require_labels else "volumes"
        raise DatasetError(f"{root}: found no {kind} (expected imagesTr/labelsTr, case folders with "
                           "image.* and label.*, or <case>_image/<case>_label files)")
    return sorted(cases, key=lambda c: str(c.image))
