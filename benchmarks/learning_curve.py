"""The learning loop's learning curve on ct_hn_openkbp: the slice network fine-tuned on k train-pats volumes, from
scratch and from Volume Fusion pretraining, scored on every recommended validation-pats patient.

Training volumes: recommended train-pats with brainstem, both parotids and mandible contoured (a seed draws its k
from them; nested: the 10 of seed s hold its 5); the spinal cord trains where contoured (marginal loss).  Scores:
Dice per organ on each volume's own grid (the mask ``medlsam finetune`` writes), contoured organs only.  VF
pretraining: the slice crops of every train-pats image, ct_unlabelled/ and ct/ (labels never read).  Every figure is
CPU time of this process.  Results are appended to a JSON-lines file: a run already there is skipped, so the
benchmark runs in chunks and in two processes (``--arms scratch`` / ``--arms vf``).

    .venv/bin/python benchmarks/learning_curve.py pretrain --steps 3000         # VF checkpoint (resumable)
    .venv/bin/python benchmarks/learning_curve.py curve --arms scratch vf        # k = 5, 10, 20, 40
    .venv/bin/python benchmarks/learning_curve.py table
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

from medlsam_training.cam.data import labelled_cases
from medlsam_training.coreset.probe import SliceCase, load_slice_case, slice_inputs
from medlsam_training.learning.slicenet import NetSpec, n_parameters
from medlsam_training.learning.train import LearnConfig, SliceNetPredictor, finetune, pretrain_vf
from medlsam_training.metrics import dice_score
from medlsam_training.volumes.datasets import find_cases
from medlsam_training.volumes.io import read_volume

TARGETS = ["brainstem", "spinal_cord", "parotid_right", "parotid_left", "mandible"]
REQUIRED = ["brainstem", "parotid_right", "parotid_left", "mandible"]  # contoured in every training volume
MEAN_OF = ["brainstem", "parotid_right", "parotid_left", "mandible"]  # the mean
# the few-shot pipeline (atlas localizer, 5 train-pats templates per organ) on the same 28 patients:
# docs/benchmarks.md, localization section (benchmarks/localization.py --protocol hn --k 5 --methods atlas)
FEW_SHOT = {"brainstem": 0.632, "spinal_cord": 0.571, "parotid_right": 0.697, "parotid_left": 0.701,
            "mandible": 0.795}
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def cached_cases(split: str, cache: Path) -> list[SliceCase]:
    path = cache / f"{split}.pt"
    if path.is_file():
        return [SliceCase(**d) for d in torch.load(path, weights_only=False)]  # our own cache file
    cases = [load_slice_case(c, TARGETS) for c in labelled_cases(DATA / "ct_hn_openkbp", split, recommended_only=True)]
    cache.mkdir(parents=True, exist_ok=True)
    torch.save([vars(c) for c in cases], path)
    return cases


def vf_volumes(cache: Path) -> list[torch.Tensor]:
    """Slice crops of every train-pats image (all 170, not only recommended), ct_unlabelled/ and ct/."""
    path = cache / "vf_inputs.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    train = labelled_cases(DATA / "ct_hn_openkbp", "train-pats")
    files = [c.image for c in train]
    files += [c.image for c in find_cases(DATA / "ct_unlabelled")] + [c.image for c in find_cases(DATA / "ct")]
    out = []
    for f in files:
        try:
            out.append(slice_inputs(read_volume(f)).images)
        except Exception as exc:  # noqa: BLE001 - a volume that cannot be read is left out, said
            print(f"skipped {f}: {exc}")
    torch.save(out, path)
    return out


def training_set(pool: list[SliceCase], k: int, seed: int) -> list[SliceCase]:
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[:k]]


def evaluate(predictor: SliceNetPredictor, cases, volumes) -> tuple[dict[str, list[float]], float]:
    """Dice per organ on each validation volume's own grid; seconds per volume (CPU) of pre-segmentation."""
    per: dict[str, list[float]] = {t: [] for t in TARGETS}
    cpu = time.process_time()
    for case, (image, label) in zip(cases, volumes):
        pred = predictor.predict(image)
        for t in TARGETS:
            try:
                value = case.label_value(t)
            except Exception:  # noqa: BLE001 - not named in this case: not contoured
                continue
            g = label.array == value
            if not g.any():
                continue
            per[t].append(dice_score(pred == dict(zip(predictor.classes, predictor.values))[t], g))
    return per, (time.process_time() - cpu) / max(len(cases), 1)


