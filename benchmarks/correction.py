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

The second start (part ``learned``): the learning loop after 10 reviewed volumes, as ``benchmarks/session.py``'s
annotator has it: a project with the K = 5 clicked templates and every recommended ``validation-pats`` patient, the
first 10 in the tool's review order reviewed (their manual contours), the network fine-tuned on them
(``finetune_project``, what ``medlsam finetune --project`` runs), and the annotator's run (``run_project``: the
clicked templates and the reviewed volumes as the pool, combined with the network) over the other 18; the robots then
start from those masks (``--start learned``).  There the stored votes hold the network's probability
(``correction.with_probability``), so an update re-thresholds the combination; beside it the same update on the
atlas's votes alone (what an update did before the network was a voter).

    .venv/bin/python benchmarks/correction.py --part learned        # ~25 min on 2 cores
    .venv/bin/python benchmarks/correction.py --part robots --start learned

A fine in-plane grid (part ``sam``, issue 33's item 4): the 1 mm upper-abdomen CT ``ct/ts_dicom_abdomen`` (DICOM
series, 512 x 512 x 20 at 0.98 x 0.98 x 2 mm), every labelled organ on at least 5 slices.  Start: the product's
segmentation from the organ's six extreme points (``VolumeSegmenter.propagate`` from their box, as ``medlsam
segment`` runs a template's target on its own volume).  Robots: brush, fill between corrected slices, the segmenter
prompted from the corrected slices (``sam_update.sam_from_corrected``), scratch+fill.  The robots work on the organ's
box + 16 pixels in-plane (every slice); the segmenter sees whole slices.

    .venv/bin/python benchmarks/correction.py --part sam            # ~15 min on 2 cores

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

from session import HN_DATA, MIN_VOXELS, ORGANS, cli, make_templates, setup_project, split, truth_mask  # noqa: E402

from medlsam_training.correction import TemplateVotes, fill_between, load_votes, update_target, votes_path  # noqa: E402
from medlsam_training.localization.localize import VOTE  # noqa: E402
from medlsam_training.metrics import slice_contour_error, surface_dice  # noqa: E402
from medlsam_training.options import CorrectionUpdate  # noqa: E402
from medlsam_training.volumes.io import read_label, read_volume  # noqa: E402

TOLERANCE_MM, BAR, ROUNDS = 4.0, 0.90, 25
UPDATES = list(CorrectionUpdate)
REVIEWED = 10  # the learning loop's start: the network fine-tuned after this many reviewed volumes
ATLAS_ONLY = "auto, atlas votes only"  # the learned start's update without the network among the votes


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


def part_learned(args) -> None:
    """The learning loop's start: a project after REVIEWED reviewed volumes, its network, its run over the rest."""
    from medlsam_training.learning.project_loop import finetune_project
    from medlsam_training.localization.localize import AtlasLocalizer
    from medlsam_training.project.folder import Project
    from medlsam_training.project.run import build_templates, project_network, run_project
    from medlsam_training.segmentation.propagate import PropagationConfig
    from medlsam_training.segmentation.segmenters import load_segmenter
    from medlsam_training.volumes.atomic import write_json_atomic
    from medlsam_training.volumes.io import write_mask

    root, folder = args.data, args.out / "learned"
    session = args.templates.parent.parent  # results/session: its templates_k5 run is this project's first run
    project = Project.open(folder) if folder.is_dir() else setup_project(root, args.k, session, folder)
    order_path = folder / "review_order.json"
    if not order_path.is_file():  # the tool's own order after the first run, as benchmarks/session.py takes it
        write_json_atomic([v.name for v in project.review_order() if v.status == "segmented"], order_path)
    order = json.loads(order_path.read_text())
    reviewed, pending = order[:REVIEWED], order[REVIEWED:]
    for name in reviewed:
        if project.entry(name).status != "reviewed":  # the annotator's corrections: the manual contours
            image = read_volume(project.volume_path(name))
            write_mask(truth_mask(root, name, image), image, project.mask_path(name))
            project.mark_reviewed(name)
    if project_network(project) is None:
        t0 = time.perf_counter()
        fit = finetune_project(project, device="cpu")
        print(f"fine-tuned on {REVIEWED} reviewed + the templates in {time.perf_counter() - t0:.0f} s; "
              f"training Dice {fit.scores}", flush=True)
    done = folder / "pending_done.json"
    finished = json.loads(done.read_text()) if done.is_file() else []
    todo = [n for n in pending if n not in finished]
    if todo:
        project = Project.open(folder)
        network = project_network(project)
        for name in todo:  # one at a time, so that a rerun goes on from the next
            results = run_project(project, build_templates(project), [name], AtlasLocalizer(),
                                  load_segmenter("litemedsam", device="cpu"), existing="overwrite",
                                  config=PropagationConfig(mode=project.mode), network=network)
            sources = sorted({t.source for t in results[0].targets})
            finished.append(name)
            write_json_atomic(finished, done)
            print(f"{name}: {results[0].status} in {results[0].seconds:.0f} s, sources {sources}", flush=True)
    write_json_atomic(pending, folder / "pending.json")
    print(f"learning-loop start: {len(pending)} volumes in {project.mask_path(pending[0]).parent}")


