"""Fusing CAMs of several depths: UM-CAM weights every map, pixel by pixel, by its certainty exp(-entropy)."""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def binary_entropy(c: np.ndarray) -> np.ndarray:
    """H(c) = -[c log c + (1 - c) log(1 - c)] per pixel, for maps in [0, 1] (natural log)."""
    c = np.asarray(c, dtype=np.float64)
    return -(c * np.log(c + EPS) + (1 - c) * np.log(1 - c + EPS))


def _normalise(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def um_fusion(cams: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(fused map, uncertainty): UM = sum_k w_k c_k / sum_k w_k with w_k = exp(-H(c_k)), min-max normalised;
    uncertainty = mean entropy of the fused maps. Maps are normalised slice by slice along axis 0 when 3D."""
    stack = np.stack([np.asarray(c, dtype=np.float64) for c in cams])
    h = binary_entropy(stack)
    w = np.exp(-h)
    fused = (w * stack).sum(0) / (w.sum(0) + EPS)
    fused = np.stack([_normalise(s) for s in fused]) if fused.ndim == 3 else _normalise(fused)
    return fused.astype(np.float32), h.mean(0).astype(np.float32)


def mean_fusion(cams: list[np.ndarray]) -> np.ndarray:
    fused = np.mean([np.asarray(c, dtype=np.float64) for c in cams], axis=0)
    return (np.stack([_normalise(s) for s in fused]) if fused.ndim == 3 else _normalise(fused)).astype(np.float32)
