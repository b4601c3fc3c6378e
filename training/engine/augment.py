"""Random in-plane augmentation of 2D slice batches, shared by every slice network (classifier, refinement network,
learning-loop network): one affine per sample for images and labels, contrast jitter, an optional left-right flip."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, y: torch.Tensor | None, rng: np.random.Generator, *, rotate: float = 0.2,
                  scale: float = 0.1, shift: float = 0.08, gain: float = 0.1, bias: float = 0.0,
                  padding: str = "zeros", mirror: np.ndarray | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, C, H, W) images in [0, 1] and optional (B, H, W) class labels (nearest) under the same random rotation
    (± ``rotate`` rad), scale, shift (± ``shift`` of the half-width) and contrast (gain, bias).

    ``mirror``: flip left-right half of the samples (the image column axis is patient right-to-left in LPS) with the
    label classes mapped through it (parotid_right <-> parotid_left); None: never flip (sides would be lost)."""
    b = x.shape[0]
    angle = rng.uniform(-rotate, rotate, b)
    s = rng.uniform(1 - scale, 1 + scale, b)
    theta = np.zeros((b, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = np.cos(angle) / s, -np.sin(angle) / s
    theta[:, 1, 0], theta[:, 1, 1] = np.sin(angle) / s, np.cos(angle) / s
    theta[:, :, 2] = rng.uniform(-shift, shift, (b, 2))
    flip = rng.random(b) < 0.5 if mirror is not None else np.zeros(b, bool)
    theta[flip, 0, :] *= -1  # x -> -x: the columns mirrored
    grid = F.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    g = torch.from_numpy(rng.uniform(1 - gain, 1 + gain, (b, 1, 1, 1)).astype(np.float32))
    o = torch.from_numpy(rng.uniform(-bias, bias, (b, 1, 1, 1)).astype(np.float32)) if bias else 0.0
    x = (x * g + o).clamp(0, 1)
    if y is not None:
        y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)[:, 0].round().long()
        if flip.any() and mirror is not None:
            rows = torch.from_numpy(flip)
            y[rows] = torch.from_numpy(np.asarray(mirror, np.int64))[y[rows]]
    return x, y