def machine() -> dict:
    return {"device": "cpu", "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "load": os.getloadavg()[0]}


def done_runs(results: Path) -> set[tuple]:
    if not results.is_file():
        return set()
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(r["arm"], r["k"], r["seed"], r["steps"], r.get("head", 0), r.get("dice_on_absent", True),
             r.get("pool", "complete"))
            for r in rows if r.get("kind") == "curve"}


def cmd_pretrain(args) -> None:
    volumes = vf_volumes(args.cache)
    cfg = LearnConfig(steps=args.steps, seed=0, net=NetSpec(args.channels, head=args.head))
    res = pretrain_vf(volumes, args.out_dir / "vf.pt", cfg, progress=_printer("vf"))
    row = {"kind": "pretrain", "volumes": len(volumes), "steps": res.steps, "cpu_s": res.cpu_seconds,
           "wall_s": res.wall_seconds, "loss": res.last_loss, **machine()}
    print(json.dumps(row))
    with args.results.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _printer(tag: str):
    def report(done: int, total: int, message: str) -> None:
        if done % 250 == 0 or done == total:
            print(f"{tag} {done}/{total} {message}", flush=True)
    return report


def cmd_curve(args) -> None:
    train = cached_cases("train-pats", args.cache)
    if args.pool == "every":  # the ceiling (section 14): every recommended train-pats volume, organs where contoured
        pool = [c for c in train if c.contoured.any()]
    else:
        pool = [c for c in train if all(c.contoured[TARGETS.index(t)] for t in REQUIRED)]
    val_cases = labelled_cases(DATA / "ct_hn_openkbp", "validation-pats", recommended_only=True)
    if args.val_limit:
        val_cases = val_cases[:args.val_limit]
    volumes = [c.load() for c in val_cases]
    done = done_runs(args.results)
    print(f"pool {len(pool)} training volumes, {len(val_cases)} validation patients")
    for k in [min(k, len(pool)) if k else len(pool) for k in args.k]:
        for seed in (args.seeds if k <= 10 else args.seeds[:1]):
            for arm in args.arms:
                key = (arm, k, seed, args.steps, args.head, args.dice_on_absent, args.pool)
                if key in done:
                    continue
                init = args.out_dir / "vf.pt" if arm == "vf" else None
                cfg = LearnConfig(steps=args.steps, seed=seed, net=NetSpec(args.channels, head=args.head),
                                  dice_on_absent=args.dice_on_absent)
                keep = args.out_dir / f"{args.pool}_{arm}_k{k}_s{seed}_{args.steps}.pt" \
                    if args.pool == "every" else None
                res = finetune(training_set(pool, k, seed), TARGETS, keep, cfg, init=init,
                               progress=_printer(f"{arm} k={k} seed={seed}"))
                predictor = SliceNetPredictor({"meta": {"targets": TARGETS, "net": cfg.net.to_meta()}},
                                              device="cpu", model=res.model, every_class=True)
                per, seconds = evaluate(predictor, val_cases, volumes)
                row = {"kind": "curve", "arm": arm, "k": k, "seed": seed, "steps": args.steps, "head": args.head,
                       "dice_on_absent": args.dice_on_absent, "pool": args.pool, "training_dice": res.scores,
                       "params": n_parameters(res.model), "cpu_s": res.cpu_seconds, "wall_s": res.wall_seconds,
                       "predict_cpu_s_per_volume": seconds,
                       "dice": {t: float(np.mean(v)) if v else None for t, v in per.items()},
                       "n": {t: len(v) for t, v in per.items()}, **machine()}
                row["mean4"] = float(np.mean([row["dice"][t] for t in MEAN_OF]))
                print(json.dumps(row), flush=True)
                with args.results.open("a") as f:
                    f.write(json.dumps(row) + "\n")


