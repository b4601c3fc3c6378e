"""3D Slicer segmentation files (.seg.nrrd) <-> one label map with names and colours, geometry kept (slicerio)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import slicerio

from ..errors import CorruptFileError, MedLSAMError
from ..volumes.atomic import atomic_path
from ..volumes.volume import Volume
from .colours import colour_for

log = logging.getLogger(__name__)


def read_seg_nrrd(path: str | os.PathLike[str]) -> tuple[Volume, dict[int, str], dict[int, tuple[float, ...]]]:
    """(label map, {value: name}, {value: rgb}). Segments keep their label values when they share one layer;
    overlapping segments (several layers) are renumbered 1..N in file order, the earlier one kept where they overlap."""
    path = Path(path)
    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # noqa: BLE001 - pynrrd raises many kinds on a damaged file
        raise CorruptFileError(f"{path}: not a readable Slicer segmentation ({str(exc).splitlines()[0]})") from exc
    vox = np.asarray(seg["voxels"])
    m = np.asarray(seg["ijkToLPS"], dtype=float)
    segments = seg.get("segments") or []
    if vox.ndim not in (3, 4) or not segments:
        raise MedLSAMError(f"{path}: holds no 3D segment")
    layers = vox if vox.ndim == 4 else vox[None]
    names, colours = {}, {}
    if layers.shape[0] == 1:
        ijk = layers[0]
        for s in segments:
            names[int(s["labelValue"])] = s.get("name") or s["id"]
            colours[int(s["labelValue"])] = tuple(s.get("color") or colour_for(s["labelValue"]))
    else:
        ijk = np.zeros(layers.shape[1:], np.uint16)
        overlap = 0
        for value, s in enumerate(segments, start=1):
            mask = layers[int(s.get("layer", 0))] == int(s["labelValue"])
            overlap += int((mask & (ijk > 0)).sum())
            ijk[mask & (ijk == 0)] = value
            names[value] = s.get("name") or s["id"]
            colours[value] = tuple(s.get("color") or colour_for(value))
        if overlap:
            log.warning("%s: %d voxels belong to several segments; the first segment keeps them", path, overlap)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    direction = m[:3, :3] / spacing
    label = Volume(np.ascontiguousarray(np.transpose(ijk, (2, 1, 0))), tuple(float(s) for s in spacing),
                   tuple(float(o) for o in m[:3, 3]), tuple(float(d) for d in direction.ravel()), path=path)
    return label, names, colours


def write_seg_nrrd(label: Volume, names: dict[int, str], path: str | os.PathLike[str],
                   colours: dict[int, tuple[float, ...]] | None = None) -> Path:
    """Write a label map as a one-layer Slicer segmentation: every value present is a segment with its own value,
    a name (``names``, else 'label N') and a colour."""
    path = Path(path)
    arr = np.asarray(label.array)
    values = [int(v) for v in np.unique(arr) if v != 0]
    if not values:
        raise MedLSAMError(f"{label.name}: the label map has no foreground voxel; nothing to write to {path}")
    g = label.geometry
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = g.index_to_physical_matrix
    ijk_to_lps[:3, 3] = g.origin
    ijk = np.ascontiguousarray(np.transpose(arr, (2, 1, 0)))
    segments = []
    for v in values:
        idx = np.argwhere(ijk == v)
        lo, hi = idx.min(0), idx.max(0)
        segments.append({"id": f"Segment_{v}", "name": names.get(v, f"label {v}"), "labelValue": v, "layer": 0,
                         "color": list((colours or {}).get(v, colour_for(v))),
                         "extent": [int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2])]})
    seg = {"voxels": ijk.astype(np.uint8 if max(values) < 256 else np.uint16), "ijkToLPS": ijk_to_lps,
           "segments": segments, "encoding": "gzip"}
    with atomic_path(path) as tmp:
        # slicerio picks the format from the name: keep the compound suffix on the temporary file
        target = tmp.with_name(tmp.name + ".seg.nrrd")
        slicerio.write_segmentation(str(target), seg)
        target.replace(tmp)
    return path
