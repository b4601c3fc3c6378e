"""Learning-rate schedules as pure functions of (step, total steps).

The rate is recomputed from the step counter on every iteration instead of living in a torch scheduler's
state: a run resumed with a larger step budget (``steps`` raised in the config) then simply follows the new
schedule, where a restored ``OneCycleLR`` would refuse to step past its original total.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, total: int, warmup_frac: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup_frac`` of training, then cosine decay to zero (factor in [0, 1])."""
    warm = max(1, int(round(warmup_frac * total)))
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def polynomial(step: int, total: int, power: float = 0.8) -> float:
    """nnU-Net style poly decay ``(1 - step/total) ** power`` (factor in [0, 1])."""
    return (1.0 - min(step, total) / max(1, total)) ** power


def set_lr(optim: torch.optim.Optimizer, lr: float) -> None:
    for group in optim.param_groups:
        group["lr"] = lr
