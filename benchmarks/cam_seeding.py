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


def evaluate(model, targets, tagged, dice, seconds, segmenter, refiners: dict | None = None) -> None:
    from medlsam_training.cam.rvc import segment_ticked
    from medlsam_training.cam.seeding import body_mask
    from medlsam_training.metrics import dice_score

    for case, prep, tags, lab in tagged:
        t0 = time.time()
        results = seed_case(model, prep, tags, targets, segmenter=segmenter, truth=lab, case=case)
        seconds.append(time.time() - t0)
        body = body_mask(prep)
        for t, name in enumerate(targets):
            if ("umcam_gse", name) not in results:
                continue
            gt = lab == case.label_value(name)
            ticked = (tags[:, t] == 1)[:, None, None]
            results[("body_ticks", name)] = float(dice_score(body & ticked, gt))
            for row, net in (refiners or {}).get(name, {}).items():
                results[(row, name)] = float(dice_score(segment_ticked(net, prep, tags[:, t])[1], gt))
        for (variant, target), value in results.items():
            dice[variant][target].append(value)
        print(case.name, " ".join(f"{t}:{results[('umcam_gse', t)]:.2f}" for t in targets
                                  if ("umcam_gse", t) in results), f"({seconds[-1]:.1f} s)", flush=True)


def train_refiners(args, model, targets, model_path: Path) -> dict:
    """{target: {row: network}}: UM-CAM + GSE pseudo-masks of the first --refine-cases train-pats volumes (tags from
    their masks, the classifier that trained on them, as in the paper), then the refinement network trained on them
    with random-view consensus and plainly; cached beside the classifier."""
    from medlsam_training.cam.run import pseudo_label_dataset
    from medlsam_training.cam.rvc import load_net, train_rvc

    out: dict = {}
    for name in targets:
        nets = {row: model_path.with_name(f"{model_path.stem}_{name}_{row}_{args.refine_cases}.pt")
                for row in ("umcam_gse_rvc", "umcam_gse_plain")}
        if not all(p.is_file() for p in nets.values()):
            t0, cpu0 = time.time(), time.process_time()
            ds = pseudo_label_dataset(model, targets, name, args.data, split="train-pats", labels=args.labels,
                                      max_cases=args.refine_cases)
            print(f"pseudo-masks of {ds.volumes} train-pats volumes ({len(ds.images)} slices): Dice with their masks "
                  f"{np.mean(ds.pseudo_dice):.3f} ({time.time() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} "
                  "CPU-s)", flush=True)
            for row, path in nets.items():
                t0, cpu0 = time.time(), time.process_time()
                train_rvc(ds.images, ds.masks, path, steps=args.refine_steps, rvc=row.endswith("rvc"),
                          progress=_progress(t0))
                print(f"{row}: trained in {time.time() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} CPU-s",
                      flush=True)
        ceiling = model_path.with_name(f"{model_path.stem}_{name}_supervised_{args.refine_cases}.pt")
        if not ceiling.is_file():  # the same network on the true masks: what the tags-only rows could approach
            from medlsam_training.cam.rvc import training_slices

            rng = np.random.default_rng(0)
            cases = labelled_cases(args.data, "train-pats", labels=args.labels)[:args.refine_cases]
            parts = [training_slices(prep, lab == case.label_value(name), tags[:, t], rng)
                     for t in [targets.index(name)] for case, prep, tags, lab in load_tagged(cases, targets)
                     if np.any(tags[:, t] == 1)]
            t0, cpu0 = time.time(), time.process_time()
            train_rvc(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), ceiling,
                      steps=args.refine_steps, rvc=False, progress=_progress(t0))
            print(f"supervised_ceiling: trained in {time.time() - t0:.0f} s wall, "
                  f"{time.process_time() - cpu0:.0f} CPU-s", flush=True)
        out[name] = {row: load_net(p) for row, p in nets.items()} | {"supervised_ceiling": load_net(ceiling)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=("hn", "loo", "organs"), default="hn")
    ap.add_argument("--k", type=int, default=5, help="organs: templates per organ (the default localizer's setting)")
    ap.add_argument("--data", default="../shared/data/ct_hn_openkbp")
    ap.add_argument("--targets", default=None, help=f"default: ptv70 with --labels ptvTr, else {HN_TARGETS}")
    ap.add_argument("--labels", default=None, help="a label folder beside labelsTr/, e.g. ptvTr (target volumes)")
    ap.add_argument("--model", default="results/cam/hn_classifier.pt", help="hn: trained here when missing")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--pool", choices=("mean", "lse"), default="mean", help="classifier's pooling (when trained)")
    ap.add_argument("--near", type=float, default=0.0,
                    help="share of negatives from absent slices near the target's slices (when trained)")
    ap.add_argument("--slices-per-epoch", type=int, default=6000)
    ap.add_argument("--max-cases", type=int, default=0, help="cases to report on (0: all)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--refine-cases", type=int, default=0,
                    help="hn: pseudo-label this many train-pats volumes and train the refinement network on them "
                         "(with random-view consensus and plain), then segment the ticked slices with it")
    ap.add_argument("--refine-steps", type=int, default=1500)
    ap.add_argument("--litemedsam", action="store_true", help="also UM-CAM + GSE -> LiteMedSAM and oracle boxes")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.protocol == "organs":
        return organs_protocol(args)
    targets = (args.targets or ("ptv70" if args.labels == "ptvTr" else HN_TARGETS)).split(",")
    refined = ["umcam_gse_rvc", "umcam_gse_plain", "supervised_ceiling"] if args.refine_cases else []
    variants = ["body_ticks"] + list(VARIANTS) + refined \
        + (["umcam_gse_litemedsam", "oracle_box_litemedsam"] if args.litemedsam else [])
    dice = {v: {t: [] for t in targets} for v in variants}
    seconds: list[float] = []
    segmenter = None
    if args.litemedsam:
        from medlsam_training.segmentation.segmenters import load_segmenter

        segmenter = load_segmenter("litemedsam")
    t0 = time.time()
    if args.protocol == "hn":
        model_path = Path(args.model)
        if not model_path.is_file():
            train = load_tagged(labelled_cases(args.data, "train-pats", labels=args.labels), targets)
            print(f"training on {len(train)} train-pats cases", flush=True)
            model_path.parent.mkdir(parents=True, exist_ok=True)
            cpu0 = time.process_time()
            train_classifier([(p, t) for _, p, t, _ in train], targets, model_path, epochs=args.epochs,
                             slices_per_epoch=args.slices_per_epoch, pool=args.pool, near=args.near,
                             progress=_progress(t0))
            print(f"trained in {time.time() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} CPU-s", flush=True)
            del train
        model, learned, _ = load_classifier(model_path)
        assert learned == targets, f"{model_path} learned {learned}"
        refiners = train_refiners(args, model, targets, model_path) if args.refine_cases else None
        cases = labelled_cases(args.data, "validation-pats", recommended_only=True, labels=args.labels)
        cases = cases[:args.max_cases] if args.max_cases else cases
        evaluate(model, targets, load_tagged(cases, targets), dice, seconds, segmenter, refiners)
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


