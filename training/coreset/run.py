"""The coreset commands as the CLI and the dock run them: value a labelled dataset ('train on less', suspicious
labels) and rank an unlabelled pool ('annotate next'); results as CSV, JSON and a PNG."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path, write_json_atomic
from ..datasets import Case, find_cases, split_members
from ..errors import MedLSAMError
from .kcenter import k_center_greedy
from .probe import FEATURES, load_slice_case, make_probe, train_probe, tta_entropy
from .rules import dice_dynamics, offline_coreset, online_cluster_rule, suspicious

ProgressFn = Callable[[int, int, str], None]


class CoresetError(MedLSAMError, ValueError):
    """A budget, dataset or checkpoint that the coreset commands cannot use."""


def budget_count(budget: float, n: int, where: str) -> int:
    """A budget as a fraction (0 < b < 1) or a count (b >= 1) of ``n`` volumes."""
    if budget <= 0 or (budget >= 1 and int(budget) != budget):
        raise CoresetError(f"budget {budget:g}: give a fraction in (0, 1) or a whole number of volumes")
    k = int(budget) if budget >= 1 else max(1, round(budget * n))
    if k >= n:
        raise CoresetError(f"{where}: budget {k} is not fewer than the {n} volumes there; nothing to choose")
    return k


def labelled(data: str | os.PathLike[str], split: str | None = None) -> list[Case]:
    cases = find_cases(data)
    members = split_members(data, split)
    if members is not None:
        cases = [c for c in cases if c.name in members]
    missing = [c.name for c in cases if c.label is None]
    if missing:
        raise CoresetError(f"{data}: {len(missing)} volume(s) have no label map ({', '.join(missing[:5])}"
                           f"{'…' if len(missing) > 5 else ''}); valuation needs labelled volumes")
    if not cases:
        raise CoresetError(f"{data}: no labelled volume found")
    return cases


def load_probe(path: str | os.PathLike[str], n_targets: int) -> torch.nn.Module:
    """A probe checkpoint from 'medlsam value'; anything else is refused with the reason."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = make_probe(n_targets)
        model.load_state_dict(state["state_dict"])
    except Exception as exc:  # noqa: BLE001 - an untrusted file can fail in any way; say which and why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CoresetError(f"{path}: not a probe checkpoint of this architecture (BasicUNet {FEATURES}, "
                           f"{n_targets} targets): {first}") from exc
    return model.eval()


@dataclass
class Valuation:
    cases: list[str]
    groups: list[str]
    gradnorm: np.ndarray      # (E, N, G)
    data_si: np.ndarray       # (E, N, G)
    dice: np.ndarray          # (E, N)
    kept: np.ndarray          # (E, N) kept by the online rule
    selections: dict[str, list[str]]
    flagged: list[str]


def value_dataset(data: str | os.PathLike[str], targets: list[str], out: str | os.PathLike[str], *,
                  budget: float = 0.3, split: str | None = None, steps: int = 400, epochs: int = 8, seed: int = 0,
                  progress: ProgressFn | None = None) -> Valuation:
    """Train the probe on every labelled volume while valuing each one per epoch, then select and flag."""
    cases = labelled(data, split)
    k = budget_count(budget, len(cases), str(data))
    slices = [load_slice_case(c, targets) for c in cases]
    if not any(len(s.rows) for s in slices):
        raise CoresetError(f"{data}: no volume has a voxel of {', '.join(targets)}")
    run = train_probe(slices, len(targets), steps=steps, epochs=epochs, seed=seed, observe=True, progress=progress)
    gn, si = np.stack(run.values["gradnorm"]), np.stack(run.values["data_si"])
    kept = np.stack([online_cluster_rule(v, seed=seed)[0] for v in si])
    dad = dice_dynamics(np.stack(run.dice))
    rng = np.random.default_rng(seed)
    names = [c.name for c in cases]
    flagged_idx = suspicious(np.mean([v.sum(1) / max(v.sum(1).mean(), 1e-12) for v in gn], 0), 0.1)
    selections = {
        "data_si_online": [names[i] for i in np.sort(np.lexsort((rng.random(len(names)), -kept.mean(0)))[:k])],
        "gradnorm_offline": [names[i] for i in offline_coreset(gn.sum(2), k, seed=seed)],
        "dice_dynamics": [names[i] for i in np.sort(np.argsort(dad, kind="stable")[:k])],
    }
    v = Valuation(names, run.groups, gn, si, np.stack(run.dice), kept, selections, [names[i] for i in flagged_idx])
    _write_valuation(v, run.model, targets, Path(out))
    return v