def atlas_only(v: TemplateVotes | None) -> TemplateVotes | None:
    """The votes without the network's probability: the atlas's templates at their own threshold (None where the
    network alone made the mask)."""
    if v is None or not v.network:
        return v
    if len(v.warped) == 1:
        return None
    return TemplateVotes(v.box, v.warped[:-1], v.weights[:-1], VOTE).tight()


ABDOMEN = HN_DATA.parent / "ct" / "ts_dicom_abdomen"
MIN_SLICES = 5


def part_sam(args) -> None:
    """The fine-grid robots (module docstring, part ``sam``)."""
    from sam_update import sam_from_corrected

    from medlsam_training.segmentation.propagate import PropagationConfig, VolumeSegmenter, for_target
    from medlsam_training.segmentation.segmenters import load_segmenter
    from medlsam_training.volumes.boxes import Box3D
    from medlsam_training.volumes.datasets import read_label_names

    image = read_volume(ABDOMEN / "dicom")
    spacing = image.spacing_zyx
    truth_map = read_label(ABDOMEN / "label.nii.gz", image).array
    names = read_label_names(ABDOMEN / "labels.json")
    vs = VolumeSegmenter(image, load_segmenter("litemedsam", device="cpu"))
    scores_path = args.out / "robots_sam.jsonl"
    rows = [json.loads(line) for line in scores_path.read_text().splitlines()] if scores_path.is_file() else []
    done = {r["organ"] for r in rows}
    config = PropagationConfig(mode="atlas")
    for value in sorted(int(v) for v in np.unique(truth_map) if v):
        truth_full = truth_map == value
        organ = names.get(value, str(value))
        if organ in done or truth_full.any(axis=(1, 2)).sum() < MIN_SLICES or truth_full.sum() < MIN_VOXELS:
            continue
        t0 = time.perf_counter()
        start_full = vs.propagate([Box3D.from_mask(truth_full)], for_target(config, organ))
        start_s = time.perf_counter() - t0
        zs, ys, xs = np.nonzero(truth_full | start_full)
        h, w = truth_full.shape[1:]
        sl = (slice(0, truth_full.shape[0]), slice(max(0, ys.min() - 16), min(h, ys.max() + 17)),
              slice(max(0, xs.min() - 16), min(w, xs.max() + 17)))

        def sam(m, c, sl=sl):
            full = np.zeros(truth_map.shape, bool)
            full[sl] = m
            return sam_from_corrected(vs, full, c)[sl]

        t, s = truth_full[sl], start_full[sl]
        row = {"volume": ABDOMEN.name, "organ": organ, "start_nsd": surface_dice(s, t, spacing, TOLERANCE_MM),
               "start_s": start_s, "slices": int(t.any(axis=(1, 2)).sum())}
        n, ok, _ = robot(s, t, spacing, None)
        row["brush"] = [n, ok]
        n, ok, sec = robot(s, t, spacing, lambda m, c, o=organ: update_target(m, c, CorrectionUpdate.FILL, None,
                                                                               spacing, o).mask)
        row["fill"] = [n, ok, float(np.median(sec)) if sec else None, max(sec) if sec else None]
        n, ok, sec = robot(s, t, spacing, sam)
        row["sam"] = [n, ok, float(np.median(sec)) if sec else None, max(sec) if sec else None]
        row["scratch+fill"] = list(scratch_fill(t, spacing))
        rows.append(row)
        with scores_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(organ, {k: row[k] for k in ("start_nsd", *robots_of(row))}, flush=True)
    print_sam(rows)


def print_sam(rows: list[dict]) -> None:
    robots = robots_of(rows[0])
    print("\n#### Slices drawn until surface Dice >= 0.90 at 4 mm (25 = not reached), ct/ts_dicom_abdomen, "
          "start: the segmenter from the six extreme points' box\n")
    print("| organ | slices | start NSD@4 | " + " | ".join(robots) + " | update s (median / max), sam |")
    print("|---|---|---|" + "---|" * len(robots) + "---|")
    for r in rows:
        cells = [f"{r[rb][0]}" + ("" if r[rb][1] else " (not reached)") for rb in robots]
        sec = r["sam"][2:]
        timing = f"{sec[0]:.2f} / {sec[1]:.2f}" if sec[0] is not None else "-"
        print(f"| {r['organ']} | {r.get('slices', '')} | {r['start_nsd']:.2f} | " + " | ".join(cells)
              + f" | {timing} |")
    means = {rb: np.mean([r[rb][0] for r in rows]) for rb in robots}
    print("| **mean** | | | " + " | ".join(f"**{means[rb]:.1f}**" for rb in robots) + " | |")
    print("\nshare of the brush's slices: " + ", ".join(f"{rb} {means[rb] / means['brush']:.2f}"
                                                       for rb in robots if rb != "brush"))
    print(f"\ndevice: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
          f"load at the end {os.getloadavg()[0]:.1f}")


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


