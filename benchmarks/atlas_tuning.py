"""Atlas localizer: fusion variants chosen on train-pats queries (never on the reported validation-pats).

One registration run per setting (template-wide only, or + per-target refinement); every fusion variant
(vote threshold, template weights) is scored from the same warped masks.  Templates: the H&N protocol's (first
five recommended train-pats holding each organ); queries: the next recommended train-pats patients.

    python benchmarks/atlas_tuning.py --n 8            # ~10 min per setting on the 2-core CPU
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from localization import HN_DATA, hn_split, hn_templates_and_queries  # noqa: E402

from medlsam_training.localization import localize as L  # noqa: E402
from medlsam_training.localization.atlas import warp_mask  # noqa: E402
from medlsam_training.metrics import box_face_distance_mm, box_iou  # noqa: E402
from medlsam_training.segmentation.propagate import clean_mask, single_part_target  # noqa: E402
from medlsam_training.volumes.boxes import Box3D, box_from_physical  # noqa: E402
from medlsam_training.volumes.datasets import find_cases  # noqa: E402

ORGANS = {"brainstem": 1, "spinal_cord": 2, "parotid_right": 3, "parotid_left": 4, "mandible": 7}
CORE = ("brainstem", "parotid_right", "parotid_left", "mandible")


def warps_of_run(per_target: bool, names: list[str], templates, by_name) -> list:
    """[(organ, sub-grid box, [(warped mask, fit NCC, match NCC)], truth on the sub-grid, truth box, spacing)]."""
    seen: dict = {}
    fuse = L._fuse_masks

    def record(result, masks, query, reference):  # the localizer's own warps, kept for re-scoring
        lo = np.min([np.array(r.region.GetOrigin()) for _, r in masks], 0)
        hi = np.max([np.array(r.region.TransformIndexToPhysicalPoint([n - 1 for n in r.region.GetSize()]))
                     for _, r in masks], 0)
        box = box_from_physical(lo, hi, query.geometry).grow(2).clip(query.size)
        ref = L.sitk.RegionOfInterest(reference, list(box.shape), list(box.lo))
        seen[result.target] = (box, [(warp_mask(m, r.transform, ref), r.fit_ncc, r.match_ncc) for m, r in masks])
        return fuse(result, masks, query, reference)

    L._fuse_masks = record
    try:
        loc, out = L.AtlasLocalizer(min_match=-2.0, per_target=per_target), []
        for name in names:
            image, label = by_name[name].load()
            seen.clear()
            loc.localize(image, templates)
            for organ, value in ORGANS.items():
                if organ in seen and (label.array == value).sum() >= 200:
                    box, warps = seen[organ]
                    truth = label.array == value
                    out.append((organ, box, warps, truth[box.slices], Box3D.from_mask(truth), image.spacing))
            print(f"  {name} done", file=sys.stderr, flush=True)
        return out
    finally:
        L._fuse_masks = fuse


def score(runs: list, vote: float, power: float) -> str:
    res = defaultdict(list)
    for organ, box, warps, truth, truth_box, spacing in runs:
        w = np.array([max(f if f is not None else m, 1e-3) ** power for _, f, m in warps])
        prob = sum(wi * p for wi, (p, _, _) in zip(w, warps)) / w.sum()
        fused = clean_mask(prob >= vote, single_part_target(organ), fill_holes=False)
        if not fused.any():
            res[organ].append((0.0, np.nan, 0.0))
            continue
        b = Box3D.from_mask(fused)
        b = Box3D(tuple(np.add(b.lo, box.lo)), tuple(np.add(b.hi, box.lo)))
        dice = 2 * float((fused & truth).sum()) / float(fused.sum() + truth.sum())
        res[organ].append((box_iou(b, truth_box), box_face_distance_mm(b, truth_box, spacing), dice))
    iou = 100 * np.mean([np.mean([v[0] for v in res[o]]) for o in ORGANS if res[o]])
    wd = np.nanmean([v[1] for o in ORGANS for v in res[o]])
    dice = np.mean([np.mean([v[2] for v in res[o]]) for o in CORE if res[o]])
    per = " ".join(f"{100 * np.mean([v[0] for v in res[o]]):.0f} / {np.mean([v[2] for v in res[o]]):.2f} |"
                   for o in ORGANS)
    return f"{iou:.1f} / {wd:.1f} | {dice:.3f} | {per}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="train-pats queries (after the templates)")
    args = ap.parse_args()
    cache: dict = {}
    templates, _ = hn_templates_and_queries(HN_DATA, 5, 0, cache)
    by_name = {c.name: c for c in find_cases(HN_DATA, require_labels=True)}
    names = [n for n in hn_split(HN_DATA, "train-pats") if n not in cache][:args.n]
    print(f"device: CPU {platform.machine()}; queries (train-pats): {', '.join(names)}\n")
    print("| registration | vote | weight | box IoU % / WD mm (5 organs) | Dice (brainstem, parotids, mandible) | "
          + " | ".join(f"{o} IoU / Dice" for o in ORGANS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(ORGANS))
    for per_target in (False, True):
        runs = warps_of_run(per_target, names, templates, by_name)
        for power in ((0,) if not per_target else (0, 2, 6)):
            for vote in (0.3, 0.4, 0.5):
                setting = "+ per-target affine + demons" if per_target else "template-wide affine + demons"
                print(f"| {setting} | {vote} | fit NCC^{power} | {score(runs, vote, power)}", flush=True)


if __name__ == "__main__":
    main()
