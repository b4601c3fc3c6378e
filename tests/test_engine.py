"""The one training loop and the one checkpoint loader: resumable, seeded, cancellable, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medlsam_training.engine.checkpoint import (
    CheckpointError,
    export_weights,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from medlsam_training.engine.loop import LoopSpec, StepContext, fit, seeded


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))


def _loss(net: torch.nn.Module, ctx: StepContext) -> torch.Tensor:
    x = torch.from_numpy(ctx.rng.normal(size=(16, 4)).astype(np.float32))
    y = x.sum(1, keepdim=True)
    return ((net(x) - y) ** 2).mean()


SPEC = LoopSpec(steps=6, lr=1e-2, optimizer="adamw", schedule="cosine", seed=3, save_every=2, csv_every=1)


def test_a_cancelled_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    straight = fit(seeded(_net, 3), _loss, SPEC, tmp_path / "straight.pt", kind="toy")
    calls = []

    def cancel_after_3() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(InterruptedError):
        fit(seeded(_net, 3), _loss, SPEC, tmp_path / "run.pt", kind="toy", cancelled=cancel_after_3)
    assert load_checkpoint(tmp_path / "run.pt", "toy")["step"] == 3  # the step it stopped at is kept
    resumed = fit(seeded(_net, 3), _loss, SPEC, tmp_path / "run.pt", kind="toy")
    assert resumed.steps == 6

    def stop_at_4(done: int, total: int, message: str) -> None:  # as a dock's Cancel: raised from progress
        if done == 4:
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        fit(seeded(_net, 3), _loss, SPEC, tmp_path / "bar.pt", kind="toy", progress=stop_at_4)
    assert load_checkpoint(tmp_path / "bar.pt", "toy")["step"] == 4
    again = fit(seeded(_net, 3), _loss, SPEC, tmp_path / "bar.pt", kind="toy")
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in straight.model.state_dict().items())
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k  # numpy's and torch's streams restored (dropout)
    rows = (tmp_path / "run.losses.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3, 4, 5, 6]
    shipped = export_weights(tmp_path / "run.pt", tmp_path / "ship.pt", {"data": "toy"}, "toy")
    state = torch.load(shipped, weights_only=True)
    assert "optimizer" not in state and state["meta"]["steps"] == 6
    assert all(v.dtype == torch.float16 for v in state["model"].values())
    assert json.loads(shipped.with_suffix(".json").read_text())["data"] == "toy"


def test_the_loss_goes_down_and_a_seed_repeats(tmp_path: Path) -> None:
    spec = LoopSpec(steps=200, lr=1e-2, seed=0)
    a = fit(seeded(_net, 0), _loss, spec)
    b = fit(seeded(_net, 0), _loss, spec)
    with torch.no_grad():
        first = _loss(seeded(_net, 0).eval(), StepContext(np.random.default_rng(9), 0, torch.device("cpu"), 1))
        last = _loss(a.model.eval(), StepContext(np.random.default_rng(9), 0, torch.device("cpu"), 1))
    assert float(last) < 0.2 * float(first)
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())


def test_init_loads_a_pretrained_body_under_a_new_head(tmp_path: Path) -> None:
    body = seeded(_net, 1)
    save_checkpoint(tmp_path / "pre.pt", body, kind="pre")
    wider = lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.2),  # noqa: E731
                                        torch.nn.Linear(8, 3))
    result = fit(seeded(wider, 2), lambda n, c: n(torch.ones(2, 4)).sum() * 0, LoopSpec(1, 0.0), kind="toy",
                 init=tmp_path / "pre.pt")
    assert torch.equal(result.model[0].weight, body[0].weight)
    assert sorted(result.skipped) == ["3.bias (shape (1,) vs (3,))", "3.weight (shape (1, 8) vs (3, 8))"]


def test_the_loader_reads_every_layout_and_says_what_is_wrong(tmp_path: Path) -> None:
    net = seeded(_net, 0)
    tensors = net.state_dict()
    legacy = {  # files written before the one format: bare, 'state_dict' with plain values, DDP prefixes
        "bare.pt": tensors,
        "state_dict.pt": {"state_dict": tensors, "targets": ["a"], "widths": [1, 2]},
        "ddp.pt": {"model": {f"module.{k}": v for k, v in tensors.items()}, "step": 4, "kind": "vf"},
    }
    for name, obj in legacy.items():
        torch.save(obj, tmp_path / name)
        state = load_checkpoint(tmp_path / name)
        load_weights(_net(), state, tmp_path / name)
        assert set(state["model"]) == set(tensors)
    assert load_checkpoint(tmp_path / "state_dict.pt")["meta"] == {"targets": ["a"], "widths": [1, 2]}
    assert load_checkpoint(tmp_path / "ddp.pt")["step"] == 4

    half = save_checkpoint(tmp_path / "half.pt", net, kind="toy", meta={"targets": ["x"]}, half=True)
    state = load_checkpoint(half, "toy")
    assert all(v.dtype == torch.float16 for v in state["model"].values())
    restored = _net()
    load_weights(restored, state, half)  # fp16 weights into an fp32 network
    assert restored[0].weight.dtype == torch.float32

    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"corrupt\.pt: not a checkpoint, or unreadable"):
        load_checkpoint(tmp_path / "corrupt.pt")
    with pytest.raises(CheckpointError, match=r"half\.pt: a 'toy' checkpoint, not a slice network"):
        load_checkpoint(half, "slicenet", "slice network")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "absent.pt")
    torch.save({"a": 1}, tmp_path / "values.pt")
    with pytest.raises(CheckpointError, match="holds no state dict of tensors"):
        load_checkpoint(tmp_path / "values.pt")
    with pytest.raises(CheckpointError, match="does not fit this network"):
        load_weights(torch.nn.Linear(2, 2), state, half)
    unsafe = tmp_path / "pickle.pt"
    torch.save({"model": tensors, "obj": _Unsafe()}, unsafe)  # a pickled object: refused by weights_only
    with pytest.raises(CheckpointError, match=r"pickle\.pt: not a checkpoint, or unreadable"):
        load_checkpoint(unsafe)


class _Unsafe:
    pass
