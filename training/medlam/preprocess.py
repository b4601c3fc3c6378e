"""CT prepared for MedLAM: LPS orientation, 3 mm isotropic, HU mapped piecewise-linearly to [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MedLSAMError
from ..volumes.resample import resample_to_spacing
from ..volumes.volume import Geometry, Volume, orient

SPACING_MM = 3.0
PATCH = 64
#: MedLAM's intensity map: HU [-1000, -200, 200, 1500] -> [0, 0.2, 0.8, 1], clamped outside.
HU_KNOTS = (-1000.0, -200.0, 200.0, 1500.0)
UNIT_KNOTS = (0.0, 0.2, 0.8, 1.0)


class ModalityError(MedLSAMError, ValueError):
    """A volume that is not CT where MedLAM (trained on CT) needs CT."""


@dataclass
class PreparedCT:
    """A volume on MedLAM's grid: ``array[z, y, x]`` in [0, 1] with the grid's geometry."""

    array: np.ndarray
    geometry: Geometry

    def mm(self, index_zyx: np.ndarray) -> np.ndarray:
        """Array indices (..., 3) [z, y, x] -> LPS mm (..., 3) (x, y, z)."""
        return self.geometry.index_to_physical(np.asarray(index_zyx, float)[..., ::-1])

    def index_zyx(self, mm: np.ndarray) -> np.ndarray:
        return self.geometry.physical_to_index(mm)[..., ::-1]


def looks_like_ct(volume: Volume) -> bool:
    """CT has air near -1000 HU and soft tissue around 0-100 HU; MR and PET do not."""
    arr = volume.array
    sample = arr[:: max(1, arr.shape[0] // 16)]
    return float(np.percentile(sample, 1)) < -500 and -200 < float(np.median(sample[sample > -500])) < 400


def prepare_ct(volume: Volume, *, check_modality: bool = True) -> PreparedCT:
    """Orient to LPS, resample to 3 mm isotropic (air as fill) and map HU to [0, 1]."""
    volume.require_finite()
    modality = str(volume.meta.get("modality", "")).upper()
    if check_modality and ((modality and modality != "CT") or not looks_like_ct(volume)):
        raise ModalityError(
            f"{volume.name}: does not look like CT (modality {modality or 'unknown'}, intensities "
            f"{float(volume.array.min()):.0f}..{float(volume.array.max()):.0f}); MedLAM was trained on CT in HU. "
            "Use the registration localizer for other modalities.")
    lps = orient(volume, "LPS")
    iso = resample_to_spacing(lps.with_array(lps.array.astype(np.float32)), SPACING_MM)
    unit = np.interp(iso.array, HU_KNOTS, UNIT_KNOTS).astype(np.float32)
    if min(unit.shape) < 8:
        raise ModalityError(f"{volume.name}: only {unit.shape[::-1]} voxels at 3 mm; too small to localize in")
    return PreparedCT(unit, iso.geometry)


def crop(array: np.ndarray, centre_zyx: np.ndarray, size: int = PATCH) -> np.ndarray:
    """A size^3 patch centred on an array index, zero-padded (air) outside the volume."""
    c = np.round(np.asarray(centre_zyx)).astype(int)
    lo = c - size // 2
    out = np.zeros((size,) * 3, dtype=array.dtype)
    src = tuple(slice(max(0, a), min(n, a + size)) for a, n in zip(lo, array.shape))
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, lo))
    if all(s.stop > s.start for s in src):
        out[dst] = array[src]
    return out
