"""The one training loop of every model here (MedLAM, Volume Fusion, PCT-Net, the learning loop's slice network, the
CAM classifier and refinement network, the coreset probe).

A model brings its network and a ``step_loss(net, ctx)`` that draws its own batch from ``ctx.rng`` and returns the
loss; the loop owns the rest: seeds, optimizer, learning-rate schedule (a pure function of the step, so a resumed
run with a raised step budget follows the new schedule), gradient clipping, device, DistributedDataParallel under
``torchrun``, a loss CSV, progress and cancel callbacks, and resumable checkpoints in :mod:`.checkpoint`'s format.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..progress import CancelledFn, ProgressFn
from . import distributed
from .checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .lr_schedule import polynomial, set_lr, warmup_cosine

log = logging.getLogger(__name__)

#: learning-rate factor in [0, 1] of (step, total steps)
SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": lambda step, total: 1.0,
    "cosine": lambda step, total: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1))),
    "warmup_cosine": warmup_cosine,
    # OneCycle's shape: 30 % warm-up, cosine to zero
    "one_cycle": lambda step, total: warmup_cosine(step, total, 0.3),
    "poly": polynomial,
}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass
class LoopSpec:
    """How a model is trained, apart from its data and loss."""

    steps: int
    lr: float
    weight_decay: float = 0.0
    optimizer: str = "adam"
    schedule: str = "cosine"
    seed: int = 0
    save_every: int = 0        # steps between resumable checkpoints (0: at the end only)
    clip: float | None = None  # gradient norm clip
    csv_every: int = 0         # steps between loss-CSV rows (0: no CSV)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r} (known: {', '.join(SCHEDULES)})")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r} (known: {', '.join(OPTIMIZERS)})")


@dataclass
class StepContext:
    """What a model's ``step_loss`` may use: its random generator, the step (0-based) and the device."""

    rng: np.random.Generator
    step: int
    device: torch.device
    total: int
    extra: dict[str, float] = field(default_factory=dict)  # values to log beside the loss


@dataclass
class FitResult:
    model: torch.nn.Module
    steps: int
    cpu_seconds: float
    wall_seconds: float
    path: Path | None = None
    skipped: list[str] = field(default_factory=list)
    last_loss: float = float("nan")
    scores: dict[str, float] = field(default_factory=dict)  # what the model's own code measured after training


StepLoss = Callable[[torch.nn.Module, StepContext], torch.Tensor]


def seeded(build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """The network with initial weights drawn from ``seed``, not from the caller's torch state."""
    torch.manual_seed(seed)
    return build()


def fit(model: torch.nn.Module, step_loss: StepLoss, spec: LoopSpec, out: str | os.PathLike[str] | None = None, *,
        kind: str = "model", meta: dict[str, Any] | None = None, init: str | os.PathLike[str] | None = None,
        progress: ProgressFn | None = None, cancelled: CancelledFn | None = None,
        device: torch.device | str | None = None, use_distributed: bool = False,
        on_step: Callable[[torch.nn.Module, int], None] | None = None) -> FitResult:
    """Train ``model`` for ``spec.steps`` (resuming from ``out`` when it holds a checkpoint of this run).

    ``init``: weights to start from when not resuming (name- and shape-matched: a pretrained body under a new head).
    ``on_step(model, step)`` runs after each step (1-based), e.g. to value a pool. Cancelling (``cancelled``, or
    ``progress`` raising ``InterruptedError``) saves the last completed step when ``out`` is set, so the run resumes
    there, and raises ``InterruptedError``."""
    rank, world = 0, 1
    if use_distributed:
        rank, world, dev = distributed.setup()
    else:
        dev = torch.device(device) if device is not None else torch.device("cpu")
    model = model.to(dev)
    optim = OPTIMIZERS[spec.optimizer](model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    rng = np.random.default_rng(spec.seed + 1000 * rank)
    torch.manual_seed(spec.seed + 1000 * rank)  # dropout and any torch-side sampling
    out_path = Path(out) if out is not None else None
    step, skipped = 0, []
    if out_path is not None and out_path.is_file():
        state = load_checkpoint(out_path, kind)
        if "optimizer" not in state or "step" not in state:
            raise CheckpointError(f"{out_path}: holds weights, not a training state to resume; choose another output")
        load_weights(model, state, out_path)
        optim.load_state_dict(state["optimizer"])
        step = int(state["step"])
        if "rng" in state:
            rng.bit_generator.state = state["rng"]
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        log.info("resumed %s at step %d", out_path, step)
    elif init is not None:
        _, skipped = load_weights(model, load_checkpoint(init), init, strict=False)
        log.info("initialised from %s; skipped %d tensors: %s", init, len(skipped), skipped)
    net = distributed.wrap(model, world) if use_distributed else model
    schedule = SCHEDULES[spec.schedule]
    csv_path = out_path.with_suffix(".losses.csv") if out_path is not None and spec.csv_every else None
    cpu0, wall0 = time.process_time(), time.time()
    loss_value = float("nan")

    def save() -> None:
        if out_path is not None and rank == 0:
            save_checkpoint(out_path, model, kind=kind, meta=meta, step=step, optimizer=optim, rng=rng)

    while step < spec.steps:
        if cancelled is not None and cancelled():
            save()
            raise InterruptedError("cancelled")
        net.train()
        ctx = StepContext(rng, step, dev, spec.steps)
        loss = step_loss(net, ctx)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        if spec.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
        set_lr(optim, spec.lr * schedule(step, spec.steps))
        optim.step()
        step += 1
        loss_value = float(loss.detach())
        if on_step is not None:
            on_step(model, step)
        if rank == 0:
            if csv_path is not None and (step % spec.csv_every == 0 or step == spec.steps):
                _log_row(csv_path, step, loss_value, ctx.extra, time.time() - wall0)
            if progress is not None:
                try:
                    progress(step, spec.steps, f"loss {loss_value:.4f}")
                except InterruptedError:  # a dock's progress bridge raises this on Cancel: keep this step
                    save()
                    raise
            if spec.save_every and step % spec.save_every == 0 and step < spec.steps:
                save()
    save()
    if use_distributed:
        distributed.barrier()
    model.eval()
    return FitResult(model, step, time.process_time() - cpu0, time.time() - wall0, out_path, skipped, loss_value)


def _log_row(path: Path, step: int, loss: float, extra: dict[str, float], seconds: float) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["step", "loss", *extra, "seconds"])
        w.writerow([step, f"{loss:.5f}", *(f"{v:.5f}" for v in extra.values()), f"{seconds:.1f}"])
