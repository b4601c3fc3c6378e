"""Training pairs for MedLAM: two patches of one scan (un-augmented) plus an augmented view of each.

The augmented view is warped (affine + smooth elastic) together with its per-voxel mm coordinate grid,
so every voxel of it still knows where it lies in the patient; that is what the similarity loss needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import PATCH, PreparedCT

BIG = 80  # the augmented view is cut from an 80^3 crop so that warping never reaches its border


@dataclass
class PatchBatch:
    ori: torch.Tensor  # (B, 1, P, P, P) un-augmented patches
    ori_mm: torch.Tensor  # (B, 3, P, P, P) LPS mm of every voxel
    aug: torch.Tensor  # (B, 1, P, P, P) augmented views of the same crops
    aug_mm: torch.Tensor  # (B, 3, P, P, P) warped coordinates
    centre_mm: torch.Tensor  # (B, 3) mm of each ori patch centre


def _coords_mm(vol: PreparedCT, lo_zyx: np.ndarray, size: int) -> np.ndarray:
    """(3, size, size, size) LPS mm (x, y, z channels) of the voxels of a crop starting at lo_zyx."""
    r = [np.arange(size) + lo for lo in lo_zyx]
    zz, yy, xx = np.meshgrid(*r, indexing="ij")
    idx = np.stack([zz, yy, xx], -1).reshape(-1, 3)
    return vol.mm(idx).T.reshape(3, size, size, size).astype(np.float32)


def _crop_at(vol: PreparedCT, lo_zyx: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size,) * 3, np.float32)
    src = tuple(slice(max(0, a), min(n, a + size)) for a, n in zip(lo_zyx, vol.array.shape))
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, lo_zyx))
    if all(s.stop > s.start for s in src):
        out[dst] = vol.array[src]
    return out


def _random_centre(vol: PreparedCT, rng: np.random.Generator) -> np.ndarray:
    for _ in range(20):  # prefer centres inside the body
        c = np.array([rng.integers(0, n) for n in vol.array.shape])
        if vol.array[tuple(c)] >= 0.1:
            break
    return c


def _augment(big: torch.Tensor, big_mm: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp an 80^3 crop (and its coordinates) into a 64^3 view: affine (+-10 %, +-15 deg) + elastic."""
    theta = np.eye(3)
    if rng.random() < 0.5:
        angles = np.deg2rad(rng.uniform(-15, 15, 3))
        for axis, a in enumerate(angles):
            c, s = np.cos(a), np.sin(a)
            r = np.eye(3)
            i, j = [k for k in range(3) if k != axis]
            r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
            theta = theta @ r
        theta = theta @ np.diag(rng.uniform(0.9, 1.1, 3))
    theta *= PATCH / BIG  # sample the central 64^3 of the 80^3 crop
    affine = torch.tensor(np.c_[theta, np.zeros(3)], dtype=torch.float32)[None]
    grid = F.affine_grid(affine, [1, 1, PATCH, PATCH, PATCH], align_corners=False)
    if rng.random() < 0.5:  # smooth elastic displacement from a 5^3 control grid (about 3 voxels)
        ctrl = torch.tensor(rng.normal(0, 3.0 / BIG * 2, (1, 3, 5, 5, 5)), dtype=torch.float32)
        warp = F.interpolate(ctrl, size=(PATCH,) * 3, mode="trilinear", align_corners=True)
        grid = grid + warp.permute(0, 2, 3, 4, 1)
    img = F.grid_sample(big[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    mm = F.grid_sample(big_mm[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    if rng.random() < 0.5:  # intensity: gamma and contrast
        img = img.clamp(0, 1) ** float(rng.uniform(0.7, 1.5)) * float(rng.uniform(0.85, 1.15))
    if rng.random() < 0.5:
        img = img + torch.randn_like(img) * float(rng.uniform(0, 0.05))
    return img, mm


def sample_batch(volumes: list[PreparedCT], batch_pairs: int, rng: np.random.Generator) -> PatchBatch:
    """``batch_pairs`` pairs; patches 2k and 2k+1 come from the same scan (for the distance loss)."""
    ori, ori_mm, aug, aug_mm, centres = [], [], [], [], []
    for _ in range(batch_pairs):
        vol = volumes[rng.integers(len(volumes))]
        for _ in range(2):
            lo_big = _random_centre(vol, rng) - BIG // 2
            big = _crop_at(vol, lo_big, BIG)
            big_mm = _coords_mm(vol, lo_big, BIG)
            off = rng.integers(0, BIG - PATCH + 1, 3)
            sl = tuple(slice(o, o + PATCH) for o in off)
            ori.append(big[sl][None])
            ori_mm.append(big_mm[(slice(None),) + sl])
            centres.append(vol.mm(lo_big + off + PATCH // 2))
            a, amm = _augment(torch.from_numpy(big), torch.from_numpy(big_mm), rng)
            aug.append(a)
            aug_mm.append(amm)
    t = lambda xs: torch.from_numpy(np.stack(xs)).float() if isinstance(xs[0], np.ndarray) else torch.stack(xs)  # noqa: E731
    return PatchBatch(t(ori), t(ori_mm), t(aug), t(aug_mm), torch.from_numpy(np.stack(centres)).float())
