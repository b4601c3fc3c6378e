"""Putting a Volume's geometry on a napari layer and taking it back off.

napari displays world axes in array order (z, y, x); the layer ``affine`` maps array indices to LPS
millimetres in that order, so oblique and flipped volumes sit where they are in the patient and two
layers from one image overlay exactly.  The full ITK geometry is also kept in ``metadata`` so a
writer restores it bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medlsam_training.volumes.volume import Geometry, Volume

GEOMETRY_KEY = "medlsam_geometry"
#: Soft-tissue window (level 40, width 400 HU) as the default CT display.
CT_WINDOW = (-160.0, 240.0)


def geometry_metadata(volume: Volume) -> dict[str, Any]:
    g = volume.geometry
    return {GEOMETRY_KEY: {"spacing": list(g.spacing), "origin": list(g.origin),
                           "direction": list(g.direction), "size": list(g.size)},
            "source_path": str(volume.path) if volume.path else None,
            **{k: v for k, v in volume.meta.items() if isinstance(v, (str, int, float, bool))}}


def layer_kwargs(volume: Volume, name: str | None = None, *, labels: bool = False) -> dict[str, Any]:
    """napari ``add_image``/``add_labels`` keyword arguments placing ``volume`` in patient space."""
    kwargs: dict[str, Any] = {
        "name": name or (Path(volume.path).name if volume.path else "volume"),
        "affine": volume.geometry.affine_zyx(),
        "metadata": geometry_metadata(volume),
    }
    if not labels:
        arr = volume.array
        is_ct = volume.meta.get("modality") == "CT" or (arr.min() < -500 and arr.max() > 500)
        robust = (float(np.percentile(arr, 0.5)), float(np.percentile(arr, 99.5)))
        kwargs["contrast_limits"] = CT_WINDOW if is_ct else robust
        kwargs["colormap"] = "gray"
    return kwargs


def volume_from_layer(data: np.ndarray, metadata: dict[str, Any] | None, affine: np.ndarray | None) -> Volume:
    """Rebuild a Volume from layer data; geometry from metadata when it fits the data, else from the affine."""
    data = np.asarray(data)
    meta = (metadata or {}).get(GEOMETRY_KEY)
    if meta and tuple(meta["size"]) == tuple(data.shape[::-1]):
        return Volume(data, tuple(meta["spacing"]), tuple(meta["origin"]), tuple(meta["direction"]))
    if affine is None:
        raise ValueError("the layer carries neither source geometry nor an affine; cannot place it in space")
    g = Geometry.from_affine_zyx(np.asarray(affine), data.shape)
    return Volume(data, g.spacing, g.origin, g.direction)
