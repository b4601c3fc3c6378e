"""Per-sample data values from gradients (arXiv 2306.14113): GradNorm = squared gradient norm, Data-SI = the
sample's gradient against the optimizer's coming full-data step. Per-sample gradients are batched with
``torch.func``; BatchNorm and dropout are in eval mode while valuing (a batch of one has no statistics)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


def group_of(name: str) -> str:
    """Parameters group by their top-level module: 'upcat_1.upsample.deconv.weight' -> 'upcat_1'."""
    return name.split(".")[0]


def per_sample_gradients(model: nn.Module, names: list[str], inputs: torch.Tensor, targets: torch.Tensor,
                         loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """{parameter name: (B, *shape)} gradients of each sample's own loss, for the parameters ``names``."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"the model has no parameters {missing}")
    sub = {k: params[k] for k in names}
    rest = {k: v for k, v in params.items() if k not in sub}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    was_training = model.training
    model.eval()

    def loss_one(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**rest, **p}, buffers), (x[None],))
        return loss_fn(out, y[None])

    try:
        return vmap(grad(loss_one), in_dims=(None, 0, 0))(sub, inputs, targets)
    finally:
        model.train(was_training)


def predicted_sgd_step(optimizer: torch.optim.SGD, model: nn.Module, full_grad: dict[str, torch.Tensor]
                       ) -> dict[str, torch.Tensor]:
    """The update SGD (momentum, weight decay, no Nesterov) would apply for the gradient ``full_grad``."""
    group = optimizer.param_groups[0]
    if group.get("nesterov"):
        raise ValueError("Data-SI predicts plain or momentum SGD steps, not Nesterov")
    lr, momentum, wd, damp = group["lr"], group["momentum"], group["weight_decay"], group["dampening"]
    params = dict(model.named_parameters())
    out = {}
    for name, g in full_grad.items():
        p = params[name].detach()
        d = g + wd * p
        buf = optimizer.state.get(params[name], {}).get("momentum_buffer")
        if momentum and buf is not None:
            d = momentum * buf + (1 - damp) * d
        out[name] = -lr * d
    return out


def _grouped(per_tensor: dict[str, torch.Tensor], sizes: dict[str, int], weighted: bool
             ) -> tuple[list[str], torch.Tensor]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name in per_tensor:
        groups[group_of(name)].append(name)
    cols = []
    for names in groups.values():
        if weighted:  # element-count weighted mean of per-tensor means
            total = sum(sizes[n] for n in names)
            cols.append(sum(per_tensor[n] * sizes[n] for n in names) / total)
        else:
            cols.append(sum(per_tensor[n] for n in names))
    return list(groups), torch.stack(cols, 1)


def gradnorm_values(grads: dict[str, torch.Tensor]) -> tuple[list[str], torch.Tensor]:
    """(group names, (B, G)): the sum of squared gradient entries per layer group (GraNd squared)."""
    per = {n: g.flatten(1).pow(2).sum(1) for n, g in grads.items()}
    return _grouped(per, {n: g[0].numel() for n, g in grads.items()}, weighted=False)


def data_si_values(grads: dict[str, torch.Tensor], step: dict[str, torch.Tensor]) -> tuple[list[str], torch.Tensor]:
    """(group names, (B, G)): mean over each tensor's entries of step * g_i, then an element-count weighted mean
    per group. Negative: the coming step lowers this sample's loss (it agrees with the bulk of the data)."""
    per = {n: (g * step[n][None]).flatten(1).mean(1) for n, g in grads.items()}
    return _grouped(per, {n: g[0].numel() for n, g in grads.items()}, weighted=True)
