"""Few-label fine-tuning benchmark: PCT-Net from scratch vs from Volume Fusion pretraining.

k labelled training volumes (k = 1, 2, 4 where the data allow), the rest held out; the same step
budget for both starts; Dice per organ on the held-out volumes.

    python benchmarks/vf_finetune.py                                  # shared CT + 6 phantoms, CPU sizes
    python benchmarks/vf_finetune.py --data /path/to/BTCV --phantoms 0 --organs liver,spleen
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medlsam_training.engine.checkpoint import load_checkpoint  # noqa: E402
from medlsam_training.medlam.preprocess import looks_like_ct  # noqa: E402
from medlsam_training.metrics import binary_metrics  # noqa: E402
from medlsam_training.vf.train import DEFAULT_CONFIG, PCTPredictor, VFConfig, finetune, pretrain_vf  # noqa: E402
from medlsam_training.volumes.datasets import find_cases  # noqa: E402
from medlsam_training.volumes.io import read_image_label  # noqa: E402
from medlsam_training.volumes.phantom import write_phantom_dataset  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"


def evaluate(ckpt: Path, held_out, organs: list[str]) -> dict[str, list[float]]:
    predictor = PCTPredictor(ckpt)
    scores: dict[str, list[float]] = defaultdict(list)
    for case in held_out:
        image, label = read_image_label(case.image, case.label)
        pred = predictor.predict(image)
        for organ in organs:
            value_pred = dict((n, v) for v, n in predictor.labels)[organ]
            truth = label.array == case.label_value(organ)
            if truth.any():
                scores[organ].append(binary_metrics(pred == value_pred, truth, image.spacing_zyx)["dice"])
    return scores


def run_set(title: str, cases, organs: list[str], ks: list[int], cfg: VFConfig, vf_ckpt: Path, work: Path) -> None:
    cases = [c for c in cases if all(o in c.label_names.values() for o in organs)]
    print(f"### {title}\n\n| k (train volumes) | start | " + " | ".join(organs) + " | mean | s |\n|---|---|"
          + "---|" * (len(organs) + 2))
    for k in ks:
        if k >= len(cases):
            print(f"| {k} | - | " + " | ".join("-" for _ in organs) + f" | needs > {k} volumes, have {len(cases)} | |")
            continue
        for start, init in (("scratch", None), ("Volume Fusion", vf_ckpt)):
            totals: dict[str, list[float]] = defaultdict(list)
            t0 = time.perf_counter()
            for fold in range(min(len(cases), 2)):  # two folds: rotate which volumes train
                train = [cases[(fold + i) % len(cases)] for i in range(k)]
                held = [c for c in cases if c not in train]
                torch.manual_seed(fold)
                out = work / f"{title[:8]}-{k}-{start[:3]}-{fold}.pt"
                ckpt, _ = finetune(cfg, train, [(i + 1, o) for i, o in enumerate(organs)], out, init)
                for organ, vals in evaluate(ckpt, held, organs).items():
                    totals[organ].extend(vals)
            means = [np.mean(totals[o]) if totals[o] else float("nan") for o in organs]
            print(f"| {k} | {start} | " + " | ".join(f"{m:.3f}" for m in means)
                  + f" | **{np.nanmean(means):.3f}** | {time.perf_counter() - t0:.0f} |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, nargs="*", default=[DEFAULT_DATA])
    ap.add_argument("--unlabelled", type=Path, nargs="*", default=[DEFAULT_DATA.parent / "ct_unlabelled"])
    ap.add_argument("--organs", default="liver,spleen")
    ap.add_argument("--phantoms", type=int, default=6)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--pretrain-steps", type=int, default=200)
    ap.add_argument("--finetune-steps", type=int, default=100)
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--vf-checkpoint", type=Path, default=None,
                    help="reuse this Volume Fusion checkpoint instead of pretraining (its steps are reported)")
    args = ap.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    organs = args.organs.split(",")
    work = Path(tempfile.mkdtemp(prefix="vf-bench-"))
    phantom_dir = work / "phantoms"
    if args.phantoms:
        write_phantom_dataset(phantom_dir, n=args.phantoms)
    folders = [*args.data, *args.unlabelled] + ([phantom_dir] if args.phantoms else [])
    t0 = time.perf_counter()
    if args.vf_checkpoint:
        vf = args.vf_checkpoint
        pretrain = f"reused {vf} ({load_checkpoint(vf)['step']} steps)"
    else:
        vf = pretrain_vf(VFConfig.load(args.config, steps=args.pretrain_steps), folders, work / "vf.pt")
        pretrain = (f"{args.pretrain_steps} steps on every CT volume under {[str(f) for f in folders]} "
                    f"({time.perf_counter() - t0:.0f} s)")
    print(f"device: {device}; Volume Fusion pretraining: {pretrain}; fine-tuning: {args.finetune_steps} "
          f"steps, config {args.config.name}\n")
    cfg = VFConfig.load(args.config, steps=args.finetune_steps)
    labelled = [c for d in args.data for c in find_cases(d, require_labels=True)]
    labelled = [c for c in labelled if looks_like_ct(read_image_label(c.image, c.label)[0])]
    run_set("shared labelled CT", labelled, organs, args.ks, cfg, vf, work)
    if args.phantoms:
        run_set(f"{args.phantoms} synthetic phantoms", find_cases(phantom_dir, require_labels=True), organs,
                args.ks, cfg, vf, work)


if __name__ == "__main__":
    main()
