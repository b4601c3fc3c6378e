"""Leave-one-out few-shot localization benchmark: box IoU, box-face distance (mm), seconds per query.

Every labelled CT volume in turn is the query and every other one a template; targets are matched
by name across label maps.  The procedural phantoms add a many-volume set with known truth.

    python benchmarks/localization.py                                   # shared CT + 6 phantoms
    python benchmarks/localization.py --data /path/to/WORD --phantoms 0 # any dataset folder(s)
    python benchmarks/localization.py --protocol hn --k 1 3 5           # OpenKBP head and neck

Protocol ``hn`` (the MedLSAM paper's few-shot setting on real manual contours): per organ, the first K
recommended ``train-pats`` patients (in patient-number order) that hold it are the templates; every
recommended ``validation-pats`` patient is a query.  Templates never come from the reporting split.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medlsam_training.localization.extreme_points import extreme_points_from_mask  # noqa: E402
from medlsam_training.localization.localize import (
    MedLAMLocalizer,
    RefinedRegistrationLocalizer,
    RegistrationLocalizer,
    Template,
    make_localizer,
)
from medlsam_training.medlam.preprocess import looks_like_ct  # noqa: E402
from medlsam_training.metrics import box_face_distance_mm, box_iou  # noqa: E402
from medlsam_training.options import LocalizerName  # noqa: E402
from medlsam_training.volumes.boxes import Box3D  # noqa: E402
from medlsam_training.volumes.datasets import find_cases  # noqa: E402
from medlsam_training.volumes.phantom import make_phantom  # noqa: E402
from medlsam_training.volumes.volume import Volume  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
MIN_VOXELS = 200  # organs smaller than this in a volume are not evaluated there


HN_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct_hn_openkbp"
HN_TARGET_ORGANS = ("brainstem", "spinal_cord", "parotid_right", "parotid_left", "mandible")
#: MedLSAM paper, MedLAM, StructSeg head and neck, 5 templates: box IoU % (parotids: both sides)
PAPER_IOU = {"brainstem": 70.3, "spinal_cord": 57.7, "parotid_right": 63.0, "parotid_left": 63.0, "mandible": 81.0}


def hn_split(root: Path, split: str) -> list[str]:
    import json

    cases = json.loads((root / "manifest.json").read_text())["cases"]
    names = [c["patient"] for c in cases if c["split"] == split and c["recommended"]]
    return sorted(names, key=lambda n: int(n.split("_")[1]))


def hn_protocol(root: Path, methods: list[str], device, k: int, max_queries: int | None, cache: dict, weights=None,
                candidates: int = 1):
    """{(method, organ): [(iou, wd)]}, {method: [s / query]} for K templates per organ."""
    templates, queries = hn_templates_and_queries(root, k, max_queries, cache)
    return run_queries(queries, templates, methods, device, weights, candidates)


def hn_templates_and_queries(root: Path, k: int, max_queries: int | None, cache: dict, n_slabs: int = 0):
    """Templates (first K train-pats holding each organ) and validation queries [(name, image, label, names)]."""
    by_name = {c.name: c for c in find_cases(root, require_labels=True)}
    names = {v: n for v, n in next(iter(by_name.values())).label_names.items()}

    def load(name):
        if name not in cache:
            cache[name] = by_name[name].load()
        return cache[name]

    chosen: dict[str, list] = defaultdict(list)  # template patient -> extreme points
    for value, organ in names.items():
        picked = 0
        for name in hn_split(root, "train-pats"):
            if picked == k:
                break
            img, lab = load(name)
            if np.count_nonzero(lab.array == value) >= MIN_VOXELS:
                chosen[name].append(extreme_points_from_mask(organ, value, img, lab, n_slabs=n_slabs))
                picked += 1
    templates = [with_masks(Template(load(n)[0], eps), load(n)[1]) for n, eps in chosen.items()]
    queries = hn_split(root, "validation-pats")[:max_queries]
    return templates, [(q, *load(q), names) for q in queries]


def with_masks(template: Template, label: Volume) -> Template:
    """The template's targets' masks from its label map (what label fusion warps into the queries)."""
    template.masks = {ep.target: label.array == ep.mask_label for ep in template.targets}
    return template


def make_localizers(methods, device, weights=None, candidates: int = 1) -> dict:
    """{name: localizer} for the methods (names from training/options.py); one MedLAM serves both MedLAM rows."""
    medlam = (MedLAMLocalizer(weights, device=device, candidates=candidates)
              if any(LocalizerName(m).takes_device for m in methods) else None)
    out = {"medlam": medlam}
    for m in methods:
        if m == LocalizerName.MEDLAM_REG:
            out[m] = RefinedRegistrationLocalizer(medlam, RegistrationLocalizer())
        elif m != LocalizerName.MEDLAM:
            out[m] = make_localizer(m)
    return out


def run_queries(cases, templates, methods, device, weights=None, candidates: int = 1) -> tuple[dict, dict, dict]:
    """(box scores, seconds per query, Dice of the fused masks) per (method, organ) / method / (method, organ)."""
    scores: dict = defaultdict(list)
    seconds: dict = defaultdict(list)
    dice: dict = defaultdict(list)  # (method, organ) -> Dice of the localizer's fused mask, where it gives one
    localizers = make_localizers(methods, device, weights, candidates)
    medlam = localizers["medlam"]
    if medlam is not None:
        medlam.prepare_templates(templates)  # once per template set, not part of a query's time
    for qname, qimg, qlab, names in cases:
        organs = organ_values(qlab, names)
        for method in methods:
            t0 = time.perf_counter()
            try:
                results = localizers[method].localize(qimg, templates)
            except Exception as exc:  # a failed query is a row of the table, not the end of the benchmark
                print(f"  {qname} {method}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            seconds[method].append(time.perf_counter() - t0)
            for r in results:
                if r.target not in organs:
                    continue
                truth = Box3D.from_mask(qlab.array == organs[r.target])
                gt = qlab.array == organs[r.target]
                if r.box is None:  # reported "not found" while the organ is there: a miss
                    scores[(method, r.target)].append((0.0, float("nan")))
                    dice[(method, r.target)].append(0.0)
                    continue
                scores[(method, r.target)].append((box_iou(r.box, truth),
                                                   box_face_distance_mm(r.box, truth, qimg.spacing)))
                if r.mask is not None:  # label fusion's own mask, what the default pipeline writes
                    dice[(method, r.target)].append(2 * float((r.mask & gt).sum()) / (r.mask.sum() + gt.sum()))
            print(f"  {qname} {method}: {seconds[method][-1]:.1f} s, {len(results)} targets", file=sys.stderr)
    return scores, seconds, dice


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


def leave_one_out(cases, methods, device) -> tuple[dict, dict, dict]:
    """{(method, organ): [(iou, wd_mm)]}, {method: [seconds per query]} and {(method, organ): [fused-mask Dice]}."""
    scores: dict = defaultdict(list)
    seconds: dict = defaultdict(list)
    dice: dict = defaultdict(list)
    organs = [organ_values(lab, names) for _, _, lab, names in cases]
    points = [{o: extreme_points_from_mask(o, v, img, lab) for o, v in org.items()}
              for (_, img, lab, _), org in zip(cases, organs)]
    localizers = make_localizers(methods, device)
    medlam = localizers["medlam"]
    for qi, (qname, qimg, qlab, _) in enumerate(cases):
        templates = []
        for ti, (_, timg, tlab, _) in enumerate(cases):
            shared = [points[ti][o] for o in points[ti] if o in organs[qi]]
            if ti != qi and shared:
                templates.append(with_masks(Template(timg, shared), tlab))
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
                gt = qlab.array == organs[qi][r.target]
                truth = Box3D.from_mask(gt)
                scores[(method, r.target)].append(
                    (box_iou(r.box, truth), box_face_distance_mm(r.box, truth, qimg.spacing))
                    if r.box is not None else (0.0, float("nan")))
                if r.mask is not None or r.box is None:
                    dice[(method, r.target)].append(0.0 if r.box is None else
                                                    2 * float((r.mask & gt).sum()) / (r.mask.sum() + gt.sum()))
            print(f"  {qname} {method}: {seconds[method][-1]:.1f} s, {len(results)} targets", file=sys.stderr)
    return scores, seconds, dice


def table(title: str, scores, seconds, methods, paper: dict[str, float] | None = None) -> str:
    head = [f"{m} IoU % / WD mm (n)" for m in methods] + (["paper MedLAM IoU %"] if paper else [])
    lines = [f"### {title}", "", "| organ | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    organs = sorted({o for (_, o) in scores})
    for organ in organs:
        cells = []
        for m in methods:
            vals = scores.get((m, organ), [])
            if not vals:
                cells.append("-")
                continue
            iou, wd = 100 * np.mean([v[0] for v in vals]), np.nanmean([v[1] for v in vals])
            cells.append(f"{iou:.1f} / {wd:.1f} ({len(vals)})")
        if paper:
            cells.append(f"{paper[organ]:.1f}" if organ in paper else "-")
        lines.append(f"| {organ} | " + " | ".join(cells) + " |")
    means = []
    for m in methods:
        vals = [v for (mm, _), vs in scores.items() if mm == m for v in vs]
        means.append(f"**{100 * np.mean([v[0] for v in vals]):.1f} / {np.nanmean([v[1] for v in vals]):.1f}**"
                     if vals else "-")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    if paper:
        target = []
        for m in methods:
            vals = [v for (mm, o), vs in scores.items() if mm == m and o in paper for v in vs]
            per = [np.mean([v[0] for v in scores[(m, o)]]) for o in paper if scores.get((m, o))]
            target.append(f"**{100 * np.mean([v[0] for v in vals]):.1f} / {np.nanmean([v[1] for v in vals]):.1f}**"
                          f" (lowest organ {100 * min(per):.1f})" if vals else "-")
        lines.append("| **mean of " + ", ".join(paper) + "** | " + " | ".join(target) + " |")
    per_query = [f"{np.mean(seconds[m]):.1f}" if seconds.get(m) else "-" for m in methods]
    lines.append("| s / query | " + " | ".join(per_query) + " |")
    if paper:  # keep the column count of the rows above
        lines = [ln if not ln.startswith("|") or ln.count("|") == len(head) + 2 else ln + " - |" for ln in lines]
    return "\n".join(lines)


def dice_table(title: str, dice: dict, methods, core=("brainstem", "parotid_right", "parotid_left", "mandible")
               ) -> str:
    """Dice of the localizers' fused masks (label fusion: what the default pipeline writes), contoured organs only."""
    rows = [m for m in methods if any(mm == m for mm, _ in dice)]
    if not rows:
        return ""
    lines = [f"### {title}", "", "| organ | " + " | ".join(f"{m} mask Dice (n)" for m in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for organ in sorted({o for _, o in dice}):
        lines.append(f"| {organ} | " + " | ".join(
            f"{np.mean(dice[(m, organ)]):.3f} ({len(dice[(m, organ)])})" if dice.get((m, organ)) else "-"
            for m in rows) + " |")
    lines.append(f"| **mean of {', '.join(core)}** | " + " | ".join(
        f"**{np.mean([np.mean(dice[(m, o)]) for o in core if dice.get((m, o))]):.3f}**"
        if any(dice.get((m, o)) for o in core) else "-" for m in rows) + " |")
    return "\n".join(lines)


def absent_protocol(methods, device) -> str:
    """Torso templates against head-and-neck queries and head-and-neck templates against torso queries: every
    pair must come back "not found"."""
    torso = [(n, img, lab, names) for n, img, lab, names in load_labelled([DEFAULT_DATA])]
    torso_organs = ("liver", "spleen", "kidney_right", "kidney_left")
    tpl_torso = []
    for n, img, lab, names in torso:
        eps = [extreme_points_from_mask(o, v, img, lab) for o, v in organ_values(lab, names).items()
               if o in torso_organs]
        if eps and n == "ts_example":  # the one torso CT that holds all four whole
            tpl_torso.append(with_masks(Template(img, eps), lab))
    hn_tpl, hn_queries = hn_templates_and_queries(HN_DATA, 5, None, {})
    keep = ("brainstem", "parotid_right", "parotid_left")
    hn_tpl = [Template(t.volume, [ep for ep in t.targets if ep.target in keep],
                       {o: m for o, m in t.masks.items() if o in keep}) for t in hn_tpl]
    hn_tpl = [t for t in hn_tpl if t.targets]
    rows = ["### Absent organs: every pair must be \"not found\"", "",
            "| templates → queries | " + " | ".join(f"{m}: not found / pairs" for m in methods) + " |",
            "|---|" + "---|" * len(methods)]
    localizers = make_localizers(methods, device)
    for title, templates, queries in (
            ("torso (liver, spleen, kidneys; ts_example) → H&N validation-pats", tpl_torso,
             [(q, img) for q, img, _, _ in hn_queries]),
            ("H&N (brainstem, parotids; 5 train-pats each) → torso CT of ../shared/data/ct", hn_tpl,
             [(n, img) for n, img, _, _ in torso])):
        cells = []
        for m in methods:
            hits = total = 0
            for qname, img in queries:
                for r in localizers[m].localize(img, templates):
                    total += 1
                    hits += r.status == "not found"
                    if r.status != "not found":
                        print(f"  {m}: {r.target} in {qname}: {r.status} (similarity {r.similarity})", file=sys.stderr)
            cells.append(f"{hits} / {total}")
        rows.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, nargs="*", default=[DEFAULT_DATA], help="labelled CT dataset folder(s)")
    ap.add_argument("--phantoms", type=int, default=6, help="number of synthetic phantoms (0: none)")
    ap.add_argument("--methods", nargs="+", default=["medlam", "registration", "medlam+reg"],
                    choices=[m.value for m in LocalizerName])
    ap.add_argument("--device", default=None)
    ap.add_argument("--protocol", choices=["loo", "hn", "absent"], default="loo",
                    help="loo: leave-one-out over --data and phantoms; hn: OpenKBP templates/queries")
    ap.add_argument("--hn-data", type=Path, default=HN_DATA)
    ap.add_argument("--k", type=int, nargs="+", default=[5], help="templates per organ (protocol hn)")
    ap.add_argument("--max-queries", type=int, default=None, help="first N validation queries (protocol hn)")
    ap.add_argument("--weights", type=Path, default=None, help="MedLAM weights (default: the shipped ones)")
    ap.add_argument("--candidates", type=int, default=3, help="coarse MedLAM peaks refined at the fine scale")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"CPU {platform.machine()}, {torch.get_num_threads()} threads")
    print(f"device: {where}; MedLAM weights: {args.weights or 'shipped'}\n")
    if args.protocol == "hn":
        cache: dict = {}
        for k in args.k:
            scores, seconds, dice = hn_protocol(args.hn_data, args.methods, device, k, args.max_queries, cache,
                                                args.weights, args.candidates)
            n = len(seconds[args.methods[0]]) if seconds else 0
            print(table(f"OpenKBP head and neck, K = {k} templates per organ (train-pats), {n} validation-pats queries",
                        scores, seconds, args.methods, PAPER_IOU) + "\n", flush=True)
            print(dice_table(f"Label fusion masks, K = {k}, {n} validation-pats queries (contoured organs only)",
                             dice, args.methods) + "\n", flush=True)
        print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB")
        return
    if args.protocol == "absent":
        print(absent_protocol(args.methods, device))
        return
    sets = []
    if args.data:
        sets.append((f"labelled CT in {', '.join(str(d) for d in args.data)} (leave-one-out)",
                     load_labelled(args.data)))
    if args.phantoms:
        sets.append((f"{args.phantoms} synthetic phantoms (leave-one-out, {args.phantoms - 1} templates)",
                     phantom_set(args.phantoms)))
    for title, cases in sets:
        print(f"{title}: {len(cases)} volumes", file=sys.stderr)
        scores, seconds, dice = leave_one_out(cases, args.methods, device)
        print(table(title, scores, seconds, args.methods) + "\n")
        print(dice_table(f"{title}: label fusion masks", dice, args.methods, ("liver", "spleen", "kidney_right",
                                                                              "kidney_left")) + "\n")


if __name__ == "__main__":
    main()
