"""Axial slices prepared for a SAM-family encoder, and exact coordinate maps between slice and model frame.

A slice is windowed (CT: level/width in HU; MR: percentiles), scaled to [0, 1], resized so its longest
side equals the model's input size, and padded bottom/right to a square, as LiteMedSAM and SAM were
trained.  :class:`SliceFrame` maps boxes and points between slice pixels and the model frame, and maps
low-resolution mask logits back to a full-size slice mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Abdominal soft-tissue window (level 40 HU, width 400 HU), MedSAM's CT default.
DEFAULT_CT_WINDOW = (40.0, 400.0)


@dataclass(frozen=True)
class Window:
    """Intensity window: ``level``/``width`` in HU for CT, or ``None`` for percentile (MR) scaling."""

    level: float | None = DEFAULT_CT_WINDOW[0]
    width: float | None = DEFAULT_CT_WINDOW[1]
    percentiles: tuple[float, float] = (0.5, 99.5)

    def bounds(self, volume_array: np.ndarray) -> tuple[float, float]:
        if self.level is not None and self.width is not None:
            return self.level - self.width / 2, self.level + self.width / 2
        lo, hi = np.percentile(volume_array, self.percentiles)
        return float(lo), float(hi)

    def key(self) -> str:
        return f"w{self.level}_{self.width}_{self.percentiles}"


def window_for_modality(modality: str | None) -> Window:
    """Fixed HU window for CT, volume percentiles for anything else (MR has no absolute scale)."""
    return Window() if (modality or "CT").upper() == "CT" else Window(None, None)


def scale_to_unit(volume_array: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Clip to the window and map it to [0, 1] as float32."""
    lo, hi = bounds
    return ((np.clip(volume_array.astype(np.float32), lo, hi) - lo) / max(hi - lo, 1e-6)).astype(np.float32)


@dataclass(frozen=True)
class SliceFrame:
    """Geometry of one slice of size (height, width) inside a square model input of ``input_size``."""

    height: int
    width: int
    input_size: int
    #: MedSAM's preparation: a plain resize to S x S (aspect not kept, no padding); SAM and LiteMedSAM keep
    #: the aspect (longest side to S) and pad bottom/right
    stretch: bool = False

    @property
    def scale(self) -> float:
        return self.input_size / max(self.height, self.width)

    @property
    def scale_xy(self) -> np.ndarray:
        if self.stretch:
            return np.array([self.input_size / self.width, self.input_size / self.height])
        return np.array([self.scale, self.scale])

    @property
    def resized(self) -> tuple[int, int]:
        if self.stretch:
            return self.input_size, self.input_size
        return int(self.height * self.scale + 0.5), int(self.width * self.scale + 0.5)

    def box_to_model(self, box_xyxy: np.ndarray) -> np.ndarray:
        """Pixel box [x0, y0, x1, y1] (inclusive pixel indices) -> model-frame box (continuous)."""
        b = np.asarray(box_xyxy, dtype=np.float64)
        return np.array([b[0], b[1], b[2] + 1, b[3] + 1]) * np.tile(self.scale_xy, 2)

    def box_from_model(self, box: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`box_to_model`."""
        b = np.asarray(box, dtype=np.float64) / np.tile(self.scale_xy, 2)
        return np.array([b[0], b[1], b[2] - 1, b[3] - 1])

    def points_to_model(self, points_xy: np.ndarray) -> np.ndarray:
        """Pixel centres (x, y) -> model frame."""
        return (np.asarray(points_xy, dtype=np.float64) + 0.5) * self.scale_xy

    def image_tensor(self, slice_unit: np.ndarray,
                     normalize: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """A [0, 1] slice (H, W) -> (3, S, S) tensor: resized, normalized, then padded bottom/right with 0.

        Normalizing before padding is the references' order: padding first would add zeros to a
        min-max normalization's minimum and shift SAM's mean/std normalization of the image.
        """
        t = torch.from_numpy(np.ascontiguousarray(slice_unit, dtype=np.float32))[None, None]
        h, w = self.resized
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        t = t.expand(1, 3, h, w)
        if normalize is not None:
            t = normalize(t)
        t = F.pad(t, (0, self.input_size - w, 0, self.input_size - h))
        return t[0]

    def logits_to_slice(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """Low-resolution mask logits (..., h, w) -> logits at the slice's full size (H, W)."""
        x = low_res_logits.reshape(-1, 1, *low_res_logits.shape[-2:]).float()
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        h, w = self.resized
        x = F.interpolate(x[..., :h, :w], size=(self.height, self.width), mode="bilinear", align_corners=False)
        return x.reshape(*low_res_logits.shape[:-2], self.height, self.width)

    def mask_to_low_res(self, mask: np.ndarray, low_res: int) -> torch.Tensor:
        """A previous full-size binary mask -> (1, 1, low_res, low_res) logits for a dense prompt."""
        t = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        h, w = self.resized
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
        t = F.pad(t, (0, self.input_size - w, 0, self.input_size - h))
        t = F.interpolate(t, size=(low_res, low_res), mode="bilinear", align_corners=False)
        return (t - 0.5) * 20.0  # a confident logit map: +10 inside, -10 outside
