"""npe2 reader: medical volumes (files and DICOM folders) as Image or Labels layers in patient space."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medlsam_training.interop.rtstruct import dicom_modality, structure_sets_in
from medlsam_training.volumes.atomic import compound_suffix
from medlsam_training.volumes.datasets import read_label_names
from medlsam_training.volumes.io import as_label, is_volume_path, read_volume

from .layer_geometry import layer_kwargs

LayerData = tuple[Any, dict[str, Any], str]
_LABEL_HINTS = ("label", "labels", "seg", "segmentation", "mask", "gt")


def _looks_like_labels(path: Path) -> bool:
    stem = path.name[: -len(compound_suffix(path))] if compound_suffix(path) else path.name
    stem = stem.lower()
    return any(stem == h or stem.endswith(f"_{h}") or stem.endswith(f".{h}") for h in _LABEL_HINTS)


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return a reader when every path is a volume we read, else None (napari tries other plugins)."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(is_volume_path(p) for p in paths):
        return None
    return read_layers


def _structure_set_layer(path: Path, series: Path | None = None) -> LayerData:
    """An RT structure set as a labels layer on its series (found beside it), ROI names as label names."""
    from medlsam_training.interop.rtstruct import find_series_for, import_rtstruct

    volume, names = import_rtstruct(path, series or find_series_for(path))
    kwargs = layer_kwargs(volume, labels=True)
    kwargs["name"] = path.stem
    kwargs["metadata"]["label_names"] = {str(k): v for k, v in names.items()}
    return volume.array, kwargs, "labels"


def read_layers(path: str | list[str]) -> list[LayerData]:
    paths = [path] if isinstance(path, str) else list(path)
    layers: list[LayerData] = []
    for p in map(Path, paths):
        if p.name.lower().endswith(".seg.nrrd"):  # 3D Slicer segmentation: one labels layer with segment names
            from medlsam_training.interop.seg_nrrd import read_seg_nrrd

            volume, names, _ = read_seg_nrrd(p)
            kwargs = layer_kwargs(volume, labels=True)
            kwargs["metadata"]["label_names"] = {str(k): v for k, v in names.items()}
            layers.append((volume.array, kwargs, "labels"))
            continue
        if p.is_file() and p.suffix.lower() == ".dcm" and dicom_modality(p) == "RTSTRUCT":
            layers.append(_structure_set_layer(p))
            continue
        volume = read_volume(p)
        if p.is_dir():  # a series folder: its image, and any structure set stored with it
            layers.append((volume.array, layer_kwargs(volume), "image"))
            layers.extend(_structure_set_layer(rs, p) for rs in structure_sets_in(p))
            continue
        if _looks_like_labels(p):
            volume = as_label(volume)
            kwargs = layer_kwargs(volume, labels=True)
            names = p.parent / "labels.json"
            if names.is_file():  # value -> structure name, for the report and the annotator
                kwargs["metadata"]["label_names"] = {str(k): v for k, v in read_label_names(names).items()}
            layers.append((volume.array, kwargs, "labels"))
        else:
            layers.append((volume.array, layer_kwargs(volume), "image"))
    return layers
