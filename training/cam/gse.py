"""Geodesic seed expansion (GSE): threshold the fused CAM by minimum intra-class variance, seed the target inside
its largest component and the background around it, and sharpen the CAM near the seeds with geodesic maps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .geodesic import geodesic_distance

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)


def best_threshold(cam: np.ndarray, image: np.ndarray, region: np.ndarray | None = None) -> float:
    """The threshold t minimising (var(I | cam >= t) + var(I | cam < t)) / 2 inside ``region``."""
    region = np.ones(cam.shape, bool) if region is None else region
    c, v = cam[region], image[region]
    best, best_t = np.inf, 0.5
    for t in THRESHOLDS:
        fg = c >= t
        if fg.sum() < 2 or (~fg).sum() < 2:
            continue
        score = (v[fg].var() + v[~fg].var()) / 2
        if score < best:
            best, best_t = score, float(t)
    return best_t


def largest_component(mask: np.ndarray) -> np.ndarray:
    labelled, n = ndimage.label(mask, np.ones((3,) * mask.ndim, bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum(mask, labelled, range(1, n + 1))
    return labelled == (int(np.argmax(sizes)) + 1)


@dataclass
class Seeds:
    foreground: np.ndarray  # (N, ndim) indices
    background: np.ndarray


def seed_points(component: np.ndarray, spacing: tuple[float, ...], margin: int = 5) -> Seeds:
    """Foreground seed at the component's most interior voxel (largest distance to its border: inside even for a
    crescent, where the centroid can fall outside); background seeds at the corners of its box grown by ``margin``
    voxels in-plane (one slice along axis 0 of a 3D volume), clipped to the array."""
    edt = ndimage.distance_transform_edt(np.pad(component, 1), sampling=spacing)[(slice(1, -1),) * component.ndim]
    fg = np.array([np.unravel_index(int(np.argmax(edt)), component.shape)])
    idx = np.argwhere(component)
    grow = np.full(component.ndim, margin)
    if component.ndim == 3:
        grow[0] = 1
    lo = np.maximum(idx.min(0) - grow, 0)
    hi = np.minimum(idx.max(0) + grow, np.array(component.shape) - 1)
    corners = np.array(np.meshgrid(*[(a, b) for a, b in zip(lo, hi)], indexing="ij")).reshape(component.ndim, -1).T
    return Seeds(fg, np.unique(corners, axis=0))


def gse_refine(cam: np.ndarray, image: np.ndarray, spacing: tuple[float, ...], *, lam: float = 1.0,
               ratio: float = 1.0, margin: int = 5, region: np.ndarray | None = None, smooth: float = 1.0
               ) -> tuple[np.ndarray, np.ndarray, Seeds | None]:
    """(refined soft map, pseudo-mask, seeds); ``image`` standardised (zero mean, unit SD) by the caller.

    The geodesic runs on the image smoothed by ``smooth`` voxels: with the intensity-only cost (lam 1) pixel
    noise would otherwise add up along every path and stop the expansion inside a homogeneous organ."""
    t = best_threshold(cam, image, region)
    pseudo = largest_component(cam >= t)
    if not pseudo.any():
        return cam, pseudo, None
    seeds = seed_points(pseudo, spacing, margin)
    # distances only matter near the seeds (the weight vanishes further out): work in the seeds' box
    lo, hi = seeds.background.min(0), seeds.background.max(0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = image[box].astype(np.float32)
    sub = ndimage.gaussian_filter(sub, smooth) if smooth else sub

    def from_points(points: np.ndarray) -> np.ndarray:
        s = np.zeros(sub.shape, bool)
        s[tuple((points - lo).T)] = True
        d = np.full(cam.shape, np.inf)
        d[box] = geodesic_distance(sub, s, spacing, lam=lam)
        return d

    d_f, d_b = from_points(seeds.foreground), from_points(seeds.background)
    p_f, p_b = np.exp(-ratio * d_f), 1 - np.exp(-ratio * d_b)
    egd = np.full(cam.shape, 0.5)
    back, fore = p_b < 0.5, p_f > 0.5
    egd[back] = p_b[back]
    egd[fore] = p_f[fore]
    both = back & fore
    egd[both] = np.where(d_b[both] < d_f[both], p_b[both], p_f[both])
    w = np.clip((np.exp(-ratio * np.minimum(d_b, d_f)) - 0.5) / 0.5, 0, None)
    refined = w * egd + (1 - w) * cam
    lo, hi = refined.min(), refined.max()
    refined = (refined - lo) / (hi - lo) if hi > lo else refined
    mask = largest_component(refined >= 0.5)
    return refined.astype(np.float32), mask, seeds
