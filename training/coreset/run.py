"""The coreset commands as the CLI and the dock run them: value a labelled dataset ('train on less', suspicious
labels) and rank an unlabelled pool ('annotate next'); results as CSV, JSON and a PNG."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from ..errors import MedLSAMError
from ..progress import ProgressFn
from ..volumes.atomic import atomic_path, write_json_atomic
from ..volumes.datasets import Case, find_cases, split_members
from .kcenter import k_center_greedy
from .probe import (
    CHANNELS,
    Checkpoint,
    SliceCase,
    crossfit_checkpoints,
    load_slice_case,
    make_probe,
    train_probe,
    tta_entropy,
)
from .rules import dice_dynamics, offline_coreset, online_cluster_rule

SUSPICIOUS_CSV = "suspicious.csv"


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
    what = f"probe checkpoint of this architecture (UNet {CHANNELS}, {n_targets} targets)"
    try:
        state = load_checkpoint(path, "coreset-probe", what)
        model = make_probe(n_targets)
        load_weights(model, state, path)
    except CheckpointError as exc:
        raise CoresetError(f"{path}: not a {what}: {str(exc).removeprefix(f'{path}: ')}") from exc
    return model.eval()


def mirror_pairs(targets: list[str]) -> dict[int, int]:
    """Target index -> its left/right twin (parotid_right <-> parotid_left), to tell a swapped label."""
    index = {t: i for i, t in enumerate(targets)}
    out = {}
    for t, i in index.items():
        for a, b in (("right", "left"), ("left", "right")):
            twin = t.replace(a, b)
            if twin != t and twin in index:
                out[i] = index[twin]
    return out


@dataclass
class Suspect:
    """A volume ranked by how wrong its label looks, with the evidence in words."""

    index: int
    case: str
    score: float
    rank: int
    reason: str
    worst_slice: int       # row of the probe's input (LPS axial slice)
    worst_z_mm: float      # its LPS z: where the annotator should look first


def suspicious_ranking(cases: list[SliceCase], checkpoints: list[Checkpoint], targets: list[str],
                       from_step: int = 300, combine: str = "max") -> list[Suspect]:
    """Every volume, most suspicious first.  Score: its worst target's loss relative to the median over volumes at
    each checkpoint (losses are comparable only within a checkpoint), averaged over checkpoints from ``from_step``
    on (the probe has learned the bulk by then; a wrong label keeps a high loss).  Give it held-out checkpoints
    (:func:`crossfit_checkpoints`): a probe that trains on a wrong label long enough learns it.  The reason names
    that target and the evidence: the ratio, the Dice against its own label, a prediction on the mirror side, a size
    or position mismatch, or a target predicted where the label has no contour."""
    if combine not in ("max", "mean"):
        raise CoresetError(f"combine {combine!r}: give max or mean")
    late = [c for c in checkpoints if c.step >= from_step] or checkpoints[-1:]
    if not late:
        raise CoresetError("no valuation checkpoint: train with value_every > 0")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: targets a volume has no contour of
        ratios = np.stack([c.loss / np.nanmedian(_contoured_loss(c, cases), 0) for c in late])
        ratio = np.nanmean(ratios, 0)                                     # (N, T)
        dice = np.nanmean(np.stack([c.dice for c in late]), 0)
        swapped = np.nanmean(np.stack([c.swapped for c in late]), 0)
        size = np.nanmedian(np.stack([c.size_ratio for c in late]), 0)
        offset = np.nanmedian(np.stack([c.offset_mm for c in late]), 0)
    ratio = np.where(np.isfinite(ratio), ratio, 0.0)
    # max: the worst target decides; mean: a label wrong on several targets (a shift, a swap) ranks higher
    score = ratio.max(1) if combine == "max" else ratio.mean(1)
    order = np.argsort(-score, kind="stable")
    out = []
    for rank, i in enumerate(order, start=1):
        t = int(np.argmax(ratio[i]))
        name, bits = targets[t], [f"loss {ratio[i, t]:.1f}× the median"]
        if not cases[i].contoured[t]:
            bits = [f"not contoured, yet found by the probe (loss {ratio[i, t]:.1f}× the median if absent)"]
        else:
            bits.append(f"Dice {dice[i, t]:.2f} with its own label")
            if np.isfinite(swapped[i, t]) and swapped[i, t] > dice[i, t]:
                bits.append("predicted on the other side")
            if np.isfinite(offset[i, t]) and offset[i, t] >= 4.0:
                bits.append(f"label {offset[i, t]:.0f} mm from the prediction")
            if np.isfinite(size[i, t]) and not 0.75 <= size[i, t] <= 1.33:
                bits.append(f"label {'larger' if size[i, t] > 1 else 'smaller'} than predicted "
                            f"({size[i, t]:.2f}×)")
        row = int(late[-1].worst_slice[i])
        out.append(Suspect(int(i), cases[i].name, float(score[i]), rank, f"{name}: " + ", ".join(bits), row,
                           float(cases[i].z_mm[row]) if len(cases[i].z_mm) else 0.0))
    return out


def _contoured(cases: list[SliceCase]) -> np.ndarray:
    return np.stack([c.contoured for c in cases])


def _contoured_loss(checkpoint: Checkpoint, cases: list[SliceCase]) -> np.ndarray:
    """(N, T) the checkpoint's loss per volume and target, NaN where the target is not contoured: a missing contour
    is unknown, never a loss to compare (losses are compared only within one checkpoint)."""
    return np.where(_contoured(cases), checkpoint.loss, np.nan)


@dataclass
class Valuation:
    cases: list[str]
    checkpoints: list[Checkpoint]
    selections: dict[str, list[str]]
    suspects: list[Suspect]

    @property
    def flagged(self) -> list[str]:
        """The top 10 % of the suspicious ranking: the labels to review first."""
        return [s.case for s in self.suspects[:max(1, round(0.1 * len(self.suspects)))]]


def select(checkpoints: list[Checkpoint], cases: list[SliceCase], k: int, seed: int = 0) -> dict[str, list[int]]:
    """The selection rules over one valuation run, each a list of ``k`` volume indices."""
    rng = np.random.default_rng(seed)
    si = np.stack([c.data_si for c in checkpoints])                  # (E, N)
    gn = np.stack([c.gradnorm for c in checkpoints])
    kept = np.stack([online_cluster_rule(v[:, None], seed=seed)[0] for v in si]).mean(0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss = np.nanmean(np.stack([np.nanmean(_contoured_loss(c, cases), 1) / np.nanmedian(_contoured_loss(c, cases))
                                    for c in checkpoints]), 0)
        dad = dice_dynamics(np.stack([np.nanmean(c.dice, 1) for c in checkpoints]))
    return {
        "data_si_online": list(np.sort(np.lexsort((rng.random(len(kept)), -kept))[:k])),
        "gradnorm_offline": list(offline_coreset(gn, k, seed=seed)),
        "loss": list(np.sort(np.argsort(-np.nan_to_num(loss), kind="stable")[:k])),
        "dice_dynamics": list(np.sort(np.argsort(np.nan_to_num(dad, nan=1.0), kind="stable")[:k])),
    }


def value_dataset(data: str | os.PathLike[str], targets: list[str], out: str | os.PathLike[str], *,
                  budget: float = 0.3, split: str | None = None, steps: int = 2000, seed: int = 0,
                  value_every: int = 100, progress: ProgressFn | None = None,
                  cancelled: Callable[[], bool] | None = None, engine=None) -> Valuation:
    """Train the probe on every labelled volume while valuing each one at checkpoints, then select and rank.

    ``engine``: a Dask cluster (:class:`medlsam_training.cluster.ClusterEngine`) reads and crops the volumes, one
    per task; the probe's training and the valuation run here (they take every volume at once)."""
    cases = labelled(data, split)
    k = budget_count(budget, len(cases), str(data))
    if engine is not None:
        slices = engine.each(load_slice_case, [(c, targets) for c in cases])
    else:
        slices = []
        for i, c in enumerate(cases):
            slices.append(load_slice_case(c, targets))
            if progress:
                progress(i + 1, len(cases), f"reading {c.name}")
    if not any(s.contoured.any() for s in slices):
        raise CoresetError(f"{data}: no volume has a voxel of {', '.join(targets)}")
    run = train_probe(slices, len(targets), steps=steps, seed=seed, value_every=value_every,
                      mirror=mirror_pairs(targets), progress=progress, cancelled=cancelled)
    names = [c.name for c in cases]
    chosen = select(run.checkpoints, slices, k, seed)
    # labels are judged by probes that never trained on them (two folds, half the steps each)
    held_out = crossfit_checkpoints(slices, len(targets), steps=max(steps // 2, 1), seed=seed,
                                    value_every=value_every, mirror=mirror_pairs(targets), progress=progress,
                                    cancelled=cancelled)
    v = Valuation(names, run.checkpoints, {r: [names[i] for i in idx] for r, idx in chosen.items()},
                  suspicious_ranking(slices, held_out, targets, from_step=min(300, steps // 2)))
    _write_valuation(v, run.model, targets, Path(out))
    return v


def _write_valuation(v: Valuation, model, targets: list[str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "values.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "step"] + [f"loss_{t}" for t in targets] + [f"dice_{t}" for t in targets]
                   + ["gradnorm", "data_si"])
        for c in v.checkpoints:
            for i, name in enumerate(v.cases):
                w.writerow([name, c.step] + [f"{x:.5g}" for x in c.loss[i]] + [f"{x:.4f}" for x in c.dice[i]]
                           + [f"{c.gradnorm[i]:.6g}", f"{c.data_si[i]:.6g}"])
    with atomic_path(out / SUSPICIOUS_CSV) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["volume", "score", "rank", "reason", "worst_slice_z_mm"])
        for s in v.suspects:
            w.writerow([s.case, f"{s.score:.3f}", s.rank, s.reason, f"{s.worst_z_mm:.1f}"])
    write_json_atomic({"targets": targets, "selections": v.selections, "suspicious": v.flagged,
                       "rules": {"data_si_online": "KMeans(10) on output-layer Data-SI per checkpoint, majority "
                                 "cluster (>50 %) dropped; volumes kept most often",
                                 "gradnorm_offline": "mid band 0.1 < v/mean < 40 in >= 30 % of checkpoints, random "
                                 "within the budget", "loss": "highest loss relative to the checkpoint's median",
                                 "dice_dynamics": "lowest mean Dice against its own label (learned last)",
                                 "suspicious": "worst target's loss / median from step 300 on; top 10 % flagged"}},
                      out / "selection.json")
    save_checkpoint(out / "probe.pt", model, kind="coreset-probe",
                    meta={"targets": targets, "channels": list(CHANNELS)})
    plot_values(v, out / "values.png")


def plot_values(v: Valuation, path: Path) -> Path:
    """Suspicion score against Dice with the own label (last checkpoint); the flagged top 10 % in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score = np.zeros(len(v.cases))
    for s in v.suspects:
        score[s.index] = s.score
    with np.errstate(all="ignore"):
        dice = np.nan_to_num(np.nanmean(v.checkpoints[-1].dice, 1)) if v.checkpoints else np.zeros(len(v.cases))
    fig, ax = plt.subplots(figsize=(6, 4))
    flagged = np.isin(v.cases, v.flagged)
    ax.scatter(dice[~flagged], score[~flagged], s=12, label="volumes")
    ax.scatter(dice[flagged], score[flagged], s=18, c="red", label="suspicious (top 10 %)")
    ax.set_xlabel("Dice of the probe with the volume's own label")
    ax.set_ylabel("worst target's loss / median")
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
