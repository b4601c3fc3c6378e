"""Self-supervised MedLAM training: one CPU process, one GPU, or many through ``torchrun`` (DDP).

Resumable: the full state (weights, optimizer, step, RNG) is written atomically every ``save_every``
steps; starting again with the same output continues where it stopped.  A CSV loss log sits beside it.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed
from ..atomic import atomic_path, write_json_atomic
from ..config_file import load_config
from ..datasets import find_cases, split_members
from ..io import read_volume
from ..lr_schedule import set_lr, warmup_cosine
from ..segmenters import load_state_dict
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
    rank, world, device = distributed.setup()
    if config.threads:
        torch.set_num_threads(config.threads)
    volumes = load_training_volumes(config.data, config.split)
    torch.manual_seed(config.seed + 1000 * rank)  # dropout and anchor sampling draw from torch's generator
    model = MedLAMNet().to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, rng = 0, np.random.default_rng(config.seed + 1000 * rank)
    if out.is_file():
        state = torch.load(out, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        step = int(state["step"])
        rng.bit_generator.state = state["rng"]
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        log.info("resumed %s at step %d", out, step)
    elif config.init:
        model.load_state_dict({k: v.float() for k, v in load_state_dict(config.init).items()})
        log.info("initialised from %s", config.init)
    net = distributed.wrap(model, world)
    log_path = out.with_suffix(".losses.csv")
    started = time.time()
    while step < config.steps:
        net.train()
        batch = sample_batch(volumes, config.batch_pairs, rng)
        ori, aug = batch.ori.to(device), batch.aug.to(device)
        # One forward over both views: DDP allows each parameter one gradient hook per backward.
        codes, feats = net(torch.cat([ori, aug]))
        n = ori.shape[0]
        f_ori, feats_ori, feats_aug = codes[:n], [f[:n] for f in feats], [f[n:] for f in feats]
        pred = model.offset_mm(f_ori[0::2], f_ori[1::2])
        l_rdr = rdr_loss(pred, (batch.centre_mm[0::2] - batch.centre_mm[1::2]).to(device))
        l_mss = mss_loss(feats_ori, feats_aug, batch.ori_mm.to(device), batch.aug_mm.to(device), ori, aug,
                         config.mss_anchors)
        loss = l_rdr + l_mss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        set_lr(optim, config.lr * warmup_cosine(step, config.steps))
        optim.step()
        step += 1
        if rank == 0:
            new = not log_path.exists()
            with log_path.open("a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(["step", "rdr", "mss", "seconds"])
                w.writerow([step, f"{l_rdr.item():.5f}", f"{l_mss.item():.5f}", f"{time.time() - started:.1f}"])
            if progress is not None:
                progress(step, config.steps, f"rdr {l_rdr.item():.3f} mss {l_mss.item():.3f}")
            if step % config.save_every == 0 or step == config.steps:
                with atomic_path(out) as tmp:
                    torch.save({"model": model.state_dict(), "optimizer": optim.state_dict(),
                                "step": step, "rng": rng.bit_generator.state,
                                "torch_rng": torch.get_rng_state(),
                                "config": asdict(config)}, tmp)
    distributed.barrier()
    return out


def export_weights(checkpoint: str | os.PathLike[str], dst: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    """Write the inference weights (fp16 tensors only) and a JSON sidecar describing the training."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in state["model"].items()}
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        torch.save(weights, tmp)
    write_json_atomic({**info, "steps": state["step"], "config": state.get("config")}, dst.with_suffix(".json"))
    return dst