def scores_file(args) -> Path:
    if args.start == "learned":
        return args.out / "robots_learned.jsonl"
    return args.out / ("robots.jsonl" if args.split == "validation-pats" else f"robots_{args.split}.jsonl")


def part_robots(args) -> None:
    root = args.data
    learned = args.start == "learned"
    if learned:  # the project's masks: named by patient
        masks = args.out / "learned" / "masks"
        queries, case = json.loads((args.out / "learned" / "pending.json").read_text()), (lambda q: q)
        methods = [CorrectionUpdate.FILL, CorrectionUpdate.AUTO]
    else:
        masks, queries, case, methods = args.out / "masks", queries_of(args), (lambda q: f"{q}_0000"), UPDATES
    scores_path = scores_file(args)
    rows = [json.loads(line) for line in scores_path.read_text().splitlines()] if scores_path.is_file() else []
    done = {(r["volume"], r["organ"]) for r in rows}
    for q in queries:
        if not (masks / f"{case(q)}.nii.gz").is_file():
            print(f"{q}: no pre-segmentation yet (run --part presegment / learned); skipped")
            continue
        image = read_volume(root / "imagesTr" / f"{q}_0000.nii.gz")
        spacing = image.spacing_zyx
        truth_map = read_label(root / "labelsTr" / f"{q}.nii.gz", image).array
        pred_map = read_label(masks / f"{case(q)}.nii.gz", image, allow_empty=True).array
        votes = load_votes(votes_path(masks, case(q)))
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
                   "votes": v is not None, "network": bool(v is not None and v.network)}
            n, ok, _ = robot(s, t, spacing, None)
            row["brush"] = [n, ok]
            arms = [(m.value, m, crop_votes) for m in methods]
            if learned:
                arms.append((ATLAS_ONLY, CorrectionUpdate.AUTO, atlas_only(crop_votes)))
            for name, method, cv in arms:
                n, ok, sec = robot(s, t, spacing, lambda m, c, method=method, cv=cv, sp=spacing, o=organ,
                                   im=img: update_target(m, c, method, cv, sp, o, im).mask)
                row[name] = [n, ok, float(np.median(sec)) if sec else None, max(sec) if sec else None]
            row["scratch+fill"] = list(scratch_fill(t, spacing))
            # the update's time on the whole grid (as the annotator runs it), after three corrected slices
            zs = np.nonzero(truth.any(axis=(1, 2)))[0]
            full = start.copy()
            picks = [int(zs[len(zs) // 4]), int(zs[len(zs) // 2]), int(zs[3 * len(zs) // 4])]
            full[picks] = truth[picks]
            row["full_grid_s"] = {m.value: update_target(full, picks, m, v, spacing, organ, image.array).seconds
                                  for m in methods}
            rows.append(row)
            with scores_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(q, organ, {k: row[k] for k in ("start_nsd", *robots_of(row))}, flush=True)
    print_table(rows, args.start)


def robots_of(row: dict) -> list[str]:
    """The robots of a row, in the order they ran: every entry that is a [slices, reached, ...] list."""
    return [k for k, v in row.items() if isinstance(v, list)]


def print_table(rows: list[dict], start: str = "atlas") -> None:
    robots = robots_of(rows[0])
    where = ("the learning loop after 10 reviewed volumes (pool + network), the other recommended validation-pats"
             if start == "learned" else "K = 5 atlas pre-segmentation, recommended validation-pats")
    print("\n#### Slices drawn until surface Dice >= 0.90 at 4 mm (mean per organ; 25 = not reached in 25 rounds), "
          f"{where}\n")
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
    for m in rows[0]["full_grid_s"]:
        t = [r["full_grid_s"][m] for r in rows]
        print(f"update {m}: whole grid, 3 corrected slices: median {np.median(t):.2f} s, max {np.max(t):.2f} s")
    if start == "learned":
        net = sum(r["network"] for r in rows)
        print(f"{net} of {len(rows)} organs had the network among their votes")
    print(f"\ndevice: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
          f"load at the end {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("presegment", "learned", "robots", "sam", "table"), default="robots")
    parser.add_argument("--start", choices=("atlas", "learned"), default="atlas",
                        help="the robots' start: the atlas's pre-segmentation (part presegment) or the learning "
                             "loop's (part learned)")
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
    elif args.part == "learned":
        part_learned(args)
    elif args.part == "sam":
        part_sam(args)
    elif args.part == "robots":
        part_robots(args)
    else:
        print_table([json.loads(line) for line in scores_file(args).read_text().splitlines()], args.start)


if __name__ == "__main__":
    main()
