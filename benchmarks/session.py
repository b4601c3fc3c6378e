"""What a user gets, through the product's own doors, on head-and-neck patients the method never saw.

Part ``templates`` (the default pipeline, nothing reviewed): per organ the first K recommended ``train-pats``
patients that hold it are made templates with ``medlsam extreme-points`` (their masks named), and ``medlsam segment``
runs with its defaults over every recommended ``validation-pats`` patient; each written mask is scored against the
manual contours: Dice, surface Dice (NSD) at 2 mm, and the added path length (APL: the share of the true contour
farther than 4 mm from the predicted one, slice by slice: the contour an annotator still redraws).  Contoured organs
only: a missing contour is never scored; an organ the run reported "not found" scores Dice 0 and APL share 1.
The run summary's ``source`` of every target is counted: a fallback from the fused masks is a row of its own.

    .venv/bin/python benchmarks/session.py --part templates --k 5        # ~15 min on 2 cores, resumable

Every command runs in this process through the CLI's own app (``medlsam_training.cli.app``), as a user's shell would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typer.testing import CliRunner  # noqa: E402

from medlsam_training.cli import app  # noqa: E402
from medlsam_training.io import read_label, read_volume  # noqa: E402
from medlsam_training.metrics import added_path_length, binary_metrics  # noqa: E402
from medlsam_training.pipeline import RESULTS_NAME  # noqa: E402

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
            share = sum(m["apl_mm"] for m in ms) / max(sum(m["contour_mm"] for m in ms), 1e-9)
            lines.append(f"| {organ} | {np.mean([m['dice'] for m in ms]):.3f} | "
                         f"{np.mean([m['nsd'] for m in ms]):.3f} | {share:.3f} | {len(ms)} |")
    head = [m for o in HEADLINE for m in rows.get(o, [])]
    if head:
        dice = np.mean([np.mean([m["dice"] for m in rows[o]]) for o in HEADLINE if rows.get(o)])
        nsd = np.mean([np.mean([m["nsd"] for m in rows[o]]) for o in HEADLINE if rows.get(o)])
        share = sum(m["apl_mm"] for m in head) / max(sum(m["contour_mm"] for m in head), 1e-9)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("templates",), default="templates")
    parser.add_argument("--data", type=Path, default=HN_DATA)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--queries", type=int, default=None, help="the first N validation-pats (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/session"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    part_templates(args)


if __name__ == "__main__":
    main()
