"""The MedLAM network: a 3D encoder-decoder with a relative-distance head and multi-scale features.

Sized for CPU inference (about 5 M parameters; shipped in fp16 under 20 MB): encoder channels
16/32/64/128/192 over 64^3 -> 4^3, decoder features at 1/4 (16^3, 12 mm voxels) and 1/2 (32^3, 6 mm).
The method's full-resolution decoder level is left out: it multiplies CPU cost several times and the
refinement it serves is already at half a 3 mm voxel of the box faces' accuracy needs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

#: r of r * tanh(f0 - f1): the largest offsets (mm) the head can express, (x, y, z) LPS.
RDR_RANGE_MM = (600.0, 600.0, 1500.0)


def _unit(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
                         nn.LeakyReLU(0.01, inplace=True))


class MedLAMNet(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128, 192), feature_channels: int = 32,
                 patch: int = 64, hidden: int = 128):
        super().__init__()
        self.patch = patch
        self.encoder = nn.ModuleList()
        cin = 1
        for c in channels:
            self.encoder.append(nn.Sequential(_unit(cin, c), _unit(c, c)))
            cin = c
        c1, c2, c3, c4, c5 = channels
        self.dec8 = _unit(c5 + c4, 2 * feature_channels)
        self.dec16 = nn.Sequential(_unit(2 * feature_channels + c3, feature_channels),
                                   _unit(feature_channels, feature_channels))
        self.dec32 = _unit(feature_channels + c2, feature_channels)
        bottleneck = patch // 2 ** (len(channels) - 1)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Flatten(), nn.Linear(c5 * bottleneck**3, hidden),
                                  nn.LeakyReLU(0.01, inplace=True), nn.Linear(hidden, hidden // 2),
                                  nn.LeakyReLU(0.01, inplace=True), nn.Linear(hidden // 2, 3))
        self.register_buffer("rdr_range", torch.tensor(RDR_RANGE_MM))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for i, level in enumerate(self.encoder):
            x = level(x if i == 0 else F.max_pool3d(x, 2))
            skips.append(x)
        return skips

    def position(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, P, P, P) -> (B, 3) position code f(x); offsets are r * tanh(f(a) - f(b))."""
        return self.head(self.encode(x)[-1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> position code (B, 3) and L2-normalised features [(B, C, P/4^3), (B, C, P/2^3)]."""
        s = self.encode(x)
        return self.head(s[4]), self._decode(s)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Fully convolutional features of any input whose sides are multiples of 16 (no position head)."""
        return self._decode(self.encode(x))

    def _decode(self, s: list[torch.Tensor]) -> list[torch.Tensor]:
        up = lambda t: F.interpolate(t, scale_factor=2, mode="trilinear", align_corners=False)  # noqa: E731
        d8 = self.dec8(torch.cat([up(s[4]), s[3]], 1))
        d16 = self.dec16(torch.cat([up(d8), s[2]], 1))
        d32 = self.dec32(torch.cat([up(d16), s[1]], 1))
        return [F.normalize(d16, dim=1), F.normalize(d32, dim=1)]

    def offset_mm(self, f_a: torch.Tensor, f_b: torch.Tensor) -> torch.Tensor:
        """Predicted physical offset a - b in mm (x, y, z)."""
        return self.rdr_range * torch.tanh(f_a - f_b)
