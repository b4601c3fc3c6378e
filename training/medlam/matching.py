"""MedLAM's similarity step on whole volumes: features computed once per volume, template kernels matched in them.

Positions are exact by construction.  A feature voxel ``j`` at stride ``s`` is centred on input voxel
``s*j + (s-1)/2``; a template kernel is the ``k^3`` block of features around its point, and it remembers
the offset ``d`` from the block's centre to the point.  Wherever the block matches best in a query, the
point is that block's centre plus ``d``.  So a volume matched against itself returns its own points,
which a pad-and-crop correlation followed by resizing does not (it drifted by about one voxel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .network import MedLAMNet
from .preprocess import PreparedCT

#: (stride, kernel size) of the network's two feature maps: 1/4 with 2^3 kernels, 1/2 with 4^3 (as MedLAM).
SCALES = ((4, 2), (2, 4))
#: Search radius (3 mm voxels) of the coarse scale around the starting point: MedLAM's 64^3 patch.
COARSE_RADIUS = 32
#: Search radius of the fine scale around the coarse match: a bit more than one coarse feature voxel.
FINE_RADIUS = 6
_MULTIPLE = 16  # the encoder halves four times
#: Features are computed over the body's bounding box plus this margin (3 mm voxels), not the whole scan:
#: a head-and-neck field of view is mostly air, and the network's receptive field needs only some context.
BODY_MARGIN = 16
BODY_UNIT = 0.1  # about -600 HU on MedLAM's intensity map


@dataclass
class VolumeFeatures:
    """A prepared CT and the feature maps [(C, D/s, H/s, W/s)], one per :data:`SCALES`, of its block at ``origin``."""

    prepared: PreparedCT
    maps: list[torch.Tensor]
    origin: np.ndarray  # zyx index in ``prepared`` of the block the maps cover


@dataclass
class PointKernel:
    """The features around one template point at every scale, and the point's offset from each block."""

    blocks: list[torch.Tensor]  # (C, k, k, k) per scale
    offsets: list[np.ndarray]  # (3,) zyx input voxels from the block centre to the point


@torch.inference_mode()
def volume_features(net: MedLAMNet, prepared: PreparedCT, device: torch.device) -> VolumeFeatures:
    """Run the network once over the body's box (air-padded at its far ends to a multiple of 16)."""
    arr = prepared.array
    body = np.nonzero(arr >= BODY_UNIT)
    if body[0].size:
        lo = np.maximum(0, np.array([a.min() for a in body]) - BODY_MARGIN)
        hi = np.minimum(arr.shape, np.array([a.max() for a in body]) + 1 + BODY_MARGIN)
    else:
        lo, hi = np.zeros(3, int), np.array(arr.shape)
    block = arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    pad = [(-n) % _MULTIPLE for n in block.shape]
    x = torch.from_numpy(np.pad(block, [(0, p) for p in pad]))[None, None].to(device)
    maps = net.features(x)
    return VolumeFeatures(prepared, [m[0].float().cpu() for m in maps], lo)


def _block_start(point: np.ndarray, stride: int, k: int, shape: tuple[int, ...]) -> np.ndarray:
    start = np.round((point - (stride - 1) / 2) / stride - (k - 1) / 2).astype(int)
    return np.clip(start, 0, np.array(shape) - k)


def _block_centre(start: np.ndarray, stride: int, k: int) -> np.ndarray:
    return stride * (start + (k - 1) / 2) + (stride - 1) / 2


def point_kernel(features: VolumeFeatures, point_zyx: np.ndarray) -> PointKernel:
    """The template kernel of a point given in the prepared grid's (continuous) zyx indices."""
    blocks, offsets = [], []
    point_zyx = np.asarray(point_zyx, float) - features.origin
    for fmap, (stride, k) in zip(features.maps, SCALES):
        a = _block_start(point_zyx, stride, k, fmap.shape[1:])
        blocks.append(fmap[:, a[0]:a[0] + k, a[1]:a[1] + k, a[2]:a[2] + k].clone())
        offsets.append(point_zyx - _block_centre(a, stride, k))
    return PointKernel(blocks, offsets)


def _match_scale(fmap: torch.Tensor, block: torch.Tensor, offset: np.ndarray, guess: np.ndarray, stride: int,
                 radius: float, top: int = 1) -> list[tuple[np.ndarray, float]]:
    """The ``top`` best block positions near ``guess`` (at least two feature voxels apart) -> [(point, similarity)]."""
    k = block.shape[-1]
    shape = np.array(fmap.shape[1:])
    centre = (guess - offset - (stride - 1) / 2) / stride - (k - 1) / 2
    lo = np.clip(np.floor(centre - radius / stride).astype(int), 0, shape - k)
    hi = np.clip(np.ceil(centre + radius / stride).astype(int), 0, shape - k)
    sub = fmap[:, lo[0]:hi[0] + k, lo[1]:hi[1] + k, lo[2]:hi[2] + k]
    sim = F.conv3d(sub[None], block[None])[0, 0] / float(k**3)  # mean cosine similarity over the block
    if top > 1:  # suppress each pick's neighbourhood so that the candidates are distinct places
        peaks = sim == F.max_pool3d(sim[None, None], 5, stride=1, padding=2)[0, 0]
        order = torch.argsort(torch.where(peaks, sim, torch.full_like(sim, -2.0)).flatten(), descending=True)[:top]
    else:
        order = sim.flatten().argmax()[None]
    out = []
    for flat in order.tolist():
        best = lo + np.array(np.unravel_index(flat, tuple(sim.shape)))
        out.append((_block_centre(best, stride, k) + offset, float(sim.flatten()[flat])))
    return out


@torch.inference_mode()
def match_point(features: VolumeFeatures, kernel: PointKernel, guess_zyx: np.ndarray,
                radius: float = COARSE_RADIUS, candidates: int = 1) -> tuple[np.ndarray, float]:
    """Coarse-to-fine best match of a template kernel near ``guess_zyx`` -> (point zyx, similarity in [-1, 1]).

    With ``candidates`` > 1 the fine scale examines that many coarse peaks and keeps the best sum of both
    scales' similarities, so that one misleading coarse peak does not decide alone.
    """
    start = np.asarray(guess_zyx, float) - features.origin
    (fmap0, (s0, _)), (fmap1, (s1, _)) = zip(features.maps, SCALES)
    best, best_total, best_score = start, -np.inf, 0.0
    for point, coarse in _match_scale(fmap0, kernel.blocks[0], kernel.offsets[0], start, s0, radius, candidates):
        (fine_point, fine), = _match_scale(fmap1, kernel.blocks[1], kernel.offsets[1], point, s1, FINE_RADIUS)
        if coarse + fine > best_total:
            best, best_total, best_score = fine_point, coarse + fine, fine
    return best + features.origin, best_score