ORGAN_ROWS = (
    ("warped", "localizer: warped template masks (the default pipeline's mask)"),
    ("warped_ticks", "localizer: warped masks, ticked slices only"),
    ("warped_sam", "localizer: warped masks -> LiteMedSAM per ticked slice"),
    ("box_sam", "localizer: box -> LiteMedSAM per ticked slice"),
    ("prior", "localizer: box -> in-box prior (ellipsoid / bone threshold), ticked slices"),
    ("prior_sam", "localizer: box -> in-box prior -> LiteMedSAM per ticked slice"),
    ("true_prior", "true 3D box -> in-box prior, ticked slices"),
    ("true_prior_sam", "true 3D box -> in-box prior -> LiteMedSAM"),
    ("true_box_sam", "true 3D box -> LiteMedSAM per ticked slice"),
    ("oracle", "reference: true per-slice box -> LiteMedSAM"),
)
ORGANS = ("brainstem", "parotid_right", "parotid_left", "mandible")


def organs_protocol(args) -> None:
    """Organ seeding from a box: the default localizer (atlas registration, --k templates per organ from train-pats)
    on every recommended validation-pats patient; ticks are the organ's true slices (what the annotator ticks)."""
    from localization import HN_DATA, hn_templates_and_queries

    from medlsam_training.cam.organ import Prior, box_prior, prior_kind, seed_organ
    from medlsam_training.cam.seeding import sam_from_mask
    from medlsam_training.localization.localize import AtlasLocalizer
    from medlsam_training.metrics import dice_score
    from medlsam_training.segmentation.propagate import VolumeSegmenter
    from medlsam_training.segmentation.segmenters import load_segmenter
    from medlsam_training.volumes.volume import orient

    data = Path(args.data) if args.data != "../shared/data/ct_hn_openkbp" else HN_DATA
    templates, queries = hn_templates_and_queries(data, args.k, args.max_cases or None, {})
    segmenter = load_segmenter("litemedsam")
    localizer = AtlasLocalizer()
    dice = {r: {o: [] for o in ORGANS} for r, _ in ORGAN_ROWS}
    seconds = []
    for qname, qimg, qlab, names in queries:
        found = localizer.localize(qimg, templates)
        canon = lambda a, q=qimg: orient(q.with_array(a.astype(np.uint8)), "LPS").array.astype(bool)  # noqa: E731
        vs = VolumeSegmenter(qimg, segmenter)
        image = vs.canonical.array
        line = []
        for r in found:
            value = {n: v for v, n in names.items()}.get(r.target)
            if r.target not in ORGANS or value is None or np.count_nonzero(qlab.array == value) < 200:
                continue
            t0 = time.time()
            gt = canon(qlab.array == value)
            ticks = np.where(gt.reshape(len(gt), -1).any(1), 1, 0)
            tick = ticks.astype(bool)[:, None, None]
            true_box = np.zeros(gt.shape, bool)
            (z0, y0, x0), (z1, y1, x1) = np.argwhere(gt).min(0), np.argwhere(gt).max(0) + 1
            true_box[z0:z1, y0:y1, x0:x1] = True
            bone = Prior.BONE if prior_kind(r.target, None) == Prior.BONE else Prior.ELLIPSOID
            masks = {}
            if r.box is not None:
                box = np.zeros(qimg.array.shape, bool)
                box[r.box.slices] = True
                box = canon(box)
                warped = canon(r.mask) if r.mask is not None else np.zeros(gt.shape, bool)
                prior = box_prior(image, box, bone)
                masks.update(warped=warped, warped_ticks=warped & tick,
                             warped_sam=seed_organ(vs, warped, ticks) if warped.any() else warped,
                             box_sam=seed_organ(vs, box, ticks), prior=prior & tick,
                             prior_sam=seed_organ(vs, prior, ticks))
            true_prior = box_prior(image, true_box, bone)
            masks.update(true_prior=true_prior & tick, true_prior_sam=seed_organ(vs, true_prior, ticks),
                         true_box_sam=seed_organ(vs, true_box, ticks))
            masks["oracle"] = sam_from_mask(vs, gt, margin=0)
            for row, _ in ORGAN_ROWS:
                dice[row][r.target].append(float(dice_score(masks[row], gt)) if row in masks else 0.0)
            seconds.append(time.time() - t0)
            line.append(f"{r.target} {dice['warped_sam'][r.target][-1]:.2f}/{dice['oracle'][r.target][-1]:.2f}")
        print(qname, " ".join(line), flush=True)
    print(f"\nOrgan seeding from a box: {len(queries)} validation-pats queries, atlas localizer with {args.k} "
          f"train-pats templates per organ; device CPU, {torch.get_num_threads()} threads; "
          f"{np.mean(seconds):.1f} s per organ for all rows (localization not included)\n")
    print("| seeding | " + " | ".join(ORGANS) + " | mean |")
    print("|---" * (len(ORGANS) + 2) + "|")
    for row, label in ORGAN_ROWS:
        per = [np.mean(dice[row][o]) if dice[row][o] else float("nan") for o in ORGANS]
        print(f"| {label} | " + " | ".join(f"{d:.3f}" for d in per) + f" | {np.nanmean(per):.3f} |")
    ref = [np.mean(dice["oracle"][o]) for o in ORGANS]
    for row, _ in ORGAN_ROWS[:6]:
        ratio = [np.mean(dice[row][o]) / max(r, 1e-6) for o, r in zip(ORGANS, ref)]
        print(f"ratio to the reference, {row}: " + " ".join(f"{o} {x:.2f}" for o, x in zip(ORGANS, ratio)))


if __name__ == "__main__":
    main()
