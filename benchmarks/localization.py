"""Leave-one-out few-shot localization benchmark: box IoU, box-face distance (mm), seconds per query.

Every labelled CT volume in turn is the query and every other one a template; targets are matched
by name across label maps.  The procedural phantoms add a many-volume set with known truth.

    python benchmarks/localization.py                                   # shared CT + 6 phantoms
    python benchmarks/localization.py --data /path/to/WORD --phantoms 0 # any dataset folder(s)
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.boxes import Box3D  # noqa: E402
from training.datasets import find_cases  # noqa: E402
from training.extreme_points import extreme_points_from_mask  # noqa: E402
from training.localize import MedLAMLocalizer, RefinedRegistrationLocalizer, RegistrationLocalizer, Template  # noqa: E402
from training.medlam.preprocess import looks_like_ct  # noqa: E402
from training.metrics import box_face_distance_mm, box_iou  # noqa: E402
from training.phantom import make_phantom  # noqa: E402
from training.volume import Volume  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
MIN_VOXELS = 200  # organs smaller than this in a volume are not evaluated there


def load_labelled(folders: list[Path]) -> list[tuple[str, Volume, Volume, dict[int, str]]]:
    out = []
    for folder in folders:
        for case in find_cases(folder, require_labels=True):
            image, label = case.load()
            if looks_like_ct(image):
                out.append((case.name, image, label, case.label_names))
    return out


def phantom_set(n: int) -> list[tuple[str, Volume, Volume, dict[int, str]]]:
    out = []
    for seed in range(n):
        ph = make_phantom(seed)
        out.append((f"phantom_{seed:03d}", ph.image, ph.label, ph.label_names))
    return out


def organ_values(label: Volume, names: dict[int, str]) -> dict[str, int]:
    counts = dict(zip(*np.unique(label.array, return_counts=True)))
    return {n: v for v, n in names.items() if counts.get(v, 0) >= MIN_VOXELS}


def leave_one_out(cases, methods, device, refine_iterations: int = 1) -> dict:
    """{(method, organ): [(iou, wd_mm)]} and {method: [seconds per query]}."""
    scores: dict = defaultdict(list)
    seconds: dict = defaultdict(list)
    organs = [organ_values(lab, names) for _, _, lab, names in cases]
    points = [{o: extreme_points_from_mask(o, v, img, lab) for o, v in org.items()}
              for (_, img, lab, _), org in zip(cases, organs)]
    medlam = (MedLAMLocalizer(device=device, refine_iterations=refine_iterations)
              if any(m.startswith("medlam") for m in methods) else None)
    registration = RegistrationLocalizer()
    localizers = {"medlam": medlam, "registration": registration,
                  "medlam+reg": RefinedRegistrationLocalizer(medlam, registration) if medlam else None}
    for qi, (qname, qimg, qlab, _) in enumerate(cases):
        templates = []
        for ti, (_, timg, _, _) in enumerate(cases):
            shared = [points[ti][o] for o in points[ti] if o in organs[qi]]
            if ti != qi and shared:
                templates.append(Template(timg, shared))
        if not templates:
            continue
        for method in methods:
            loc = localizers[method]
            if medlam is not None and method != "registration":
                medlam.prepare_templates(templates)  # once per template set, not part of a query's time
            t0 = time.perf_counter()
            try:
                results = loc.localize(qimg, templates)
            except Exception as exc:  # a failed query is a row of the table, not the end of the benchmark
                print(f"  {qname} {method}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            seconds[method].append(time.perf_counter() - t0)
            if method == "medlam+reg" and "registration" in methods:
                # its registration step was cached from the registration row: count it here too
                seconds[method][-1] += seconds["registration"][-1]
            for r in results:
                truth = Box3D.from_mask(qlab.array == organs[qi][r.target])
                scores[(method, r.target)].append((box_iou(r.box, truth), box_face_distance_mm(r.box, truth, qimg.spacing)))
            print(f"  {qname} {method}: {seconds[method][-1]:.1f} s, {len(results)} targets", file=sys.stderr)
    return scores, seconds


def table(title: str, scores, seconds, methods) -> str:
    lines = [f"### {title}", "", "| organ | " + " | ".join(f"{m} IoU % / WD mm (n)" for m in methods) + " |",
             "|---|" + "---|" * len(methods)]
    organs = sorted({o for (_, o) in scores})
    for organ in organs:
        cells = []
        for m in methods:
            vals = scores.get((m, organ), [])
            cells.append(f"{100 * np.mean([v[0] for v in vals]):.1f} / {np.mean([v[1] for v in vals]):.1f} ({len(vals)})"
                         if vals else "-")
        lines.append(f"| {organ} | " + " | ".join(cells) + " |")
    means = []
    for m in methods:
        vals = [v for (mm, _), vs in scores.items() if mm == m for v in vs]
        means.append(f"**{100 * np.mean([v[0] for v in vals]):.1f} / {np.mean([v[1] for v in vals]):.1f}**" if vals else "-")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    lines.append("| s / query | " + " | ".join(f"{np.mean(seconds[m]):.1f}" if seconds.get(m) else "-" for m in methods) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, nargs="*", default=[DEFAULT_DATA], help="labelled CT dataset folder(s)")
    ap.add_argument("--phantoms", type=int, default=6, help="number of synthetic phantoms (0: none)")
    ap.add_argument("--methods", nargs="+", default=["medlam", "registration", "medlam+reg"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--refine-iterations", type=int, default=1, help="MedLAM MSS refinement passes")
    args = ap.parse_args()
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device: {where}; MedLAM refinement passes: {args.refine_iterations}\n")
    sets = []
    if args.data:
        sets.append((f"labelled CT in {', '.join(str(d) for d in args.data)} (leave-one-out)", load_labelled(args.data)))
    if args.phantoms:
        sets.append((f"{args.phantoms} synthetic phantoms (leave-one-out, {args.phantoms - 1} templates)",
                     phantom_set(args.phantoms)))
    for title, cases in sets:
        print(f"{title}: {len(cases)} volumes", file=sys.stderr)
        scores, seconds = leave_one_out(cases, args.methods, device, args.refine_iterations)
        print(table(title, scores, seconds, args.methods) + "\n")


if __name__ == "__main__":
    main()
