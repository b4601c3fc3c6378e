"""What a user gets, through the product's own doors, on head-and-neck patients the method never saw.

Part ``templates`` (the default pipeline, nothing reviewed): per organ the first K recommended ``train-pats``
patients that hold it are made templates with ``medlsam extreme-points`` (their masks named), and ``medlsam segment``
runs with its defaults over every recommended ``validation-pats`` patient; each written mask is scored against the
manual contours: Dice, surface Dice (NSD) at 2 mm, and the added path length (APL: the share of the true contour
farther than 4 mm from the predicted one, slice by slice: the contour an annotator still redraws).  Contoured organs
only: a missing contour is never scored; an organ the run reported "not found" scores Dice 0 and APL share 1.
The run summary's ``source`` of every target is counted: a fallback from the fused masks is a row of its own.

    .venv/bin/python benchmarks/session.py --part templates --k 5        # ~15 min on 2 cores, resumable

Part ``session`` (a simulated annotator, after ``--part templates``): a project folder holds the K = 5 templates
(clicked: points from their masks; reviewed: their masks) and every recommended ``validation-pats`` patient, first
segmented by the templates alone (the masks of part ``templates``, the same pipeline: that run is this project's
first run).  The volumes are taken in the tool's own review order (``Project.review_order``: least confident
first).  Before each volume is corrected it is segmented again by the annotator's run (``run_project``: the clicked
templates, the reviewed volumes as the pool, the project's network when it has one, combined) and scored; then the
truth replaces its mask and it is marked reviewed.  After every 5 reviewed volumes the tool updates: the network is
fine-tuned on every reviewed volume (``finetune_project``, the command ``medlsam finetune --project`` runs).  Beside
the product, its two components on the same volume (labelled as components): the atlas vote alone (the pool) and
the network alone.  Resumable: a volume scored is a line of ``scores.jsonl``; a rerun goes on from there.

    .venv/bin/python benchmarks/session.py --part session --k 5          # ~60 min on 2 cores

Every command runs in this process through the CLI's own app (``medlsam_training.cli.app``) or the function the
annotator's run button calls, as a user would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typer.testing import CliRunner  # noqa: E402

from medlsam_training.cli import app  # noqa: E402
from medlsam_training.localization.localize import AtlasLocalizer  # noqa: E402
from medlsam_training.metrics import added_path_length, binary_metrics, pooled_apl_share  # noqa: E402
from medlsam_training.project.folder import Project  # noqa: E402
from medlsam_training.project.pipeline import RESULTS_NAME  # noqa: E402
from medlsam_training.segmentation.propagate import PropagationConfig, clean_mask, for_target  # noqa: E402
from medlsam_training.volumes.atomic import write_json_atomic  # noqa: E402
from medlsam_training.volumes.io import read_label, read_volume, write_mask  # noqa: E402

HN_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct_hn_openkbp"
ORGANS = {"brainstem": 1, "spinal_cord": 2, "parotid_right": 3, "parotid_left": 4, "mandible": 7}
HEADLINE = ("brainstem", "parotid_right", "parotid_left", "mandible")  # the mean (the cord apart)
MIN_VOXELS = 200  # a contour smaller than this is a fragment, not the organ: not a template, not scored
NSD_MM, APL_MM = 2.0, 4.0


def split(root: Path, name: str) -> list[str]:
    cases = json.loads((root / "manifest.json").read_text())["cases"]
    names = [c["patient"] for c in cases if c["split"] == name and c["recommended"]]
    return sorted(names, key=lambda n: int(n.split("_")[1]))


def cli(*args: str) -> str:
    r = CliRunner().invoke(app, list(args))
    if r.exit_code != 0:
        raise SystemExit(f"medlsam {' '.join(args[:1])} failed ({r.exit_code}): {r.output[-2000:]}")
    return r.output


def make_templates(root: Path, k: int, folder: Path) -> list[Path]:
    """``medlsam extreme-points`` for the first K train-pats holding each organ (what a user with masks runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for organ, value in ORGANS.items():
        picked = 0
        for pt in split(root, "train-pats"):
            if picked == k:
                break
            label = root / "labelsTr" / f"{pt}.nii.gz"
            if np.count_nonzero(read_label(label).array == value) < MIN_VOXELS:
                continue
            out = folder / f"{pt}_{organ}.json"
            if not out.is_file():
                cli("extreme-points", str(root / "imagesTr" / f"{pt}_0000.nii.gz"), str(label), "--target", organ,
                    "--value", str(value), "--out", str(out))
            files.append(out)
            picked += 1
    return files


def score(pred: np.ndarray, truth: np.ndarray, spacing_zyx, organs=ORGANS) -> dict[str, dict[str, float]]:
    """Per contoured organ: Dice, NSD, APL (mm, contour mm, share)."""
    out = {}
    for organ, value in organs.items():
        gt = truth == value
        if gt.sum() < MIN_VOXELS:
            continue  # not contoured on this patient: never scored
        p = pred == value
        m = binary_metrics(p, gt, spacing_zyx, NSD_MM)
        m.update(added_path_length(p, gt, spacing_zyx, APL_MM))
        out[organ] = m
    return out


def table(rows: dict[str, list[dict[str, float]]], title: str) -> str:
    lines = [f"#### {title}", "", "| organ | Dice | NSD@2mm | APL share@4mm | n |", "|---|---|---|---|---|"]
    for organ in ORGANS:
        ms = rows.get(organ, [])
        if ms:
            share = pooled_apl_share(ms)
            lines.append(f"| {organ} | {np.mean([m['dice'] for m in ms]):.3f} | "
                         f"{np.mean([m['nsd'] for m in ms]):.3f} | {share:.3f} | {len(ms)} |")
    head = [m for o in HEADLINE for m in rows.get(o, [])]
    if head:
        dice = np.mean([np.mean([m["dice"] for m in rows[o]]) for o in HEADLINE if rows.get(o)])
        nsd = np.mean([np.mean([m["nsd"] for m in rows[o]]) for o in HEADLINE if rows.get(o)])
        share = pooled_apl_share(head)
        lines.append(f"| **mean of brainstem, parotids, mandible** | **{dice:.3f}** | {nsd:.3f} | **{share:.3f}** | |")
    return "\n".join(lines)


def part_templates(args) -> None:
    root, work = args.data, args.out / f"templates_k{args.k}"
    files = make_templates(root, args.k, work / "templates")
    queries = split(root, "validation-pats")[: args.queries]
    masks = work / "masks"
    t0 = time.perf_counter()
    cli("segment", *sum((["-t", str(f)] for f in files), []),
        *sum((["-q", str(root / "imagesTr" / f"{q}_0000.nii.gz")] for q in queries), []),
        "--out", str(masks), "--device", args.device)
    wall = time.perf_counter() - t0
    summary = json.loads((masks / RESULTS_NAME).read_text())
    rows: dict[str, list] = defaultdict(list)
    sources, seconds = Counter(), []
    for q in queries:
        record = summary[f"{q}_0000"]
        seconds.append(record["seconds"])
        image = read_volume(root / "imagesTr" / f"{q}_0000.nii.gz")
        truth = read_label(root / "labelsTr" / f"{q}.nii.gz", image).array
        pred = read_label(masks / f"{q}_0000.nii.gz", image, allow_empty=True).array
        for organ, m in score(pred, truth, image.spacing_zyx).items():
            rows[organ].append(m)
            info = record["targets"].get(organ, {})
            sources[info.get("source") or info.get("status", "absent")] += 1
    print(table(rows, f"`medlsam segment` defaults, K = {args.k} templates per organ (train-pats), "
                      f"{len(queries)} validation-pats queries"))
    print(f"\nmasks written by (contoured organs): {dict(sources)}")
    print(f"s / query (the run summary's, both cores): median {np.median(seconds):.1f}, max {np.max(seconds):.1f}; "
          f"this run's wall {wall:.0f} s (finished queries are skipped on a rerun)")
    print(f"device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
          f"load at the end {os.getloadavg()[0]:.1f}")


class RecordingAtlas(AtlasLocalizer):
    """The product's localizer (the project's default), keeping its last result to score its components."""

    def localize(self, query, templates):
        self.last = super().localize(query, templates)
        return self.last


def setup_project(root: Path, k: int, work: Path, folder: Path) -> Project:
    """The project: the K templates (clicked from their masks, reviewed) and the validation patients with the
    templates-only masks of part ``templates`` as their first run."""
    first = work / f"templates_k{k}"
    if not (first / "masks" / RESULTS_NAME).is_file():
        raise SystemExit(f"run --part templates --k {k} first ({first} has no run)")
    folder.mkdir(parents=True)
    picked: dict[str, list[str]] = defaultdict(list)
    for f in sorted((first / "templates").glob("*.json")):
        pt, organ = f.stem.split("_", 2)[:2], f.stem.split("_", 2)[2]
        picked["_".join(pt)].append(organ)
    queries = split(root, "validation-pats")
    for pt in [*picked, *queries]:
        (folder / f"{pt}.nii.gz").symlink_to(root / "imagesTr" / f"{pt}_0000.nii.gz")
    (folder / "templates").mkdir()
    for pt, organs in picked.items():
        for organ in organs:
            cli("extreme-points", str(folder / f"{pt}.nii.gz"), str(root / "labelsTr" / f"{pt}.nii.gz"), "--target",
                organ, "--value", str(ORGANS[organ]), "--out", str(folder / "templates" / f"{pt}_{organ}.json"))
    project = Project.open(folder)
    for organ, value in ORGANS.items():
        if not any(t.name == organ for t in project.targets):
            project.add_target(organ, value)
    for pt, organs in picked.items():  # the templates' masks: reviewed, their clicked organs only
        image = read_volume(project.volume_path(pt))
        truth = read_label(root / "labelsTr" / f"{pt}.nii.gz", image).array
        keep = [ORGANS[o] for o in organs]
        mask = np.where(np.isin(truth, keep), truth, 0).astype(np.uint8)
        project.set_status(pt, "segmented", write_mask(mask, image, project.mask_path(pt)))
        project.mark_reviewed(pt)
    summary = json.loads((first / "masks" / RESULTS_NAME).read_text())
    ours = {}
    for q in queries:
        shutil.copyfile(first / "masks" / f"{q}_0000.nii.gz", project.mask_path(q))
        ours[q] = {**summary[f"{q}_0000"], "output": str(project.mask_path(q))}
    write_json_atomic(ours, project.mask_path(queries[0]).parent / RESULTS_NAME)
    return Project.open(folder)


def truth_mask(root: Path, pt: str, image) -> np.ndarray:
    truth = read_label(root / "labelsTr" / f"{pt}.nii.gz", image).array
    return np.where(np.isin(truth, list(ORGANS.values())), truth, 0).astype(np.uint8)


def part_session(args) -> None:
    from medlsam_training.learning.project_loop import finetune_project, training_volumes
    from medlsam_training.project.run import build_templates, project_network, run_project
    from medlsam_training.segmentation.segmenters import load_segmenter

    root, work = args.data, args.out
    folder = work / f"project_k{args.k}"
    project = Project.open(folder) if folder.is_dir() else setup_project(root, args.k, work, folder)
    scores_path = folder / "scores.jsonl"
    rows = [json.loads(line) for line in scores_path.read_text().splitlines()] if scores_path.is_file() else []
    order_path = folder / "review_order.json"
    if not order_path.is_file():  # fixed once, from the first run (the templates alone)
        order = [v.name for v in project.review_order() if v.status == "segmented"]
        write_json_atomic(order, order_path)
    order = json.loads(order_path.read_text())
    localizer, segmenter = RecordingAtlas(), load_segmenter("litemedsam", device=args.device)
    for name in order[: args.volumes]:
        if any(r["volume"] == name for r in rows):
            continue
        project = Project.open(folder)
        reviewed = [v.name for v in project.volumes if v.status == "reviewed" and not v.template]
        trained = (folder / "models" / "trained_on.json")
        if reviewed and len(reviewed) % args.update_every == 0 and \
                (not trained.is_file() or json.loads(trained.read_text()) != reviewed):
            cpu, t0 = time.process_time(), time.perf_counter()
            fit = finetune_project(project, device=args.device)
            write_json_atomic(reviewed, trained)
            print(f"update after {len(reviewed)} reviewed: fine-tuned on {len(training_volumes(project))} volumes "
                  f"in {time.perf_counter() - t0:.0f} s wall, {time.process_time() - cpu:.0f} CPU-s; "
                  f"training Dice {fit.scores}", flush=True)
        image = read_volume(project.volume_path(name))
        truth = truth_mask(root, name, image)
        network = project_network(project)
        t0 = time.perf_counter()
        results = run_project(project, build_templates(project), [name], localizer, segmenter, existing="overwrite",
                              config=PropagationConfig(mode=project.mode), network=network)
        seconds = time.perf_counter() - t0
        written = read_label(project.mask_path(name), image).array
        located = {t.target: t for t in localizer.last}
        atlas = np.zeros_like(written)
        for organ, value in ORGANS.items():
            t = located.get(organ)
            if t is not None and t.mask is not None:
                atlas[clean_mask(t.mask, for_target(PropagationConfig(), organ).largest_component,
                                 fill_holes=False) & (atlas == 0)] = value
        row = {"volume": name, "reviewed_before": len(reviewed), "seconds": round(seconds, 1),
               "network": network is not None, "sources": {t.target: t.source for t in results[0].targets},
               "pool": {t.target: [t.templates, t.pool] for t in results[0].targets},
               "product": score(written, truth, image.spacing_zyx),
               "atlas": score(atlas, truth, image.spacing_zyx)}
        if network is not None:
            row["network_alone"] = score(network.predict(image), truth, image.spacing_zyx)  # the same model
            # the mix the network's training learned per target from the reviewed volumes (absent: the fixed one)
            row["mix"] = {t: [c.share, c.threshold] for t, c in network.combination.items() if c.learned}
        # the annotator corrects it: the truth replaces the mask, the volume is reviewed
        write_mask(truth, image, project.mask_path(name))
        project.mark_reviewed(name)
        rows.append(row)
        with scores_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        head = [row["product"][o]["dice"] for o in HEADLINE if o in row["product"]]
        print(f"{name}: {len(reviewed)} reviewed before, {seconds:.0f} s, Dice (brainstem, parotids, mandible) "
              f"{np.mean(head):.3f}, sources {sorted(set(row['sources'].values()))}", flush=True)
    print_session(rows, args)


def print_session(rows: list[dict], args) -> None:
    """The curve: per bucket of reviewed volumes (0-4, 5-9, ...), the product and its components."""
    print(f"\n#### The session: K = {args.k} templates (train-pats), validation-pats volumes in the tool's review "
          f"order, an update after every {args.update_every} reviewed\n")
    print("| reviewed before | volumes | product Dice | product APL share | spinal cord Dice | atlas vote alone "
          "(component) Dice / APL | network alone (component) Dice / APL | s / volume (median) |")
    print("|---|---|---|---|---|---|---|---|")
    step = args.update_every
    for lo in range(0, max((r["reviewed_before"] for r in rows), default=0) + 1, step):
        bucket = [r for r in rows if lo <= r["reviewed_before"] < lo + step]
        if not bucket:
            continue
        cells = []
        for key in ("product", "atlas", "network_alone"):
            per = defaultdict(list)
            for r in bucket:
                for organ, m in r.get(key, {}).items():
                    per[organ].append(m)
            cells.append(per)

        def dice(per):
            return np.mean([np.mean([m["dice"] for m in per[o]]) for o in HEADLINE if per.get(o)]) if per else np.nan

        def apl(per):
            head = [m for o in HEADLINE for m in per.get(o, [])]
            return pooled_apl_share(head)

        cord = np.mean([m["dice"] for m in cells[0].get("spinal_cord", [])]) if cells[0].get("spinal_cord") else np.nan
        net = f"{dice(cells[2]):.3f} / {apl(cells[2]):.3f}" if cells[2] else "-"
        print(f"| {lo}-{lo + step - 1} | {len(bucket)} | {dice(cells[0]):.3f} | {apl(cells[0]):.3f} | {cord:.3f} | "
              f"{dice(cells[1]):.3f} / {apl(cells[1]):.3f} | {net} | "
              f"{np.median([r['seconds'] for r in bucket]):.0f} |")
    print("| drawing from scratch | | 0 | 1.000 | | | | |")
    print(f"\ndevice: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
          f"load at the end {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("templates", "session"), default="templates")
    parser.add_argument("--volumes", type=int, default=None, help="session: stop after this many volumes (a chunk)")
    parser.add_argument("--update-every", type=int, default=5)
    parser.add_argument("--data", type=Path, default=HN_DATA)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--queries", type=int, default=None, help="the first N validation-pats (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/session"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.out = args.out.resolve()
    if args.part == "templates":
        part_templates(args)
    else:
        part_session(args)


if __name__ == "__main__":
    main()
