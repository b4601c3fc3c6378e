"""Coreset benchmark on ct_hn_openkbp (issue protocol): the CPU probe, suspicious labels, train on less, annotate next.

Pool: the recommended train-pats patients with mandible and both parotids contoured; evaluation: every recommended
validation-pats patient, contoured targets only (a missing contour is never scored).  Every figure is CPU time of
this process (torch threads as given).  Results are appended to a JSON-lines file, so a part can run in chunks.

    .venv/bin/python benchmarks/coreset.py probe --steps 450                 # probe Dice and CPU-s
    .venv/bin/python benchmarks/coreset.py suspicious --draws 3 --seeds 0 1 2
    .venv/bin/python benchmarks/coreset.py selection --budgets 0.2 0.3 0.5 --seeds 0 1 2
    .venv/bin/python benchmarks/coreset.py suggest --sizes 5 10 20 40 --seeds 0 1 2
    .venv/bin/python benchmarks/coreset.py table                              # markdown tables of all results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medlsam_training.cam.data import labelled_cases
from medlsam_training.coreset.probe import SliceCase, crossfit_checkpoints, evaluate_probe, load_slice_case, train_probe
from medlsam_training.coreset.run import mirror_pairs, suspicious_ranking

TARGETS = ["mandible", "parotid_right", "parotid_left"]
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "coreset_benchmark.jsonl"


def load(data: Path, split: str, cache: Path) -> list[SliceCase]:
    path = cache / f"{split}.pt"
    if path.is_file():
        return [SliceCase(**d) for d in torch.load(path, weights_only=False)]  # our own cache file
    cases = [load_slice_case(c, TARGETS) for c in labelled_cases(data, split, recommended_only=True)]
    cache.mkdir(parents=True, exist_ok=True)
    torch.save([vars(c) for c in cases], path)
    return cases


def pool_and_eval(args) -> tuple[list[SliceCase], list[SliceCase]]:
    train = load(args.data, "train-pats", args.cache)
    pool = [c for c in train if c.contoured.all()]  # mandible and both parotids contoured
    return pool, load(args.data, "validation-pats", args.cache)


def score(model, cases: list[SliceCase]) -> dict[str, float]:
    d = evaluate_probe(model, cases, len(TARGETS))
    per = {t: float(np.nanmean(d[:, i])) for i, t in enumerate(TARGETS)}
    per["mean"] = float(np.mean(list(per.values())))
    return per


def record(row: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    row = {**row, "device": f"CPU {platform.machine()}, {torch.get_num_threads()} threads",
           "load": round(os.getloadavg()[0], 2), "time": time.strftime("%Y-%m-%d %H:%M")}
    with open(RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


# --- corruptions of a pool volume's label (the gross and subtle kinds) -----------------------------------

KINDS = ("shift", "erode", "dilate", "swap", "drop", "wrong slices")
SUBTLE = ("shift", "erode", "dilate")


def corrupt(case: SliceCase, kind: str, rng: np.random.Generator) -> SliceCase:
    lab = case.labels.numpy().copy()
    out = np.zeros_like(lab)
    contoured = case.contoured.copy()
    if kind == "swap":  # parotids right <-> left
        r, left = TARGETS.index("parotid_right") + 1, TARGETS.index("parotid_left") + 1
        out = lab.copy()
        out[lab == r], out[lab == left] = left, r
    elif kind == "drop":  # one organ's contour left out (the annotator forgot it): the file no longer has it
        t = int(rng.integers(1, len(TARGETS) + 1))
        out = np.where(lab == t, 0, lab)
        contoured[t - 1] = False  # as the loader reads such a file: not contoured (then 'found, yet not contoured')
    elif kind == "wrong slices":  # the contours moved 4-6 slices along z
        out = np.roll(lab, int(rng.choice([-1, 1]) * rng.integers(4, 7)), axis=0)
    else:
        for t in range(1, len(TARGETS) + 1):
            m = lab == t
            if kind == "shift":
                dy, dx = rng.integers(1, 4, 2) * rng.choice([-1, 1], 2)
                m = np.roll(m, (int(dy), int(dx)), axis=(1, 2))
            elif kind == "erode":
                m = ndimage.binary_erosion(m, np.ones((1, 3, 3), bool))
            else:
                m = ndimage.binary_dilation(m, np.ones((1, 3, 3), bool))
            out[m & (out == 0)] = t
    return SliceCase(case.name, case.images, torch.from_numpy(out), contoured, case.rows, case.z_mm)


# --- parts ----------------------------------------------------------------------------------------------------------

def part_probe(args) -> None:
    pool, val = pool_and_eval(args)
    for seed in args.seeds:
        run = train_probe(pool, len(TARGETS), steps=args.steps, seed=seed, anywhere=args.anywhere, cosine=args.cosine)
        record({"part": "probe", "seed": seed, "steps": args.steps, "anywhere": args.anywhere, "cosine": args.cosine,
                "pool": len(pool),
                "eval": len(val),
                "cpu_s": round(run.seconds, 1), **score(run.model, val)})


def part_suspicious(args) -> None:
    pool, _ = pool_and_eval(args)
    for draw in range(args.draws):
        rng = np.random.default_rng(100 + draw)
        bad = rng.choice(len(pool), max(1, round(0.1 * len(pool))), replace=False)
        kinds = {int(i): KINDS[k % len(KINDS)] for k, i in enumerate(bad)}
        cases = [corrupt(c, kinds[i], rng) if i in kinds else c for i, c in enumerate(pool)]
        for seed in args.seeds:
            how = "in-training" if args.in_training else "held-out"
            save = args.cache / "suspicious" / f"{how}_draw{draw}_seed{seed}.pt"  # to rescore without retraining
            if save.is_file():
                continue  # done in an earlier chunk (its record is in the results file)
            t0 = time.process_time()
            if args.in_training:  # the labels judged by the probe that trains on them (memorises them, late on)
                checkpoints = train_probe(cases, len(TARGETS), steps=args.steps, seed=seed,
                                          value_every=args.value_every, anywhere=args.anywhere, cosine=args.cosine,
                                          mirror=mirror_pairs(TARGETS)).checkpoints
            else:  # what 'medlsam value' does: two folds, each volume valued by the probe that never saw it
                checkpoints = crossfit_checkpoints(cases, len(TARGETS), steps=args.steps, seed=seed,
                                                   value_every=args.value_every, mirror=mirror_pairs(TARGETS))
            save.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"cases": [vars(c) | {"images": None} for c in cases], "kinds": kinds,
                        "checkpoints": [vars(c) for c in checkpoints]}, save)
            ranking = suspicious_ranking(cases, checkpoints, TARGETS, from_step=args.from_step, combine=args.combine)
            order = [r.index for r in ranking]
            top10, top20 = set(order[:max(1, round(0.1 * len(order)))]), set(order[:max(1, round(0.2 * len(order)))])
            found = {i: (i in top10, i in top20) for i in kinds}
            record({"part": "suspicious", "draw": draw, "seed": seed, "steps": args.steps, "cosine": args.cosine,
                    "combine": args.combine, "valued": how,
                    "cpu_s": round(time.process_time() - t0, 1),
                    "recall10": float(np.mean([f[0] for f in found.values()])),
                    "recall20": float(np.mean([f[1] for f in found.values()])),
                    "by_kind": {k: [int(found[i][0]) for i in kinds if kinds[i] == k] for k in KINDS},
                    "reasons": {kinds[r.index]: r.reason for r in ranking if r.index in kinds}})


def part_rescore(args) -> None:
    """Recall of each way to combine a volume's targets, from the saved valuation runs (no retraining)."""
    from medlsam_training.coreset.probe import Checkpoint

    for path in sorted((args.cache / "suspicious").glob("*draw*_seed*.pt")):
        data = torch.load(path, weights_only=False)  # our own file
        cases = [SliceCase(**c) for c in data["cases"]]
        checkpoints = [Checkpoint(**c) for c in data["checkpoints"]]
        kinds = data["kinds"]
        for combine in ("max", "mean"):
            order = [r.index for r in suspicious_ranking(cases, checkpoints, TARGETS, args.from_step, combine)]
            top10 = set(order[:max(1, round(0.1 * len(order)))])
            top20 = set(order[:max(1, round(0.2 * len(order)))])
            print(f"{path.stem} {combine}: recall10 {np.mean([i in top10 for i in kinds]):.2f} "
                  f"recall20 {np.mean([i in top20 for i in kinds]):.2f} missed "
                  f"{sorted(kinds[i] for i in kinds if i not in top10)}")


