"""Coreset benchmark: the same CPU-sized segmentation probe (2D BasicUNet, same steps) trained on volumes chosen by
each selector at 10 / 20 / 30 % of the ct_hn_openkbp train-pats pool, Dice on validation-pats; then suspicious-label
recall after corrupting 10 % of the pool's masks.

    .venv/bin/python benchmarks/coreset.py --seeds 0 1 2 --steps 200 --eval 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from medlsam_training.cam.data import labelled_cases
from medlsam_training.coreset.embeddings import MedLAMEmbedder
from medlsam_training.coreset.kcenter import k_center_greedy
from medlsam_training.coreset.probe import evaluate_probe, load_slice_case, train_probe, tta_entropy
from medlsam_training.coreset.rules import dice_dynamics, offline_coreset, online_cluster_rule, suspicious

TARGETS = ["brainstem", "spinal_cord", "parotid_right", "parotid_left", "mandible"]
SELECTORS = ("random", "k-center", "uncertainty", "data-si (online rule)", "gradnorm (offline rule)",
             "dice dynamics")


def corrupt(case, rng: np.random.Generator) -> str:
    """Dilate, erode, shift or swap the parotids of one case's mask in place; returns what was done."""
    kind = rng.choice(["dilate", "erode", "shift", "swap"])
    lab = case.labels
    out = torch.zeros_like(lab)
    for c in range(1, len(TARGETS) + 1):
        m = (lab == c).numpy()
        if kind == "dilate":
            m = ndimage.binary_dilation(m, iterations=3)
        elif kind == "erode":
            m = ndimage.binary_erosion(m, iterations=2)
        elif kind == "shift":
            m = np.roll(m, (6, 6), axis=(1, 2))
        out[torch.from_numpy(m) & (out == 0)] = c
    if kind == "swap":
        right, left = TARGETS.index("parotid_right") + 1, TARGETS.index("parotid_left") + 1
        out[lab == right], out[lab == left] = left, right
    case.labels = out
    return str(kind)


def mean_dice(model, eval_cases) -> float:
    d = evaluate_probe(model, eval_cases, len(TARGETS))
    return float(np.nanmean(np.nanmean(d, axis=0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/ct_hn_openkbp")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--pool", type=int, default=0, help="first N train-pats cases (0: all)")
    ap.add_argument("--eval", type=int, default=10, help="first N recommended validation-pats cases")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    pool_cases = labelled_cases(args.data, "train-pats")
    pool_cases = pool_cases[:args.pool] if args.pool else pool_cases
    pool = [load_slice_case(c, TARGETS) for c in pool_cases]
    evals = [load_slice_case(c, TARGETS) for c in labelled_cases(args.data, "validation-pats", True)[:args.eval]]
    n = len(pool)
    print(f"pool {n} train-pats volumes, {len(evals)} validation-pats volumes ({time.time() - t0:.0f} s)", flush=True)
    kw = dict(steps=args.steps, epochs=args.epochs)

    # one observation run on the full pool: per-case values every epoch
    obs = train_probe(pool, len(TARGETS), observe=True, seed=0, **kw)
    gradnorm = np.stack([v.sum(1) for v in obs.values["gradnorm"]])        # (E, N)
    kept = np.stack([online_cluster_rule(v, seed=0)[0] for v in obs.values["data_si"]])  # (E, N)
    dad = dice_dynamics(np.stack(obs.dice))
    print(f"observation run {obs.seconds:.0f} s; online rule kept {kept.mean():.0%} per epoch on average", flush=True)
    embedder = MedLAMEmbedder()
    feats = np.stack([embedder(c.load()[0]) for c in pool_cases])
    print(f"MedLAM embeddings ({time.time() - t0:.0f} s)", flush=True)

    rows: dict[str, dict[float, list[float]]] = {s: {b: [] for b in args.budgets} for s in SELECTORS}
    full = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        start = rng.choice(n, max(1, round(0.05 * n)), replace=False)        # the first labelled 5 %
        seed_model = train_probe([pool[i] for i in start], len(TARGETS), seed=seed, **kw).model
        entropy = np.array([tta_entropy(seed_model, c, seed=seed) for c in pool])
        for b in args.budgets:
            k = max(1, round(b * n))
            rest = [i for i in np.argsort(-entropy) if i not in set(start)]
            picks = {
                "random": rng.choice(n, k, replace=False),
                "k-center": np.array(k_center_greedy(feats, k)),
                "uncertainty": np.concatenate([start, rest[:max(k - len(start), 0)]])[:k],
                "data-si (online rule)": np.lexsort((rng.random(n), -kept.mean(0)))[:k],
                "gradnorm (offline rule)": offline_coreset(gradnorm, k, seed=seed),
                "dice dynamics": np.argsort(dad + 1e-9 * rng.random(n))[:k],
            }
            for name, idx in picks.items():
                model = train_probe([pool[i] for i in idx], len(TARGETS), seed=seed, **kw).model
                rows[name][b].append(mean_dice(model, evals))
                print(f"seed {seed} budget {b:.0%} {name}: {rows[name][b][-1]:.3f} ({time.time() - t0:.0f} s)",
                      flush=True)
        full.append(mean_dice(train_probe(pool, len(TARGETS), seed=seed, **kw).model, evals))
        print(f"seed {seed} full pool: {full[-1]:.3f}", flush=True)

    print(f"\nCoreset selection: probe BasicUNet 2D {kw['steps']} steps x batch 12 for every row; pool {n} train-pats, "
          f"Dice on {len(evals)} validation-pats (mean of {', '.join(TARGETS)}); seeds {args.seeds}; CPU, "
          f"{torch.get_num_threads()} threads; {time.time() - t0:.0f} s in all\n")
    print("| selector | " + " | ".join(f"{b:.0%}" for b in args.budgets) + " |")
    print("|---" * (len(args.budgets) + 1) + "|")
    fmt = lambda v: f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{np.mean(v):.3f}"  # noqa: E731
    for name in SELECTORS:
        print(f"| {name} | " + " | ".join(fmt(rows[name][b]) for b in args.budgets) + " |")
    print(f"| full pool (100 %) | {fmt(full)} |")

    # suspicious labels: corrupt 10 % of the pool, value again, check what the top 10 % flags recover
    rng = np.random.default_rng(123)
    bad = rng.choice(n, max(1, round(0.1 * n)), replace=False)
    kinds = {int(i): corrupt(pool[i], rng) for i in bad}
    obs = train_probe(pool, len(TARGETS), observe=True, seed=0, **kw)
    scores = {
        "gradnorm (mean of epoch-normalised)": np.mean([v.sum(1) / v.sum(1).mean() for v in obs.values["gradnorm"]], 0),
        "|data-si| (mean of epoch-normalised)": np.mean([np.abs(v).sum(1) / np.abs(v).sum(1).mean()
                                                         for v in obs.values["data_si"]], 0),
        "low dice dynamics": -dice_dynamics(np.stack(obs.dice)),
    }
    print(f"\nSuspicious labels: {len(bad)} of {n} pool masks corrupted "
          f"({', '.join(f'{k} {list(kinds.values()).count(k)}' for k in ('dilate', 'erode', 'shift', 'swap'))}); "
          "recall of the corrupted among the top 10 % flagged\n")
    print("| score | recall |\n|---|---|")
    for name, s in scores.items():
        flagged = set(suspicious(s, 0.1).tolist())
        print(f"| {name} | {len(flagged & set(kinds)) / len(kinds):.2f} |")


if __name__ == "__main__":
    main()
