"""The one checkpoint format and loader of every model this project trains or loads.

A checkpoint is a ``torch.save``d dict of tensors and plain values: ``kind`` (what network it is), ``model`` (its
state dict), ``meta`` (how to rebuild it: targets, widths, config...) and, while training, ``step``, ``optimizer``,
``rng`` and ``torch_rng`` so a run resumes where it stopped.  It is read with ``weights_only=True`` (a checkpoint is
untrusted input) and files written before this format (a bare state dict, ``state_dict`` / ``model_state_dict``
keys, plain values beside them) are read into the same shape.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MedLSAMError
from ..volumes.atomic import atomic_path, write_json_atomic

FORMAT = 1
_STATE_KEYS = ("model", "state_dict", "model_state_dict")
_TRAINING_KEYS = ("step", "optimizer", "rng", "torch_rng")


class CheckpointError(MedLSAMError, ValueError):
    """A checkpoint that cannot be read, or is not the network asked for."""


def save_checkpoint(path: str | os.PathLike[str], model: torch.nn.Module | dict[str, torch.Tensor], *, kind: str,
                    meta: dict[str, Any] | None = None, step: int | None = None,
                    optimizer: torch.optim.Optimizer | None = None, rng: np.random.Generator | None = None,
                    half: bool = False) -> Path:
    """Write atomically; ``half`` stores floating tensors as fp16 (weights to ship; never while training)."""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    tensors = {k.removeprefix("module."): (v.detach().cpu().half() if half and v.is_floating_point()
                                           else v.detach().cpu()) for k, v in state.items()}
    out: dict[str, Any] = {"format": FORMAT, "kind": kind, "model": tensors, "meta": dict(meta or {})}
    if step is not None:
        out["step"] = int(step)
    if optimizer is not None:
        out["optimizer"] = optimizer.state_dict()
    if rng is not None:
        out["rng"] = rng.bit_generator.state
        out["torch_rng"] = torch.get_rng_state()
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(out, tmp)
    return path


def update_meta(path: str | os.PathLike[str], **values: Any) -> Path:
    """Add ``values`` to a checkpoint's ``meta`` (what its training found after the last save), rewritten
    atomically with everything else as it was."""
    path = Path(path)
    state = load_checkpoint(path)
    state["meta"] = {**state["meta"], **values}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def export_weights(checkpoint: str | os.PathLike[str], dst: str | os.PathLike[str], info: dict[str, Any],
                   kind: str | None = None) -> Path:
    """Weights to ship: fp16 tensors and the checkpoint's meta, no optimizer state, and a JSON sidecar with the
    recipe (``info``, the steps trained, the config)."""
    state = load_checkpoint(checkpoint, kind)
    meta = {**state["meta"], **info, "steps": state.get("step")}
    dst = save_checkpoint(dst, state["model"], kind=state["kind"] or kind or "model", meta=meta, half=True)
    recipe = {**info, "steps": state.get("step"), "kind": state["kind"], "config": state["meta"].get("config")}
    write_json_atomic(recipe, dst.with_suffix(".json"))
    return dst


def load_checkpoint(path: str | os.PathLike[str], kind: str | tuple[str, ...] | None = None,
                    what: str = "checkpoint") -> dict[str, Any]:
    """``{"kind", "model", "meta", ...}`` from ``path``; ``kind`` names the kinds the caller accepts.

    Every failure is one :class:`CheckpointError` line naming the file and the problem (``what`` names the
    expected network in it, e.g. "a CAM slice-classifier checkpoint")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, pickle.UnpicklingError,
            UnicodeDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{path}: not {_article(what)}, or unreadable ({type(exc).__name__}: {first})") from exc
    state = _normalise(obj)
    if state is None:
        raise CheckpointError(f"{path}: not {_article(what)} (holds no state dict of tensors)")
    if kind is not None:
        wanted = (kind,) if isinstance(kind, str) else tuple(kind)
        if state["kind"] is not None and state["kind"] not in wanted:
            raise CheckpointError(f"{path}: a {state['kind']!r} checkpoint, not {_article(what)} "
                                  f"(kind {' or '.join(map(repr, wanted))})")
    return state


def _article(what: str) -> str:
    return what if what.split(" ", 1)[0] in ("a", "an", "the") else f"a {what}"


def _normalise(obj: Any) -> dict[str, Any] | None:
    """Today's layout from this format or an older one; None when no state dict of tensors is in it."""
    if not isinstance(obj, dict):
        return None
    if obj.get("format") == FORMAT:
        out = dict(obj)
        out["model"] = {k.removeprefix("module."): v for k, v in obj["model"].items()}
        return out
    tensors = None
    for key in _STATE_KEYS:
        if isinstance(obj.get(key), dict):
            tensors = obj[key]
            break
    if tensors is None:  # a bare state dict
        tensors = obj
        meta: dict[str, Any] = {}
    else:
        meta = {k: v for k, v in obj.items() if k not in _STATE_KEYS and k not in _TRAINING_KEYS and k != "kind"}
    if not tensors or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        return None
    out = {"format": 0, "kind": obj.get("kind") if tensors is not obj else None,
           "model": {k.removeprefix("module."): v for k, v in tensors.items()}, "meta": meta}
    out.update({k: obj[k] for k in _TRAINING_KEYS if k in obj and tensors is not obj})
    return out


def load_weights(model: torch.nn.Module, state: dict[str, Any], path: str | os.PathLike[str] = "checkpoint",
                 strict: bool = True) -> tuple[list[str], list[str]]:
    """Put a checkpoint's tensors (fp16 or fp32) into ``model``.

    ``strict``: every tensor must fit (one line naming the file when not).  Not strict: every tensor whose name and
    shape match is loaded (a pretrained body under a new head); returns (loaded, skipped with reasons)."""
    tensors = state["model"] if "model" in state and isinstance(state["model"], dict) else state
    own = model.state_dict()
    cast = {k: (v.to(own[k].dtype) if k in own and v.is_floating_point() else v) for k, v in tensors.items()}
    if strict:
        try:
            model.load_state_dict(cast)
        except RuntimeError as exc:  # torch's first line only names the class; the second says which tensors
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            raise CheckpointError(f"{path}: does not fit this network ({' '.join(lines[:2])[:200]})") from exc
        return list(cast), []
    loaded, skipped, update = [], [], {}
    for name, tensor in cast.items():
        if name not in own:
            skipped.append(f"{name} (not in this network)")
        elif own[name].shape != tensor.shape:
            skipped.append(f"{name} (shape {tuple(tensor.shape)} vs {tuple(own[name].shape)})")
        else:
            update[name] = tensor
            loaded.append(name)
    if not loaded:
        raise CheckpointError(f"{path}: no tensor of the checkpoint matches this network: another architecture?")
    model.load_state_dict(update, strict=False)
    return loaded, skipped
