"""The first volume of an empty project (a component benchmark, issue 43 item 2): what the annotator's six points per
organ give on their own volume, and how many slices the correction robot then draws.

Starts (each from the organ's exact box, i.e. its six extreme points from the manual contour):
- ``run``: what the run writes (``segment_query`` with the points-only template on its own volume); when the table of
  docs/benchmarks.md 13a was measured, LiteMedSAM propagated from the box (bones: the CT threshold); since then, chosen
  by that table, the ellipsoid below, so ``run`` and ``prior`` now agree;
- ``prior``: the in-box prior of the CAM dock's organ seeding (an ellipsoid inscribed in the box; bones: the
  threshold), ``cam.organ.box_prior``.
The robot is section 9's (``benchmarks/correction.py``: the worst slice redrawn, then the update).
Updates after each drawn slice (``correction.update_target``, auto): ``fill`` (what a mask without atlas votes got
before: fill between the corrected slices) and ``self`` (the start kept as the one voter, so that the update re-fuses
and shifts it toward the drawn slices as it does the atlas's votes).  References: scratch + fill, brush from empty.

Chosen on ``train-pats`` (never on validation patients):

    .venv/bin/python benchmarks/cold_start.py --n 6          # ~25 min on 2 cores (load 4-5)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from correction import robot  # noqa: E402
from dataset import (  # noqa: E402
    HN_DATA,
    HN_ORGANS,
    brush_from_empty,
    crop_of,
    dataset_cases,
    image_path,
    nsd,
    organ_values,
    scratch_fill,
    true_contour_mm,
    truth_of,
)

from medlsam_training.cam.organ import box_prior, prior_kind  # noqa: E402
from medlsam_training.correction.update import load_itk_filters, update_target  # noqa: E402
from medlsam_training.correction.votes import own_votes  # noqa: E402
from medlsam_training.localization.extreme_points import extreme_points_from_mask  # noqa: E402
from medlsam_training.localization.localize import AtlasLocalizer, Template  # noqa: E402
from medlsam_training.project.pipeline import segment_query  # noqa: E402
from medlsam_training.segmentation.propagate import PropagationConfig  # noqa: E402
from medlsam_training.segmentation.segmenters import load_segmenter  # noqa: E402
from medlsam_training.volumes.boxes import Box3D  # noqa: E402
from medlsam_training.volumes.io import read_volume  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HN_DATA)
    parser.add_argument("--split", default="train-pats")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--organs", default=HN_ORGANS)
    parser.add_argument("--out", type=Path, default=Path("results/cold_start.jsonl"))
    args = parser.parse_args()
    organs = organ_values(args.data, [o for o in args.organs.split(",") if o])
    rows = [json.loads(x) for x in args.out.read_text().splitlines()] if args.out.is_file() else []
    done = {(r["volume"], r["organ"]) for r in rows}
    segmenter = load_segmenter("litemedsam", device="cpu")
    load_itk_filters()
    for case in dataset_cases(args.data, args.split, args.n):
        image = read_volume(image_path(args.data, case))
        truth = truth_of(args.data, case, image, organs)
        todo = [o for o in truth if (case, o) not in done]
        if not todo:
            continue
        eps = [extreme_points_from_mask(o, organs[o], image, image.with_array(truth[o].astype(np.uint8) * organs[o]))
               for o in todo]
        t0 = time.perf_counter()
        label_map, located = segment_query(image, [Template(image, eps, {})], AtlasLocalizer(), segmenter,
                                           PropagationConfig(mode="atlas"))  # the project's mode
        seconds = time.perf_counter() - t0
        sources = {t.target: t.source for t in located}
        for organ in todo:
            t, spacing = truth[organ], image.spacing_zyx
            contour = true_contour_mm(t, spacing)
            box = Box3D.from_mask(t)
            box_mask = np.zeros_like(t)
            box_mask[box.slices] = True
            starts = {"run": label_map == organs[organ],
                      "prior": box_prior(image.array, box_mask, prior_kind(organ, None))}
            row = {"volume": case, "organ": organ, "source": sources.get(organ), "run_s": round(seconds, 1),
                   "prior_kind": str(prior_kind(organ, None))}
            for name, start in starts.items():
                sl = crop_of(start, t, box_mask, margin=8)
                s, tt, img = start[sl], t[sl], image.array[sl]
                row[f"{name}_nsd"] = round(nsd(s, tt, spacing), 3)
                # section 9's robot (benchmarks/correction.py), the dataset's rule: the worst slice, then the update
                for arm, votes in (("fill", None), ("self", own_votes(s))):
                    n, ok, _ = robot(s, tt, spacing, lambda m, c, v=votes, o=organ, im=img, sp=spacing:
                                     update_target(m, c, "auto", v, sp, o, im).mask)
                    row[f"{name}+{arm}"] = [n, ok]
            row["scratch+fill"] = scratch_fill(t, spacing, contour)[:2]
            row["brush"] = brush_from_empty(t, spacing, contour)[:2]
            rows.append(row)
            with args.out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    arms = ["run+fill", "run+self", "prior+fill", "prior+self", "scratch+fill", "brush"]
    print(f"\n#### The first volume from six points per organ ({args.split}, {len({r['volume'] for r in rows})} "
          "patients): slices drawn until surface Dice >= 0.90 at 4 mm (mean; reached / organs)\n")
    print("| organ | n | NSD@4 run / prior | " + " | ".join(arms) + " |")
    print("|---|---|---|" + "---|" * len(arms))
    means = {a: [] for a in arms}
    for organ in organs:
        rs = [r for r in rows if r["organ"] == organ]
        if not rs:
            continue
        cells = []
        for a in arms:
            means[a].append(np.mean([r[a][0] for r in rs]))
            cells.append(f"{means[a][-1]:.1f} ({sum(r[a][1] for r in rs)}/{len(rs)})")
        print(f"| {organ} | {len(rs)} | {np.mean([r['run_nsd'] for r in rs]):.2f} / "
              f"{np.mean([r['prior_nsd'] for r in rs]):.2f} | " + " | ".join(cells) + " |")
    print("| **mean over organs** | | | " + " | ".join(f"**{np.mean(means[a]):.1f}**" for a in arms) + " |")
    print(f"\ndevice: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), load at the end "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