def embeddings(args, pool: list[SliceCase]) -> np.ndarray:
    """MedLAM embeddings of the pool volumes (label-free), cached: the k-center selector's space."""
    path = args.cache / "embeddings.npz"
    if path.is_file():
        data = np.load(path)
        if list(data["names"]) == [c.name for c in pool]:
            return data["features"]
    from medlsam_training.coreset.embeddings import MedLAMEmbedder

    embed = MedLAMEmbedder()
    by_name = {c.name: c for c in labelled_cases(args.data, "train-pats", recommended_only=True)}
    feats = np.stack([embed(by_name[c.name].load()[0]) for c in pool])
    np.savez(path, names=np.array([c.name for c in pool]), features=feats)
    return feats


def train_score(cases: list[SliceCase], val: list[SliceCase], args, seed: int) -> tuple[dict[str, float], float]:
    run = train_probe(cases, len(TARGETS), steps=args.steps, seed=seed, anywhere=args.anywhere, cosine=args.cosine)
    return score(run.model, val), run.seconds


def part_selection(args) -> None:
    """Train on less: each selector's subset at each budget, a fresh probe with the same steps, validation Dice."""
    from medlsam_training.coreset.kcenter import k_center_greedy
    from medlsam_training.coreset.probe import tta_entropy
    from medlsam_training.coreset.run import select

    pool, val = pool_and_eval(args)
    feats = embeddings(args, pool)
    for seed in args.seeds:
        t0 = time.process_time()
        run = train_probe(pool, len(TARGETS), steps=args.steps, seed=seed, value_every=args.value_every,
                          anywhere=args.anywhere, cosine=args.cosine, mirror=mirror_pairs(TARGETS))
        value_cpu = time.process_time() - t0
        entropy = np.array([tta_entropy(run.model, c) for c in pool])
        full, cpu = score(run.model, val), run.seconds
        record({"part": "selection", "selector": "full pool", "budget": 1.0, "seed": seed, "steps": args.steps,
                "cosine": args.cosine,
                "n": len(pool), "cpu_s": round(cpu, 1), "valuation_cpu_s": round(value_cpu, 1), **full})
        rng = np.random.default_rng(1000 + seed)
        for budget in args.budgets:
            k = max(1, round(budget * len(pool)))
            chosen = select(run.checkpoints, pool, k, seed)
            chosen["random"] = list(np.sort(rng.choice(len(pool), k, replace=False)))
            chosen["k-center"] = sorted(k_center_greedy(feats, k))
            chosen["uncertainty"] = list(np.sort(np.argsort(-entropy)[:k]))
            for selector, idx in chosen.items():
                result, cpu = train_score([pool[i] for i in idx], val, args, seed)
                record({"part": "selection", "selector": selector, "budget": budget, "seed": seed,
                        "steps": args.steps, "n": k, "cpu_s": round(cpu, 1), **result})


