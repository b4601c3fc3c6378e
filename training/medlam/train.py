"""Self-supervised MedLAM training: one CPU process, one GPU, or many through ``torchrun`` (DDP).

Resumable: the full state (weights, optimizer, step, RNG) is written atomically every ``save_every``
steps; starting again with the same output continues where it stopped.  A CSV loss log sits beside it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..engine import distributed
from ..engine.checkpoint import export_weights as checkpoint_export
from ..engine.config_file import load_config
from ..engine.loop import LoopSpec, StepContext, fit, seeded
from ..volumes.datasets import find_cases, split_members
from ..volumes.io import read_volume
from .losses import mss_loss, rdr_loss
from .network import MedLAMNet
from .preprocess import PreparedCT, looks_like_ct, prepare_ct
from .sampling import sample_batch

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).with_name("medlam_cpu.toml")


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)
    steps: int = 600
    batch_pairs: int = 2
    lr: float = 3e-4
    weight_decay: float = 1e-4
    save_every: int = 50
    seed: int = 0
    mss_anchors: int = 20
    threads: int = 0  # 0: torch's default
    #: keep only cases of this split where a data folder has a ``manifest.json`` with per-case splits
    #: (OpenKBP: train on ``train-pats``, never on the ``validation-pats`` that benchmarks report on)
    split: str = ""
    #: start a new run from these weights (a previous export or checkpoint); ignored when resuming
    init: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> "TrainConfig":
        return load_config(cls, "medlam", path, overrides, "MedLAM training")


def load_training_volumes(folders: list[str], split: str = "") -> list[PreparedCT]:
    """Every CT volume under the folders (labels unused), prepared on MedLAM's grid.

    With ``split``, a folder that lists per-case splits contributes only that split's cases.
    """
    volumes = []
    for folder in folders:
        members = split_members(folder, split)
        for case in find_cases(folder):
            if members is not None and case.name not in members:
                continue
            vol = read_volume(case.image)
            if looks_like_ct(vol):
                volumes.append(prepare_ct(vol))
                log.info("training volume %s: %s voxels at 3 mm", case.image, volumes[-1].array.shape)
    if not volumes:
        raise ValueError(f"no CT volume found under {folders}")
    return volumes


def train(config: TrainConfig, out: str | os.PathLike[str], progress: Any = None) -> Path:
    """Train (or resume) and return the path of the training checkpoint ``out``."""
    out = Path(out)
    if config.threads:
        torch.set_num_threads(config.threads)
    rank, _, _ = distributed.setup()
    volumes = load_training_volumes(config.data, config.split)
    model = seeded(MedLAMNet, config.seed + 1000 * rank)

    def step_loss(net: torch.nn.Module, ctx: StepContext) -> torch.Tensor:
        batch = sample_batch(volumes, config.batch_pairs, ctx.rng)
        ori, aug = batch.ori.to(ctx.device), batch.aug.to(ctx.device)
        # One forward over both views: DDP allows each parameter one gradient hook per backward.
        codes, feats = net(torch.cat([ori, aug]))
        n = ori.shape[0]
        f_ori, feats_ori, feats_aug = codes[:n], [f[:n] for f in feats], [f[n:] for f in feats]
        pred = model.offset_mm(f_ori[0::2], f_ori[1::2])
        l_rdr = rdr_loss(pred, (batch.centre_mm[0::2] - batch.centre_mm[1::2]).to(ctx.device))
        l_mss = mss_loss(feats_ori, feats_aug, batch.ori_mm.to(ctx.device), batch.aug_mm.to(ctx.device), ori, aug,
                         config.mss_anchors)
        ctx.extra.update(rdr=float(l_rdr.detach()), mss=float(l_mss.detach()))
        return l_rdr + l_mss

    spec = LoopSpec(config.steps, config.lr, config.weight_decay, "adamw", "warmup_cosine", config.seed,
                    config.save_every, clip=5.0, csv_every=1)
    fit(model, step_loss, spec, out, kind="medlam", meta={"config": asdict(config)}, init=config.init or None,
        progress=progress, use_distributed=True)
    return out


def export_weights(checkpoint: str | os.PathLike[str], dst: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    """Write the inference weights (fp16, no optimizer state) and a JSON sidecar describing the training."""
    return checkpoint_export(checkpoint, dst, info, "medlam")
