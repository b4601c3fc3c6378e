"""SAM propagation benchmark: encoder speed, re-prompt speed, accuracy per organ and prompt source, memory.

    python benchmarks/segmentation.py                       # shared labelled CT, LiteMedSAM, this machine
    python benchmarks/segmentation.py --data /path/to/BTCV  # any dataset folder(s)
    python benchmarks/segmentation.py --skip-accuracy       # speed only

Accuracy rows per organ (Dice, leave-one-out templates for the localizer rows):
    oracle-slice  one ground-truth box per slice (the paper's "manual prompt"), every labelled slice
    oracle-3d     one ground-truth 3D box, its xy on every slice (WPL)
    <loc>-<mode>  the localizer's box with each propagation mode (wpl, spl, mask); every slice the box
                  covers is segmented -- slices are never skipped by looking at the ground truth.
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
from medlsam_training.localization.localize import Template, make_localizer  # noqa: E402
from medlsam_training.metrics import binary_metrics  # noqa: E402
from medlsam_training.options import LocalizerName  # noqa: E402
from medlsam_training.segmentation.propagate import PropagationConfig, VolumeSegmenter, box_2d, clean_mask, for_target  # noqa: E402
from medlsam_training.segmentation.segmenters import load_segmenter  # noqa: E402
from medlsam_training.volumes.boxes import Box3D  # noqa: E402
from medlsam_training.volumes.io import align_label_to_image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localization import DEFAULT_DATA, HN_DATA, hn_templates_and_queries, load_labelled, organ_values  # noqa: E402


def encoder_speed(seg, n: int = 6) -> dict[str, float]:
    """Seconds per slice of the plain fp32 PyTorch encoder vs the tuned path, same run, same inputs."""
    x = torch.rand(n, 3, seg.input_size, seg.input_size)
    enc = seg.model.image_encoder
    out: dict[str, float] = {}
    with torch.inference_mode():
        enc(x[:1])  # warm-up
        t0 = time.perf_counter()
        for i in range(n):
            enc(x[i:i + 1])
        out["plain PyTorch, batch 1"] = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        seg.encode(x)
        out[f"Segmenter.encode, batch {n}"] = (time.perf_counter() - t0) / n
    return out


def reprompt_speed(vs: VolumeSegmenter, z: int, box: np.ndarray, n: int = 10) -> float:
    vs.segment_slice(z, box)
    t0 = time.perf_counter()
    for _ in range(n):
        vs.segment_slice(z, box)
    return (time.perf_counter() - t0) / n


def oracle_slice_prompts(truth: np.ndarray, margin: int) -> dict[int, np.ndarray]:
    prompts = {}
    for z in np.nonzero(truth.any(axis=(1, 2)))[0]:
        ys, xs = np.nonzero(truth[z])
        prompts[int(z)] = np.array([xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin])
    return prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, nargs="*", default=[DEFAULT_DATA])
    ap.add_argument("--segmenter", default="litemedsam")
    ap.add_argument("--localizer", default="medlam", choices=[m.value for m in LocalizerName])
    ap.add_argument("--device", default=None)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/medlsam-bench-cache"))
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--organs", default="liver,spleen,kidney_left,kidney_right,stomach,pancreas,aorta,gallbladder",
                    help="comma-separated organ names evaluated where present")
    ap.add_argument("--protocol", choices=["loo", "hn"], default="loo",
                    help="loo: leave-one-out over --data; hn: OpenKBP, K templates from train-pats, "
                         "validation-pats queries (end to end against oracle boxes)")
    ap.add_argument("--k", type=int, default=5, help="templates per organ (protocol hn)")
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--modes", default="wpl,spl,mask", help="propagation modes of the localizer rows")
    args = ap.parse_args()
    if args.protocol == "hn" and args.organs.startswith("liver,"):
        args.organs = "brainstem,spinal_cord,parotid_right,parotid_left,mandible"
    seg = load_segmenter(args.segmenter, device=args.device)
    where = torch.cuda.get_device_name() if seg.device.type == "cuda" else \
        f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device: {where}; segmenter: {seg.name}\n")

    speed = encoder_speed(seg)
    base = next(iter(speed.values()))
    print("| encoder path | s / slice | speed-up |\n|---|---|---|")
    for name, s in speed.items():
        print(f"| {name} | {s:.3f} | {base / s:.2f}x |")
    if seg.device.type == "cuda":
        x = torch.rand(32, 3, seg.input_size, seg.input_size)
        seg.encode(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        seg.encode(x)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"| GPU throughput, batch 32 | {dt / 32:.4f} | {32 / dt:.0f} slices/s |")
    if args.skip_accuracy:
        return

    fixed_templates = None
    if args.protocol == "hn":
        fixed_templates, cases = hn_templates_and_queries(HN_DATA, args.k, args.max_queries, {}, n_slabs=4)
    else:
        cases = load_labelled(args.data)
    dice: dict = defaultdict(list)
    reprompt, peak = [], []
    localizer = make_localizer(args.localizer, device=args.device)
    wanted = set(args.organs.split(","))
    organs = [{o: v for o, v in organ_values(lab, names).items() if o in wanted} for _, _, lab, names in cases]
    for qi, (qname, image, label, _) in enumerate(cases):
        vs = VolumeSegmenter(image, seg, cache_dir=args.cache)
        templates = fixed_templates if fixed_templates is not None else []
        for ti, (_, timg, tlab, _) in enumerate(cases if fixed_templates is None else []):
            shared = [extreme_points_from_mask(o, organs[ti][o], timg, tlab, n_slabs=4)
                      for o in organs[ti] if o in organs[qi]]
            if ti != qi and shared:
                templates.append(Template(timg, shared))
        located = {r.target: r for r in localizer.localize(image, templates) if r.box is not None} if templates else {}
        t0 = time.perf_counter()
        for organ, value in organs[qi].items():
            truth = label.array == value
            box = Box3D.from_mask(truth)
            # (1) oracle per-slice boxes, on the canonical (LPS) grid the segmenter slices
            canon_box = vs.to_canonical(box)
            truth_on_canon = align_label_to_image(image.with_array(truth.astype(np.uint8)),
                                                  vs.canonical).array.astype(bool)
            cfg = PropagationConfig()
            m = vs.segment_slices(oracle_slice_prompts(truth_on_canon, cfg.margin_px), cfg)
            m = vs.to_volume_grid(clean_mask(m, for_target(cfg, organ).largest_component))
            dice[(organ, "oracle-slice")].append(binary_metrics(m, truth, image.spacing_zyx)["dice"])
            # (2) one oracle 3D box on every slice
            m = vs.propagate([box], PropagationConfig(mode="wpl"))
            dice[(organ, "oracle-3d")].append(binary_metrics(m, truth, image.spacing_zyx)["dice"])
            # (3) the localizer's box with each mode
            if organ in located:
                r = located[organ]
                for mode in args.modes.split(","):
                    boxes = r.sub_boxes if mode == "spl" and r.sub_boxes else [r.box]
                    m = vs.propagate(boxes, for_target(PropagationConfig(mode=mode), organ))
                    score = binary_metrics(m, truth, image.spacing_zyx)["dice"]
                    dice[(organ, f"{args.localizer}-{mode}")].append(score)
            elif organ in {ep.target for t in templates for ep in t.targets}:  # not found while it is there: a miss
                for mode in args.modes.split(","):
                    dice[(organ, f"{args.localizer}-{mode}")].append(0.0)
            if not reprompt:
                z = (canon_box.lo[2] + canon_box.hi[2]) // 2
                reprompt.append(reprompt_speed(vs, z, box_2d(canon_box, 3)))
        peak.append((qname, image.array.size, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2))
        print(f"  {qname}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    rows = sorted({k[1] for k in dice}, key=lambda s: (not s.startswith("oracle"), s))
    print("\n| organ | " + " | ".join(rows) + " |\n|---|" + "---|" * len(rows))
    for organ in sorted({k[0] for k in dice}):
        print(f"| {organ} | " + " | ".join(f"{np.mean(dice[(organ, r)]):.3f} ({len(dice[(organ, r)])})"
                                             if dice.get((organ, r)) else "-" for r in rows) + " |")
    means = {r: np.mean([np.mean(v) for (o, rr), v in dice.items() if rr == r]) for r in rows}
    print("| **mean over organs** | " + " | ".join(f"**{means[r]:.3f}**" for r in rows) + " |")
    ratio = {r: means[r] / means["oracle-slice"] for r in rows}
    print("| ratio to oracle-slice | " + " | ".join(f"{ratio[r]:.2f}" for r in rows) + " |")
    print(f"\nre-prompt from cache: {reprompt[0]:.3f} s per slice")
    for name, voxels, gb in peak:
        print(f"peak resident memory after {name} ({voxels / 1e6:.1f} M voxels): {gb:.2f} GB")


if __name__ == "__main__":
    main()