def part_suggest(args) -> None:
    """Annotate next: learning curves of the suggested order against random orders (labels revealed as they come)."""
    from medlsam_training.coreset.kcenter import k_center_greedy

    pool, val = pool_and_eval(args)
    feats = embeddings(args, pool)
    orders = {"k-center (medlsam suggest)": k_center_greedy(feats, max(args.sizes))}
    for seed in args.seeds:
        orders[f"random {seed}"] = list(np.random.default_rng(2000 + seed).permutation(len(pool))[:max(args.sizes)])
    for name, order in orders.items():
        for n in args.sizes:
            result, cpu = train_score([pool[i] for i in order[:n]], val, args, 0)
            record({"part": "suggest", "order": name, "n": n, "steps": args.steps, "cpu_s": round(cpu, 1), **result})


def _ms(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def part_table(args) -> None:
    """Markdown tables of every recorded result (mean ± SD over seeds)."""
    rows = [json.loads(line) for line in open(RESULTS)] if RESULTS.is_file() else []
    probe = [r for r in rows if r["part"] == "probe" and r.get("cosine") and r["steps"] == args.steps]
    if probe:
        print(f"\n| probe ({args.steps} steps, {len(probe)} seeds) | mandible | parotid R | parotid L | mean | CPU-s |")
        print("|---|---|---|---|---|---|")
        print("| validation-pats | " + " | ".join(_ms([r[k] for r in probe]) for k in (*TARGETS, "mean"))
              + f" | {_ms([r['cpu_s'] for r in probe])} |")
    sus = [r for r in rows if r["part"] == "suspicious" and r.get("combine") == args.combine
           and r.get("valued") == "held-out"]
    if sus:
        print(f"\n| suspicious labels ({len(sus)} runs: draws x seeds; {args.combine}) | recall top 10 % | "
              "recall top 20 % |")
        print("|---|---|---|")
        print(f"| all kinds | {_ms([r['recall10'] for r in sus])} | {_ms([r['recall20'] for r in sus])} |")
        for kind in KINDS:
            hits = [h for r in sus for h in r["by_kind"].get(kind, [])]
            if hits:
                print(f"| {kind}{' (subtle)' if kind in SUBTLE else ''} | {np.mean(hits):.2f} ({sum(hits)}/{len(hits)})"
                      " | |")
        print(f"\nvaluation run (train + checkpoints): {_ms([r['cpu_s'] for r in sus])} CPU-s")
    sel = [r for r in rows if r["part"] == "selection" and r.get("cosine", True)]
    if sel:
        budgets = sorted({r["budget"] for r in sel if r["budget"] < 1})
        selectors = list(dict.fromkeys(r["selector"] for r in sel if r["budget"] < 1))
        print("\n| selector | " + " | ".join(f"{b:.0%}" for b in budgets) + " |")
        print("|---|" + "---|" * len(budgets))
        for name in selectors:
            cells = [_ms([r["mean"] for r in sel if r["selector"] == name and r["budget"] == b]) or "-"
                     for b in budgets]
            print(f"| {name} | " + " | ".join(cells) + " |")
        full = [r["mean"] for r in sel if r["selector"] == "full pool"]
        print(f"| full pool | {_ms(full)} (all budgets) |")
    sug = [r for r in rows if r["part"] == "suggest"]
    if sug:
        sizes = sorted({r["n"] for r in sug})
        print("\n| order | " + " | ".join(str(n) for n in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for name in dict.fromkeys(r["order"] for r in sug):
            by_n = {r["n"]: r["mean"] for r in sug if r["order"] == name}
            print(f"| {name} | " + " | ".join(f"{by_n[n]:.3f}" if n in by_n else "-" for n in sizes) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("probe", "suspicious", "selection", "suggest", "table", "rescore"))
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ct_hn_openkbp")
    ap.add_argument("--cache", type=Path, default=ROOT / "results" / "coreset_cache")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--from-step", type=int, default=300)
    ap.add_argument("--value-every", type=int, default=100)
    ap.add_argument("--combine", default="max", choices=("max", "mean"), help="how a volume's targets combine")
    ap.add_argument("--in-training", action="store_true", help="value labels with the probe that trains on them")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--anywhere", type=float, default=0.25, help="share of training slices drawn from anywhere")
    ap.add_argument("--constant-lr", dest="cosine", action="store_false", help="no cosine learning-rate decay")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {"probe": part_probe, "suspicious": part_suspicious, "selection": part_selection, "suggest": part_suggest,
     "table": part_table, "rescore": part_rescore}[args.part](args)


if __name__ == "__main__":
    main()
