"""MedLAM's two self-supervised losses: relative distance regression (RDR) and multi-scale similarity (MSS)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Positive radius per feature scale (mm): voxels this close to an anchor are the same place.
MSS_TAU_MM = (12.0, 6.0)
#: RDR is regressed in units of this many mm so that it does not swamp MSS numerically.
RDR_UNIT_MM = 50.0
MSS_TEMPERATURE = 15.0


def rdr_loss(offset_pred_mm: torch.Tensor, offset_true_mm: torch.Tensor) -> torch.Tensor:
    """MSE between predicted and true physical offsets between two patches (in RDR_UNIT_MM units)."""
    return F.mse_loss(offset_pred_mm / RDR_UNIT_MM, offset_true_mm / RDR_UNIT_MM)


def _pool_coords(mm: torch.Tensor, size: int) -> torch.Tensor:
    return F.adaptive_avg_pool3d(mm, size)


def _direction_loss(f_anchor: torch.Tensor, mm_anchor: torch.Tensor, f_search: torch.Tensor, mm_search: torch.Tensor,
                    tau: float, n_anchors: int, weight: torch.Tensor) -> torch.Tensor:
    """Anchors from one view, softmax over all voxels of the other view; BCE-like on positives/negatives."""
    b, c = f_anchor.shape[:2]
    fa = f_anchor.flatten(2)  # (B, C, N)
    fs = f_search.flatten(2)
    ma = mm_anchor.flatten(2)  # (B, 3, N)
    ms = mm_search.flatten(2)
    idx = torch.multinomial(weight.flatten(1) + 1e-3, n_anchors, replacement=False)  # (B, K), foreground preferred
    anchors = torch.gather(fa, 2, idx[:, None].expand(b, c, n_anchors))  # (B, C, K)
    anchor_mm = torch.gather(ma, 2, idx[:, None].expand(b, 3, n_anchors))
    logits = MSS_TEMPERATURE * torch.einsum("bck,bcn->bkn", anchors, fs)
    p = logits.softmax(dim=-1).clamp(1e-7, 1 - 1e-7)
    dist = torch.cdist(anchor_mm.transpose(1, 2), ms.transpose(1, 2))  # (B, K, N)
    pos, neg = dist < tau, dist >= 2 * tau
    loss_pos = -(torch.log(p) * pos).sum() / pos.sum().clamp(min=1)
    loss_neg = -(torch.log1p(-p) * neg).sum() / neg.sum().clamp(min=1)
    return loss_pos + loss_neg


def mss_loss(feats_ori: list[torch.Tensor], feats_aug: list[torch.Tensor], ori_mm: torch.Tensor, aug_mm: torch.Tensor,
             ori_img: torch.Tensor, aug_img: torch.Tensor, n_anchors: int = 20) -> torch.Tensor:
    """Mean over scales and both directions (ori->aug, aug->ori) of the anchor similarity loss."""
    total = torch.zeros((), device=ori_img.device)
    for f_o, f_a, tau in zip(feats_ori, feats_aug, MSS_TAU_MM):
        size = f_o.shape[-1]
        mo, ma = _pool_coords(ori_mm, size), _pool_coords(aug_mm, size)
        wo, wa = F.adaptive_avg_pool3d(ori_img, size), F.adaptive_avg_pool3d(aug_img, size)
        total = total + _direction_loss(f_o, mo, f_a, ma, tau, n_anchors, (wo > 0.1).float())
        total = total + _direction_loss(f_a, ma, f_o, mo, tau, n_anchors, (wa > 0.1).float())
    return total / (2 * len(feats_ori))