def _write_valuation(v: Valuation, model, targets: list[str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "values.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "epoch"] + [f"gradnorm_{g}" for g in v.groups] + [f"data_si_{g}" for g in v.groups]
                   + ["train_dice", "kept_by_online_rule"])
        for e in range(v.gradnorm.shape[0]):
            for i, name in enumerate(v.cases):
                w.writerow([name, e] + [f"{x:.6g}" for x in v.gradnorm[e, i]] + [f"{x:.6g}" for x in v.data_si[e, i]]
                           + [f"{v.dice[e, i]:.4f}", int(v.kept[e, i])])
    write_json_atomic({"targets": targets, "selections": v.selections, "suspicious": v.flagged,
                       "rules": {"data_si_online": "KMeans(10) on Data-SI vectors per epoch, majority cluster (>50 %) "
                                 "dropped; volumes kept most often", "gradnorm_offline": "mid band 0.1 < v/mean < 40 "
                                 "in >= 30 % of epochs, random within the budget",
                                 "dice_dynamics": "lowest mean training Dice (learned last)",
                                 "suspicious": "top 10 % by epoch-normalised GradNorm"}}, out / "selection.json")
    with atomic_path(out / "probe.pt") as tmp:
        torch.save({"state_dict": {k: t.detach().cpu() for k, t in model.state_dict().items()},
                    "targets": targets, "features": list(FEATURES)}, tmp)
    plot_values(v, out / "values.png")


def plot_values(v: Valuation, path: Path) -> Path:
    """Per-volume GradNorm (epoch-normalised, mean over epochs) against mean training Dice; flags in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gn = np.mean([e.sum(1) / max(e.sum(1).mean(), 1e-12) for e in v.gradnorm], 0)
    dice = v.dice.mean(0)
    fig, ax = plt.subplots(figsize=(6, 4))
    flagged = np.isin(v.cases, v.flagged)
    ax.scatter(dice[~flagged], gn[~flagged], s=12, label="volumes")
    ax.scatter(dice[flagged], gn[flagged], s=18, c="red", label="suspicious (top 10 %)")
    ax.set_xlabel("mean training Dice over epochs")
    ax.set_ylabel("GradNorm / epoch mean")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


@dataclass
class Suggestion:
    case: str
    rank: int
    diversity_order: int | None     # position in the k-center pick order (None: not picked)
    uncertainty: float | None
    reason: str


def suggest(pool: str | os.PathLike[str], budget: float, *, labelled_data: str | os.PathLike[str] | None = None,
            probe: str | os.PathLike[str] | None = None, targets: list[str] | None = None,
            progress: ProgressFn | None = None) -> list[Suggestion]:
    """Rank unlabelled volumes to annotate next: k-center greedy on MedLAM embeddings (away from what is labelled),
    combined with the probe's test-time-augmentation entropy when a probe is given (rank average)."""
    from .embeddings import MedLAMEmbedder

    cases = [c for c in find_cases(pool)]
    if not cases:
        raise CoresetError(f"{pool}: no volume found")
    k = budget_count(budget, len(cases), str(pool))
    model = load_probe(probe, len(targets or [])) if probe else None
    embed = MedLAMEmbedder()
    feats, entropy = [], []
    known = [c for c in find_cases(labelled_data)] if labelled_data else []
    total = len(cases) + len(known)
    for i, c in enumerate(cases + known):
        volume = c.load()[0]
        feats.append(embed(volume))
        if model is not None and i < len(cases):
            entropy.append(tta_entropy(model, load_slice_case(Case(c.name, c.image), targets or [])))
        if progress:
            progress(i + 1, total, c.name)
    feats = np.stack(feats)
    order = k_center_greedy(feats, len(cases), chosen=list(range(len(cases), total))) if known else \
        k_center_greedy(feats[:len(cases)], len(cases))
    div_rank = np.empty(len(cases), int)
    div_rank[order] = np.arange(len(cases))
    if entropy:
        unc_rank = np.empty(len(cases), int)
        unc_rank[np.argsort(-np.array(entropy), kind="stable")] = np.arange(len(cases))
        score = (div_rank + unc_rank) / 2.0
    else:
        unc_rank, score = None, div_rank.astype(float)
    ranking = np.argsort(score, kind="stable")
    out = []
    for r, i in enumerate(ranking[:k], start=1):
        reasons = []
        if div_rank[i] < k:
            reasons.append("unlike what is labelled" if known else "covers the pool")
        if unc_rank is not None and unc_rank[i] < k:
            reasons.append("the model is unsure")
        out.append(Suggestion(cases[i].name, r, int(div_rank[i]) + 1, float(entropy[i]) if entropy else None,
                              " and ".join(reasons) or "balance of both"))
    return out


def write_suggestions(items: list[Suggestion], path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "case", "diversity_order", "uncertainty", "reason"])
        for s in items:
            w.writerow([s.rank, s.case, s.diversity_order, "" if s.uncertainty is None else f"{s.uncertainty:.4f}",
                        s.reason])
    return path
