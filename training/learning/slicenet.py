"""The learning loop's network: a 2.5D U-Net on body-centred slice crops, sized for a 2-core CPU.

Inputs are the coreset probe's crops (64 x 64 at 4 mm, centred on each slice's body without labels, soft-tissue and
bone windows) of a slice and its neighbours (``CONTEXT`` each side): 2 x (2 CONTEXT + 1) channels.  One network
segments every target of a project; a target a volume has no contour of is unknown, not background (the coreset
probe's marginal loss), so partly labelled volumes train it.  Volume Fusion pretraining uses the same network with a
head of K + 1 fusion classes, replaced at fine-tuning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from monai.networks.nets import UNet

from ..coreset.probe import WINDOWS

CONTEXT = 1  # neighbouring slices on each side in the input


@dataclass
class NetSpec:
    """The architecture, stored in every checkpoint so the loader rebuilds the same network."""

    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    res_units: int = 2
    context: int = CONTEXT
    #: 0: MONAI's U-Net ends in a layer as wide as its classes; N: it ends in N feature maps and a 1x1 convolution
    #: gives the classes (a wider last layer; tried against a target lost in long runs, docs/benchmarks.md 7)
    head: int = 0

    @property
    def in_channels(self) -> int:
        return len(WINDOWS) * (2 * self.context + 1)

    def build(self, out_channels: int) -> torch.nn.Module:
        unet = UNet(spatial_dims=2, in_channels=self.in_channels, out_channels=self.head or out_channels,
                    channels=tuple(self.channels), strides=(2,) * (len(self.channels) - 1),
                    num_res_units=self.res_units, norm="batch")
        return torch.nn.Sequential(unet, torch.nn.Conv2d(self.head, out_channels, 1)) if self.head else unet

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "NetSpec":
        return cls(list(meta.get("channels", [16, 32, 64, 128])), int(meta.get("res_units", 2)),
                   int(meta.get("context", CONTEXT)), int(meta.get("head", 0)))


def stack(images: torch.Tensor, rows: np.ndarray | list[int], context: int = CONTEXT) -> torch.Tensor:
    """(B, 2 (2c+1), H, W) float inputs: each row's slice with ``context`` neighbours each side (edge slices
    repeat at the volume's ends)."""
    rows = np.asarray(rows, int)
    z = len(images)
    picks = np.clip(rows[:, None] + np.arange(-context, context + 1)[None, :], 0, z - 1)  # (B, 2c+1)
    x = images[torch.from_numpy(picks.reshape(-1))].float()  # (B (2c+1), 2, H, W)
    return x.reshape(len(rows), -1, *x.shape[-2:])


def n_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
