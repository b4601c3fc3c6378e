"""The Volume Fusion pretext task: fuse blocks of one sub-volume into another with discrete coefficients.

X = a * I_fg + (1 - a) * I_bg with a in {0, 1/K, ..., 1} per block of a random grid; the target is the
per-voxel class K * a.  Both sub-volumes are random-resized crops of the same scan with flips and
intensity augmentation (adaptive contrast, gamma, inversion), as in MIS-FM's current PyMIC version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class FusionConfig:
    crop: tuple[int, int, int] = (32, 64, 64)  # (D, H, W) voxels at the working spacing
    classes: int = 4  # K: coefficients 0, 1/K, ..., 1 -> K + 1 classes
    block_min: tuple[int, int, int] = (4, 8, 8)
    block_max: tuple[int, int, int] = (16, 32, 32)
    foreground_ratio: float = 0.7
    scale: tuple[float, float] = (0.7, 1.5)


def random_resized_crop(volume: np.ndarray, size: tuple[int, int, int], rng: np.random.Generator,
                        scale: tuple[float, float]) -> np.ndarray:
    """A crop of ``size * s`` voxels (s per axis in ``scale``), zero-padded where it leaves the volume, zoomed to
    ``size``."""
    extent = [max(2, int(round(n * rng.uniform(*scale)))) for n in size]
    lo = [int(rng.integers(min(0, d - e), max(0, d - e) + 1)) for d, e in zip(volume.shape, extent)]
    out = np.zeros(extent, np.float32)
    src = tuple(slice(max(0, a), min(d, a + e)) for a, d, e in zip(lo, volume.shape, extent))
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, lo))
    out[dst] = volume[src]
    t = torch.from_numpy(out)[None, None]
    return F.interpolate(t, size=size, mode="trilinear", align_corners=False)[0, 0].numpy()


def augment_intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips, adaptive contrast (percentiles -> 0.1 / 0.9), gamma, and inversion with p = 0.25."""
    for axis in range(3):
        if rng.random() < 0.5:
            x = np.flip(x, axis)
    p0, p1 = np.percentile(x, [rng.uniform(0.1, 2.0), rng.uniform(98.0, 99.9)])
    x = np.interp(x, [p0, p1], [0.1, 0.9], left=None, right=None) if p1 > p0 else x
    x = np.clip(x, 0.0, 1.0) ** rng.uniform(0.7, 1.5)
    if rng.random() < 0.25:
        x = 1.0 - x
    return np.ascontiguousarray(x, dtype=np.float32)


def fuse(background: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
         config: FusionConfig = FusionConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ``foreground`` into ``background`` on a random block grid -> (fused image, class map in 0..K)."""
    if background.shape != foreground.shape:
        raise ValueError(f"sub-volumes differ in shape: {background.shape} vs {foreground.shape}")
    label = np.zeros(background.shape, np.int64)
    block = [int(rng.integers(lo, hi + 1)) for lo, hi in zip(config.block_min, config.block_max)]
    offset = [int(rng.integers(0, b)) for b in block]
    starts = [np.arange(-o, n, b) for o, n, b in zip(offset, background.shape, block)]
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                if rng.random() < config.foreground_ratio:
                    label[max(z, 0):z + block[0], max(y, 0):y + block[1], max(x, 0):x + block[2]] = \
                        int(rng.integers(1, config.classes + 1))
    alpha = label.astype(np.float32) / config.classes
    fused = alpha * foreground + (1.0 - alpha) * background
    return fused.astype(np.float32), label


def fusion_sample(volume: np.ndarray, rng: np.random.Generator, config: FusionConfig = FusionConfig()
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One training pair (fused image, class map) from a prepared scan in [0, 1]."""
    bg = augment_intensity(random_resized_crop(volume, config.crop, rng, config.scale), rng)
    fg = augment_intensity(random_resized_crop(volume, config.crop, rng, config.scale), rng)
    return fuse(bg, fg, rng, config)
