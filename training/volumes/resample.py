"""Resampling volumes to a spacing and back onto any reference grid (SimpleITK).

Images use linear interpolation; label maps use nearest neighbour or, better when downsampling thin
structures, one-hot linear interpolation followed by argmax.  Resampling to a spacing keeps the
physical position of voxel 0 and the direction, so ``resample_to_reference(resampled, original)``
restores the original grid exactly (shape, spacing, origin, direction).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import SimpleITK as sitk

from .volume import Geometry, Volume

LabelMode = Literal["nearest", "onehot"]


def _reference_image(geometry: Geometry) -> sitk.Image:
    ref = sitk.Image([int(s) for s in geometry.size], sitk.sitkUInt8)
    ref.SetSpacing(geometry.spacing)
    ref.SetOrigin(geometry.origin)
    ref.SetDirection(geometry.direction)
    return ref


def spacing_geometry(geometry: Geometry, spacing: tuple[float, float, float]) -> Geometry:
    """The grid covering the same extent as ``geometry`` at another spacing (x, y, z)."""
    size = tuple(
        max(1, int(round(n * s / t))) for n, s, t in zip(geometry.size, geometry.spacing, spacing)
    )
    return Geometry(size=size, spacing=tuple(float(t) for t in spacing), origin=geometry.origin,
                    direction=geometry.direction)


def resample_to_reference(
    volume: Volume,
    reference: Volume | Geometry,
    *,
    is_label: bool = False,
    label_mode: LabelMode = "nearest",
    fill_value: float | None = None,
) -> Volume:
    """Resample ``volume`` onto the grid of ``reference`` (physical positions are matched)."""
    geometry = reference.geometry if isinstance(reference, Volume) else reference
    ref = _reference_image(geometry)
    image = volume.to_sitk()
    if is_label:
        if label_mode == "onehot":
            array = _onehot_resample(volume, ref)
        else:
            out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            array = sitk.GetArrayFromImage(out)
        array = array.astype(volume.array.dtype, copy=False)
    else:
        fill = float(volume.array.min()) if fill_value is None else float(fill_value)
        image = sitk.Cast(image, sitk.sitkFloat32)
        out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, fill, sitk.sitkFloat32)
        array = sitk.GetArrayFromImage(out)
    return Volume(array, geometry.spacing, geometry.origin, geometry.direction, path=volume.path,
                  meta=dict(volume.meta))


def resample_to_spacing(
    volume: Volume,
    spacing: float | tuple[float, float, float],
    *,
    is_label: bool = False,
    label_mode: LabelMode = "nearest",
) -> Volume:
    """Resample to a new spacing (x, y, z in mm, or one number for isotropic)."""
    if np.isscalar(spacing):
        spacing = (float(spacing),) * 3
    if any(s <= 0 for s in spacing):
        raise ValueError(f"target spacing {spacing} must be positive")
    target = spacing_geometry(volume.geometry, tuple(spacing))
    return resample_to_reference(volume, target, is_label=is_label, label_mode=label_mode)


def _onehot_resample(volume: Volume, ref: sitk.Image) -> np.ndarray:
    """Per-label linear interpolation of the indicator, then argmax; one label in memory at a time."""
    labels = np.unique(volume.array)
    best_value = np.zeros(sitk.GetArrayViewFromImage(ref).shape, dtype=volume.array.dtype)
    best_score = np.full(best_value.shape, -1.0, dtype=np.float32)
    for value in labels:
        indicator = volume.with_array((volume.array == value).astype(np.float32)).to_sitk()
        score = sitk.GetArrayFromImage(
            sitk.Resample(indicator, ref, sitk.Transform(), sitk.sitkLinear, 1.0 if value == 0 else 0.0,
                          sitk.sitkFloat32)
        )
        better = score > best_score
        best_value[better] = value
        best_score[better] = score[better]
    return best_value
