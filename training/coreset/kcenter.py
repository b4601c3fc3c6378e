"""k-center greedy (Sener & Savarese 2018): each pick is the sample farthest from everything chosen so far."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import pairwise_distances


def k_center_greedy(features: np.ndarray, k: int, chosen: list[int] | None = None) -> list[int]:
    """Indices of ``k`` new samples, in pick order; ``chosen`` are already labelled (or the first pick is the
    sample nearest the mean). A 2-approximation of the minimax cover radius."""
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    chosen = list(chosen or [])
    if not 0 < k <= n - len(chosen):
        raise ValueError(f"budget {k} must be between 1 and the {n - len(chosen)} samples not yet chosen")
    picks: list[int] = []
    if chosen:
        dist = pairwise_distances(x, x[chosen]).min(axis=1)
    else:
        first = int(np.argmin(((x - x.mean(0)) ** 2).sum(1)))
        picks.append(first)
        dist = pairwise_distances(x, x[[first]])[:, 0]
    while len(picks) < k:
        dist[chosen + picks] = -1
        nxt = int(np.argmax(dist))
        picks.append(nxt)
        dist = np.minimum(dist, pairwise_distances(x, x[[nxt]])[:, 0])
    return picks


def cover_radius(features: np.ndarray, centres: list[int]) -> float:
    """The largest distance from a sample to its nearest centre."""
    x = np.asarray(features, dtype=np.float64)
    return float(pairwise_distances(x, x[centres]).min(axis=1).max())
