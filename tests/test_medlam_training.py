"""MedLAM self-supervised training: the losses learn, checkpoints resume, torchrun runs DDP."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medlsam_training.engine.checkpoint import load_checkpoint
from medlsam_training.medlam.losses import mss_loss, rdr_loss
from medlsam_training.medlam.network import MedLAMNet
from medlsam_training.medlam.sampling import sample_batch
from medlsam_training.medlam.train import TrainConfig, export_weights, load_training_volumes, train


@pytest.fixture(scope="module")
def volumes(shared_data: Path):
    return load_training_volumes([str(shared_data / "ct_unlabelled")])


def test_sampled_views_keep_their_coordinates(volumes) -> None:
    batch = sample_batch(volumes, 1, np.random.default_rng(0))
    assert batch.ori.shape == (2, 1, 64, 64, 64) and batch.aug_mm.shape == (2, 3, 64, 64, 64)
    # The un-augmented grid is regular: 3 mm between neighbouring voxels along every axis.
    step = batch.ori_mm[0, :, 1:, 0, 0] - batch.ori_mm[0, :, :-1, 0, 0]
    np.testing.assert_allclose(step.abs().sum(0).numpy(), 3.0, atol=1e-3)
    np.testing.assert_allclose(batch.ori_mm[0, :, 32, 32, 32].numpy(), batch.centre_mm[0].numpy(), atol=1e-3)


@pytest.mark.slow
def test_a_few_steps_on_one_batch_decrease_both_losses(volumes) -> None:
    torch.manual_seed(0)
    net = MedLAMNet()
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = sample_batch(volumes, 2, np.random.default_rng(1))
    history = []
    for _ in range(12):
        f_ori, feats_ori = net(batch.ori)
        _, feats_aug = net(batch.aug)
        l_rdr = rdr_loss(net.offset_mm(f_ori[0::2], f_ori[1::2]), batch.centre_mm[0::2] - batch.centre_mm[1::2])
        torch.manual_seed(2)  # the same anchors every step, so the loss values are comparable
        l_mss = mss_loss(feats_ori, feats_aug, batch.ori_mm, batch.aug_mm, batch.ori, batch.aug)
        optim.zero_grad()
        (l_rdr + l_mss).backward()
        optim.step()
        history.append((l_rdr.item(), l_mss.item()))
    first, last = history[0], history[-1]
    assert last[0] < 0.5 * first[0], history
    assert last[1] < first[1], history


@pytest.mark.slow
def test_training_checkpoint_resumes_and_exports_small_fp16(shared_data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(data=[str(shared_data / "ct_unlabelled")], steps=2, batch_pairs=1, save_every=1)
    ckpt = train(cfg, tmp_path / "medlam.pt")
    cfg.steps = 3
    train(cfg, ckpt)
    rows = list(csv.DictReader((tmp_path / "medlam.losses.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]  # resumed at step 2, not restarted
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 3
    # every random stream (numpy's and torch's: dropout, anchors) is restored: 2 + 1 steps == 3 steps
    straight = train(TrainConfig(data=cfg.data, steps=3, batch_pairs=1, save_every=1), tmp_path / "straight.pt")
    ref = torch.load(straight, weights_only=True)
    assert all(torch.equal(ref["model"][k], state["model"][k]) for k in ref["model"]), "resumed run diverged"
    weights = export_weights(ckpt, tmp_path / "medlam_export.pt", {"data": cfg.data})
    assert weights.stat().st_size < 20e6
    exported = load_checkpoint(weights, "medlam")["model"]
    assert all(v.dtype == torch.float16 for v in exported.values() if v.is_floating_point())
    assert "optimizer" not in torch.load(weights, weights_only=True)


@pytest.mark.slow
def test_torchrun_ddp_on_two_cpu_processes(shared_data: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "medlsam_training.cli", "train-medlam",
           "--data", str(shared_data / "ct_unlabelled"), "--out", str(tmp_path / "ddp.pt"), "--steps", "1",
           "--batch-pairs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.load(tmp_path / "ddp.pt", weights_only=True)["step"] == 1
