"""PCT-Net: a 3D U-shaped network whose deep stages run a convolution block and a shifted-window
transformer (MONAI's Swin layer: W-MSA then SW-MSA) in parallel and sum them.

CPU-sized by default (channels 16/32/64/128/256 on 32x64x64 patches); the layout follows MIS-FM:
convolutional levels 0-1, parallel conv+transformer levels 2-4 in the encoder and levels 3-2 in the
decoder, transposed-convolution upsampling with skip concatenation, and a 1x1 head.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.nets.swin_unetr import BasicLayer


def _bn_act_conv(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.BatchNorm3d(cin), nn.PReLU(), nn.Conv3d(cin, cout, k, padding=k // 2)]


class ConvBlock(nn.Sequential):
    """BN-PReLU-Conv-BN-PReLU-Dropout-Conv (pre-activation)."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__(*_bn_act_conv(cin, cout), *_bn_act_conv(cout, cout)[:2], nn.Dropout3d(dropout),
                         nn.Conv3d(cout, cout, 3, padding=1))


class PCTBlock(nn.Module):
    """Convolution and Swin transformer in parallel, summed."""

    def __init__(self, channels: int, heads: int, window: int, dropout: float, drop_path: float):
        super().__init__()
        self.conv = ConvBlock(channels, channels, dropout)
        self.swin = BasicLayer(dim=channels, depth=2, num_heads=heads, window_size=(window,) * 3,
                               drop_path=[drop_path, drop_path], qkv_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.swin(x)


class Down(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.MaxPool3d(2), *_bn_act_conv(cin, cout))


class UpCat(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.up = nn.Sequential(nn.BatchNorm3d(cin), nn.PReLU(), nn.ConvTranspose3d(cin, cskip, 2, stride=2))
        self.fuse = nn.Sequential(*_bn_act_conv(2 * cskip, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.up(x), skip], dim=1))


class PCTNet(nn.Module):
    def __init__(self, in_channels: int = 1, n_classes: int = 2, channels: tuple[int, ...] = (16, 32, 64, 128, 256),
                 heads: tuple[int, ...] = (2, 4, 8), window: int = 4,
                 dropout: tuple[float, ...] = (0.0, 0.0, 0.1, 0.2, 0.2), drop_path: float = 0.1):
        super().__init__()
        c0, c1, c2, c3, c4 = channels
        self.config = {"in_channels": in_channels, "n_classes": n_classes, "channels": list(channels),
                       "heads": list(heads), "window": window}
        self.e0 = nn.Sequential(nn.Conv3d(in_channels, c0, 3, padding=1), ConvBlock(c0, c0, dropout[0]))
        self.e1 = nn.Sequential(Down(c0, c1), ConvBlock(c1, c1, dropout[1]))
        self.e2 = nn.Sequential(Down(c1, c2), PCTBlock(c2, heads[0], window, dropout[2], drop_path))
        self.e3 = nn.Sequential(Down(c2, c3), PCTBlock(c3, heads[1], window, dropout[3], drop_path))
        self.e4 = nn.Sequential(Down(c3, c4), PCTBlock(c4, heads[2], window, dropout[4], drop_path))
        self.u3, self.d3 = UpCat(c4, c3, c3), PCTBlock(c3, heads[1], window, dropout[3], drop_path)
        self.u2, self.d2 = UpCat(c3, c2, c2), PCTBlock(c2, heads[0], window, dropout[2], drop_path)
        self.u1, self.d1 = UpCat(c2, c1, c1), ConvBlock(c1, c1, dropout[1])
        self.u0, self.d0 = UpCat(c1, c0, c0), ConvBlock(c0, c0, dropout[0])
        self.head = nn.Conv3d(c0, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) with D, H, W divisible by 16 -> (B, n_classes, D, H, W) logits."""
        if any(s % 16 for s in x.shape[2:]):
            raise ValueError(f"PCT-Net needs patch sizes divisible by 16, got {tuple(x.shape[2:])}")
        x0 = self.e0(x)
        x1 = self.e1(x0)
        x2 = self.e2(x1)
        x3 = self.e3(x2)
        x4 = self.e4(x3)
        y = self.d3(self.u3(x4, x3))
        y = self.d2(self.u2(y, x2))
        y = self.d1(self.u1(y, x1))
        y = self.d0(self.u0(y, x0))
        return self.head(y)
