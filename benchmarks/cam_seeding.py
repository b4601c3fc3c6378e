"""CAM seeding benchmark: pseudo-mask Dice from slice tags alone (tags derived from the masks), per CAM variant.

Protocol hn (default): the slice classifier is trained on ct_hn_openkbp train-pats (or loaded with --model) and
reported on validation-pats (recommended cases). Protocol loo: leave-one-out over the labelled cases of --data
(the few torso CTs, the two brain-tumour MRs): each case is seeded by a classifier trained on the others.

    .venv/bin/python benchmarks/cam_seeding.py --model results/cam/hn_classifier.pt --max-cases 12 --litemedsam
    .venv/bin/python benchmarks/cam_seeding.py --protocol loo --data ../shared/data/ct \\
        --targets liver,spleen,kidney_left,kidney_right
    .venv/bin/python benchmarks/cam_seeding.py --protocol loo --data ../shared/data/mr/brain_tumour --targets 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medlsam_training.cam.classifier import load_classifier, train_classifier
from medlsam_training.cam.data import labelled_cases, load_tagged
from medlsam_training.cam.seeding import VARIANTS, seed_case

HN_TARGETS = "brainstem,spinal_cord,parotid_right,parotid_left,mandible"


def _progress(t0: float):
    last = [0.0]

    def report(done: int, total: int, msg: str) -> None:
        if time.time() - last[0] > 60 or done == total:
            last[0] = time.time()
            print(f"  step {done}/{total} {msg} ({time.time() - t0:.0f} s)", flush=True)
    return report


def evaluate(model, targets, tagged, dice, seconds, segmenter) -> None:
    for case, prep, tags, lab in tagged:
        t0 = time.time()
        results = seed_case(model, prep, tags, targets, segmenter=segmenter, truth=lab, case=case)
        seconds.append(time.time() - t0)
        for (variant, target), value in results.items():
            dice[variant][target].append(value)
        print(case.name, " ".join(f"{t}:{results[('umcam_gse', t)]:.2f}" for t in targets
                                  if ("umcam_gse", t) in results), f"({seconds[-1]:.1f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=("hn", "loo"), default="hn")
    ap.add_argument("--data", default="../shared/data/ct_hn_openkbp")
    ap.add_argument("--targets", default=HN_TARGETS)
    ap.add_argument("--model", default="results/cam/hn_classifier.pt", help="hn: trained here when missing")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--slices-per-epoch", type=int, default=6000)
    ap.add_argument("--max-cases", type=int, default=0, help="cases to report on (0: all)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--litemedsam", action="store_true", help="also UM-CAM + GSE -> LiteMedSAM and oracle boxes")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    targets = args.targets.split(",")
    variants = list(VARIANTS) + (["umcam_gse_litemedsam", "oracle_box_litemedsam"] if args.litemedsam else [])
    dice = {v: {t: [] for t in targets} for v in variants}
    seconds: list[float] = []
    segmenter = None
    if args.litemedsam:
        from medlsam_training.segmenters import load_segmenter

        segmenter = load_segmenter("litemedsam")
    t0 = time.time()
    if args.protocol == "hn":
        model_path = Path(args.model)
        if not model_path.is_file():
            train = load_tagged(labelled_cases(args.data, "train-pats"), targets)
            print(f"training on {len(train)} train-pats cases", flush=True)
            model_path.parent.mkdir(parents=True, exist_ok=True)
            train_classifier([(p, t) for _, p, t, _ in train], targets, model_path, epochs=args.epochs,
                             slices_per_epoch=args.slices_per_epoch, progress=_progress(t0))
            del train
        model, learned, _ = load_classifier(model_path)
        assert learned == targets, f"{model_path} learned {learned}"
        cases = labelled_cases(args.data, "validation-pats", recommended_only=True)
        cases = cases[:args.max_cases] if args.max_cases else cases
        evaluate(model, targets, load_tagged(cases, targets), dice, seconds, segmenter)
        source = f"classifier {model_path} (train-pats), {len(seconds)} validation-pats cases"
    else:
        tagged = load_tagged(labelled_cases(args.data), targets)
        tagged = tagged[:args.max_cases] if args.max_cases else tagged
        for i, held_out in enumerate(tagged):
            others = [(p, t) for j, (_, p, t, _) in enumerate(tagged) if j != i]
            path = Path(tempfile.mkdtemp()) / "loo.pt"
            train_classifier(others, targets, path, epochs=args.epochs, slices_per_epoch=args.slices_per_epoch,
                             progress=_progress(t0), modality=held_out[1].modality)
            model, _, _ = load_classifier(path)
            evaluate(model, targets, [held_out], dice, seconds, segmenter)
        source = f"leave-one-out over {len(tagged)} cases of {args.data}"
    print(f"\nCAM seeding: {source}; device CPU, {torch.get_num_threads()} threads; "
          f"{np.mean(seconds):.1f} s per volume for all variants\n")
    print("| variant | " + " | ".join(targets) + " | mean |")
    print("|---" * (len(targets) + 2) + "|")
    for v in variants:
        per = [np.mean(dice[v][t]) if dice[v][t] else float("nan") for t in targets]
        print(f"| {v} | " + " | ".join(f"{d:.3f}" for d in per) + f" | {np.nanmean(per):.3f} |")


if __name__ == "__main__":
    main()