def cmd_table(args) -> None:
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    curve = [r for r in rows if r.get("kind") == "curve" and r["steps"] == args.steps
             and r.get("pool", "complete") == args.pool
             and r.get("head", 0) == args.head and r.get("dice_on_absent", True) == args.dice_on_absent]
    print("| k | arm | seeds | " + " | ".join(TARGETS) + " | mean (brainstem, parotids, mandible) "
          "| CPU min / fine-tune | CPU s / volume |")
    print("|---" * (len(TARGETS) + 6) + "|")
    for k in sorted({r["k"] for r in curve}):
        for arm in ("scratch", "vf"):
            sel = [r for r in curve if r["k"] == k and r["arm"] == arm]
            if not sel:
                continue
            cells = []
            for t in TARGETS:
                v = [r["dice"][t] for r in sel if r["dice"][t] is not None]
                cells.append(f"{np.mean(v):.3f}" + (f" ± {np.std(v):.3f}" if len(v) > 1 else ""))
            m = [r["mean4"] for r in sel]
            print(f"| {k} | {arm} | {len(sel)} | " + " | ".join(cells) +
                  f" | {np.mean(m):.3f}" + (f" ± {np.std(m):.3f}" if len(m) > 1 else "") +
                  f" | {np.mean([r['cpu_s'] for r in sel]) / 60:.1f} | "
                  f"{np.mean([r['predict_cpu_s_per_volume'] for r in sel]):.1f} |")
    few = " | ".join(f"{FEW_SHOT[t]:.3f}" for t in TARGETS)
    print(f"| - | few-shot (atlas, 5 templates) | - | {few} | {np.mean([FEW_SHOT[t] for t in MEAN_OF]):.3f} | - | - |")
    print()
    for arm in ("scratch", "vf"):  # the first k at which the learned model is ahead of the templates, per organ
        firsts = []
        for t in [*TARGETS, "mean4"]:
            ks = sorted({r["k"] for r in curve if r["arm"] == arm})
            mean = {k: np.mean([r["mean4"] if t == "mean4" else r["dice"][t] for r in curve
                                if r["k"] == k and r["arm"] == arm]) for k in ks}
            bar = np.mean([FEW_SHOT[m] for m in MEAN_OF]) if t == "mean4" else FEW_SHOT[t]
            ahead = [k for k in ks if mean[k] > bar]
            firsts.append(f"{t}: k = {ahead[0]}" if ahead else f"{t}: not by k = {max(ks, default=0)}")
        print(f"{arm} ahead of the templates from " + "; ".join(firsts))
    for k in sorted({r["k"] for r in curve}):  # VF - scratch, paired by seed (same training volumes)
        pairs = [(a["mean4"], b["mean4"]) for a in curve for b in curve if a["k"] == b["k"] == k
                 and a["seed"] == b["seed"] and a["arm"] == "vf" and b["arm"] == "scratch"]
        if pairs:
            d = [a - b for a, b in pairs]
            each = ", ".join(f"{x:+.3f}" for x in d)
            print(f"k = {k}: VF - scratch = {np.mean(d):+.3f} mean over {len(d)} seed(s) ({each})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["pretrain", "curve", "table"])
    ap.add_argument("--steps", type=int, default=LearnConfig().steps)
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 20, 40], help="training volumes (0: the whole pool)")
    ap.add_argument("--pool", choices=["complete", "every"], default="complete",
                    help="complete: train-pats with brainstem, parotids and mandible contoured; every: every "
                         "recommended train-pats volume, each organ where contoured (the ceiling)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["scratch", "vf"], choices=["scratch", "vf"])
    ap.add_argument("--channels", type=int, nargs="+", default=NetSpec().channels)
    ap.add_argument("--dice-on-absent", action="store_true", help="the coreset probe's loss (soft Dice also on "
                    "slices without the target), as the first curve runs")
    ap.add_argument("--head", type=int, default=0, help="feature maps before a 1x1 class head (0: MONAI's own)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-limit", type=int, default=0, help="score only the first N validation patients (trials)")
    ap.add_argument("--cache", type=Path, default=ROOT / "results" / "learning" / "cache")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "results" / "learning")
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "learning" / "curve.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    {"pretrain": cmd_pretrain, "curve": cmd_curve, "table": cmd_table}[args.command](args)


if __name__ == "__main__":
    main()
