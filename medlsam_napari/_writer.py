"""npe2 writer: a Labels layer saved atomically with the geometry of the image it was drawn on."""

from __future__ import annotations

from typing import Any

import numpy as np

from medlsam_training.volumes.io import write_mask

from .layer_geometry import volume_from_layer


def _world_affine(attributes: dict[str, Any]) -> np.ndarray | None:
    """The layer's full data-to-world matrix (its scale/translate composed with its affine)."""
    if "affine" not in attributes:
        return None
    from napari.utils.transforms import Affine

    inner = Affine(scale=attributes.get("scale", (1, 1, 1)), translate=attributes.get("translate", (0, 0, 0)),
                   rotate=attributes.get("rotate"), shear=attributes.get("shear"))
    return np.asarray(attributes["affine"]) @ inner.affine_matrix


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one Labels layer to ``path`` (.nii.gz, .nii, .nrrd, .mha) and return the written path."""
    volume = volume_from_layer(data, attributes.get("metadata"), _world_affine(attributes))
    if path.lower().endswith(".seg.nrrd"):  # 3D Slicer segmentation: segment names from the layer
        from medlsam_training.interop.colours import hex_to_rgb
        from medlsam_training.interop.seg_nrrd import write_seg_nrrd

        meta = attributes.get("metadata") or {}
        names = {int(k): v for k, v in (meta.get("label_names") or {}).items()}
        colours = {int(k): hex_to_rgb(v) for k, v in (meta.get("label_colours") or {}).items()}  # the project's
        write_seg_nrrd(volume.with_array(np.asarray(data)), names, path, colours)
        return [path]
    write_mask(volume.array, volume, path)
    return [path]
