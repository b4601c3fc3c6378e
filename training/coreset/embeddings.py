"""Volume embeddings for diversity (k-center): MedLAM's self-supervised features, pooled over the body's box.

They need no label and no trained segmentation model, so they serve the 'annotate next' case."""

from __future__ import annotations

import numpy as np
import torch

from ..localization.localize import load_medlam
from ..medlam.matching import volume_features
from ..medlam.preprocess import prepare_ct
from ..volumes.volume import Volume


class MedLAMEmbedder:
    def __init__(self, weights=None, device: str = "cpu"):
        self.device = torch.device(device)
        self.net = load_medlam(weights, self.device)

    def __call__(self, volume: Volume) -> np.ndarray:
        """Mean- and max-pooled features of every scale, concatenated and L2-normalised."""
        maps = volume_features(self.net, prepare_ct(volume), self.device).maps
        parts = [torch.cat([m.mean((1, 2, 3)), m.amax((1, 2, 3))]) for m in maps]
        v = torch.cat(parts).numpy().astype(np.float64)
        return v / max(np.linalg.norm(v), 1e-12)
