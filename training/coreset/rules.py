"""Selection rules over per-sample values (arXiv 2306.14113) and Dice dynamics (arXiv 2308.01189).  Labels that
look wrong are ranked by ``run.suspicious_ranking`` from held-out probes."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans


def normalise_epoch(values: np.ndarray) -> np.ndarray:
    """Values are comparable only within an epoch: divide (N,) or (N, D) by the epoch's mean magnitude."""
    v = np.asarray(values, dtype=np.float64)
    return v / max(float(np.abs(v).mean()), 1e-12)


def online_cluster_rule(values: np.ndarray, clusters: int = 10, seed: int = 0) -> tuple[np.ndarray, float]:
    """(keep mask, lr scale): KMeans on the value vectors; if the largest cluster holds more than half of the
    samples it is the redundant bulk and is dropped for this epoch; the learning rate scales with the kept fraction."""
    v = normalise_epoch(np.atleast_2d(np.asarray(values, dtype=np.float64).T).T)
    k = min(clusters, len(v))
    labels = KMeans(n_clusters=k, random_state=seed, n_init="auto").fit_predict(v)
    counts = np.bincount(labels, minlength=k)
    keep = np.ones(len(v), bool)
    if counts.max() > len(v) / 2:
        keep = labels != int(np.argmax(counts))
    return keep, float(keep.mean())


def offline_coreset(epoch_values: np.ndarray, budget: int, low: float = 0.1, high: float = 40.0,
                    min_fraction: float = 0.3, seed: int = 0) -> np.ndarray:
    """Indices of a coreset from (E, N) scalar values: a sample counts in an epoch when low < v/mean < high (neither
    learned already nor an outlier); samples counted in at least ``min_fraction`` of the epochs qualify, a random
    ``budget`` of them is kept, and when too few qualify the highest counts fill the budget."""
    e = np.asarray(epoch_values, dtype=np.float64)
    n = e.shape[1]
    if not 0 < budget <= n:
        raise ValueError(f"budget {budget} must be between 1 and the {n} samples")
    norm = np.stack([normalise_epoch(row) for row in e])
    count = ((norm > low) & (norm < high)).sum(0)
    rng = np.random.default_rng(seed)
    qualified = np.flatnonzero(count >= max(1, int(np.ceil(min_fraction * len(e)))))
    if len(qualified) >= budget:
        return np.sort(rng.choice(qualified, budget, replace=False))
    order = np.lexsort((rng.random(n), -count))  # highest count first, ties at random
    return np.sort(order[:budget])


def dice_dynamics(dice_per_epoch: np.ndarray) -> np.ndarray:
    """Dynamic average Dice per sample from (E, N) training Dice: low values are learned late (informative),
    high ones early (redundant)."""
    return np.asarray(dice_per_epoch, dtype=np.float64).mean(0)
