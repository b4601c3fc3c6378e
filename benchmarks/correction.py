"""Corrections in 3D: how many axial slices a simulated annotator draws until an organ is right.

Start (part ``presegment``): the product's pre-segmentation, ``medlsam segment`` with its defaults and K = 5
templates per organ from ``train-pats`` (the templates of ``benchmarks/session.py``), over every recommended
``validation-pats`` patient; the run writes the masks and, beside them, the atlas's per-template warped masks
(``.votes/``) that an update re-fuses.

The robots (part ``robots``), per patient and contoured organ (brainstem, spinal cord, parotids, mandible): each
round the robot redraws the axial slice with the largest contour error to the manual contour (mm of contour it
would redraw or erase at 4 mm, ``metrics.slice_contour_error``), that slice becomes the truth's, and the tool
updates the rest (``correction.update_target``: what ``medlsam correct`` and the annotator's "Update the rest"
run).  It stops when the organ reaches surface Dice >= 0.90 at 4 mm (MONAI) or after 25 rounds (counted as 25,
"censored").  Robots: ``brush`` (no update: each slice drawn changes only itself), each update of
``CorrectionUpdate`` (``auto`` is the product's default), and ``scratch+fill`` (Slicer's way from an empty mask:
draw every n-th slice of the organ, both ends included, fill between slices; the fewest slices of any n that
reaches the bar).

    .venv/bin/python benchmarks/correction.py --part presegment     # ~12 min on 2 cores, resumable
    .venv/bin/python benchmarks/correction.py --part robots         # ~20 min on 2 cores, resumable

The update's time is the time of ``update_target`` on the whole volume grid, as the annotator's job runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from session import HN_DATA, MIN_VOXELS, ORGANS, cli, make_templates, split  # noqa: E402

from medlsam_training.correction import fill_between, load_votes, update_target, votes_path  # noqa: E402
from medlsam_training.metrics import slice_contour_error, surface_dice  # noqa: E402
from medlsam_training.options import CorrectionUpdate  # noqa: E402
from medlsam_training.volumes.io import read_label, read_volume  # noqa: E402

TOLERANCE_MM, BAR, ROUNDS = 4.0, 0.90, 25
UPDATES = list(CorrectionUpdate)


def queries_of(args) -> list[str]:
    """The recommended patients of ``--split``; on train-pats (where an update's settings are chosen) the
    template patients are left out."""
    names = split(args.data, args.split)
    if args.split == "train-pats":
        used = {f.name.split("_")[0] + "_" + f.name.split("_")[1] for f in args.templates.glob("*.json")}
        names = [n for n in names if n not in used]
    return names[: args.queries]


def part_presegment(args) -> None:
    root = args.data
    files = make_templates(root, args.k, args.templates)
    queries = queries_of(args)
    cli("segment", *sum((["-t", str(f)] for f in files), []),
        *sum((["-q", str(root / "imagesTr" / f"{q}_0000.nii.gz")] for q in queries), []),
        "--out", str(args.out / "masks"), "--device", "cpu")
    print(f"pre-segmentation of {len(queries)} {args.split} in {args.out / 'masks'}")


def crop_of(*masks: np.ndarray, margin: int = 6) -> tuple[slice, slice, slice]:
    union = np.zeros(masks[0].shape, bool)
    for m in masks:
        union |= m
    nz = np.nonzero(union)
    return tuple(slice(max(0, int(a.min()) - margin), min(n, int(a.max()) + margin + 1))
                 for a, n in zip(nz, union.shape))


def robot(start: np.ndarray, truth: np.ndarray, spacing, update) -> tuple[int, bool, list[float]]:
    """Slices drawn until the bar (or ROUNDS), whether it was reached, and each update's seconds."""
    state, corrected, seconds = start.copy(), [], []
    for rounds in range(ROUNDS + 1):
        if surface_dice(state, truth, spacing, TOLERANCE_MM) >= BAR:
            return rounds, True, seconds
        if rounds == ROUNDS:
            break
        error = slice_contour_error(state, truth, spacing, TOLERANCE_MM)
        error[corrected] = -1.0
        z = int(np.argmax(error))
        if error[z] <= 0:  # no slice has a contour error beyond the tolerance left: more drawing cannot help
            break
        state[z] = truth[z]
        corrected.append(z)
        if update is not None:
            t0 = time.perf_counter()
            state = update(state, corrected)
            seconds.append(time.perf_counter() - t0)
    return ROUNDS, False, seconds


def scratch_fill(truth: np.ndarray, spacing) -> tuple[int, bool]:
    """Slicer's way: every n-th slice of the organ drawn (both ends), fill between; the fewest slices that do."""
    zs = np.nonzero(truth.any(axis=(1, 2)))[0]
    z0, z1 = int(zs.min()), int(zs.max())
    best = None
    for n in range(1, z1 - z0 + 2):
        drawn = sorted(set(range(z0, z1 + 1, n)) | {z1})
        given = np.zeros_like(truth)
        given[drawn] = truth[drawn]
        if surface_dice(fill_between(given, drawn), truth, spacing, TOLERANCE_MM) >= BAR:
            best = len(drawn) if best is None else min(best, len(drawn))
    return (best, True) if best is not None else (z1 - z0 + 1, False)


def part_robots(args) -> None:
    root, masks = args.data, args.out / "masks"
    scores_path = args.out / ("robots.jsonl" if args.split == "validation-pats" else f"robots_{args.split}.jsonl")
    rows = [json.loads(line) for line in scores_path.read_text().splitlines()] if scores_path.is_file() else []
    done = {(r["volume"], r["organ"]) for r in rows}
    for q in queries_of(args):
        if not (masks / f"{q}_0000.nii.gz").is_file():
            print(f"{q}: no pre-segmentation yet (run --part presegment); skipped")
            continue
        image = read_volume(root / "imagesTr" / f"{q}_0000.nii.gz")
        spacing = image.spacing_zyx
        truth_map = read_label(root / "labelsTr" / f"{q}.nii.gz", image).array
        pred_map = read_label(masks / f"{q}_0000.nii.gz", image, allow_empty=True).array
        votes = load_votes(votes_path(masks, f"{q}_0000"))
        for organ, value in ORGANS.items():
            truth = truth_map == value
            if (q, organ) in done or truth.sum() < MIN_VOXELS:
                continue  # not contoured: never scored
            start = pred_map == value
            v = votes.get(organ)
            in_votes = np.zeros_like(truth)
            if v is not None:
                in_votes[v.box.slices] = True
            sl = crop_of(truth, start, in_votes)
            # the robots work on the crop; the votes move with it
            crop_votes = v.moved((sl[2].start, sl[1].start, sl[0].start)) if v is not None else None
            t, s, img = truth[sl], start[sl], image.array[sl]
            row = {"volume": q, "organ": organ, "start_nsd": surface_dice(s, t, spacing, TOLERANCE_MM),
                   "votes": v is not None}
            n, ok, _ = robot(s, t, spacing, None)
            row["brush"] = [n, ok]
            for method in UPDATES:
                n, ok, sec = robot(s, t, spacing, lambda m, c, method=method, cv=crop_votes, sp=spacing, o=organ,
                                   im=img: update_target(m, c, method, cv, sp, o, im).mask)
                row[method.value] = [n, ok, float(np.median(sec)) if sec else None, max(sec) if sec else None]
            row["scratch+fill"] = list(scratch_fill(t, spacing))
            # the update's time on the whole grid (as the annotator runs it), after three corrected slices
            zs = np.nonzero(truth.any(axis=(1, 2)))[0]
            full = start.copy()
            picks = [int(zs[len(zs) // 4]), int(zs[len(zs) // 2]), int(zs[3 * len(zs) // 4])]
            full[picks] = truth[picks]
            row["full_grid_s"] = {m.value: update_target(full, picks, m, v, spacing, organ, image.array).seconds
                                  for m in UPDATES}
            rows.append(row)
            with scores_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(q, organ, {k: row[k] for k in ("start_nsd", "brush", *[m.value for m in UPDATES], "scratch+fill")},
                  flush=True)
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    robots = ["brush", *[m.value for m in UPDATES], "scratch+fill"]
    print("\n#### Slices drawn until surface Dice >= 0.90 at 4 mm (mean per organ; 25 = not reached in 25 rounds), "
          "K = 5 atlas pre-segmentation, recommended validation-pats\n")
    print("| organ | n | start NSD@4 | " + " | ".join(robots) + " |")
    print("|---|---|---|" + "---|" * len(robots))
    per = defaultdict(list)
    for r in rows:
        per[r["organ"]].append(r)
    means = defaultdict(list)
    for organ in ORGANS:
        rs = per.get(organ)
        if not rs:
            continue
        cells = []
        for rb in robots:
            counts = [r[rb][0] for r in rs]
            reached = sum(bool(r[rb][1]) for r in rs)
            means[rb].append(np.mean(counts))
            cells.append(f"{np.mean(counts):.1f} ({reached}/{len(rs)})")
        print(f"| {organ} | {len(rs)} | {np.mean([r['start_nsd'] for r in rs]):.2f} | " + " | ".join(cells) + " |")
    print("| **mean over organs** | | | " + " | ".join(f"**{np.mean(means[rb]):.1f}**" for rb in robots) + " |")
    brush = np.mean(means["brush"])
    print("\nshare of the brush's slices: " + ", ".join(
        f"{rb} {np.mean(means[rb]) / brush:.2f}" for rb in robots if rb != "brush"))
    for m in UPDATES:
        t = [r["full_grid_s"][m.value] for r in rows]
        print(f"update {m.value}: whole grid, 3 corrected slices: median {np.median(t):.2f} s, max {np.max(t):.2f} s")
    print(f"\ndevice: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
          f"load at the end {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("presegment", "robots", "table"), default="robots")
    parser.add_argument("--data", type=Path, default=HN_DATA)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--queries", type=int, default=None, help="the first N patients (default: all)")
    parser.add_argument("--split", default="validation-pats", choices=("validation-pats", "train-pats"),
                        help="where the robots run: report on validation-pats; choose an update's settings on "
                             "train-pats (the template patients left out)")
    parser.add_argument("--templates", type=Path, default=Path("results/session/templates_k5/templates"))
    parser.add_argument("--out", type=Path, default=Path("results/correction"))
    args = parser.parse_args()
    args.out, args.templates = args.out.resolve(), args.templates.resolve()
    if args.part == "presegment":
        part_presegment(args)
    elif args.part == "robots":
        part_robots(args)
    else:
        print_table([json.loads(line) for line in (args.out / "robots.jsonl").read_text().splitlines()])


if __name__ == "__main__":
    main()
