"""Component benchmark (issue 44, item 2): does the slice network do better when it sees the atlas's vote?

Arms, each trained on the same k recommended ``train-pats`` volumes (4000 steps, the shipped recipe) and scored on the
28 recommended ``validation-pats`` patients (never used to choose anything), Dice per organ on each volume's own grid:

- ``atlas``: the atlas's fused vote alone (>= VOTE), 5 train-pats templates per organ (section 1's run);
- ``mix``: the network trained on images only, mixed 0.5 / 0.5 with the atlas vote (the product's fixed mix);
- ``refine``: a network whose input holds, beside the image slices, the atlas's vote of every target on the centre
  slice (one channel per target), trained on (image, atlas vote) -> truth; its argmax alone;
- ``refine+mix``: that network's probability mixed 0.5 / 0.5 with the atlas vote.

The atlas votes of the training volumes come from ``medlsam segment`` with the same 5 templates on 24 train-pats
patients that are not templates (``--train-masks``); those of the validation patients from section 1's run
(``results/session/templates_k5/masks``).  Component benchmark: not the product's path.

    .venv/bin/medlsam segment -t results/session/templates_k5/templates/*.json -q <24 train-pats> \
        --out results/refine/train_masks                                    # the atlas on the training volumes
    .venv/bin/python benchmarks/atlas_refine.py --k 10 20
    .venv/bin/python benchmarks/atlas_refine.py --ceiling results/learning/every_scratch_k149_s0_8000.pt  # section 14
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from medlsam_training.cam.data import labelled_cases
from medlsam_training.coreset.probe import SliceCase, crop_at, load_slice_case, probe_loss, slice_inputs, uncrop_to
from medlsam_training.correction.votes import load_votes, votes_path
from medlsam_training.engine.augment import random_affine
from medlsam_training.engine.loop import LoopSpec, fit, seeded
from medlsam_training.learning.combination import SHARES, THRESHOLDS, Sample, dice_table
from medlsam_training.learning.slicenet import NetSpec, stack
from medlsam_training.learning.train import AUGMENT, _class_on_volume
from medlsam_training.localization.localize import VOTE
from medlsam_training.metrics import dice_score
from medlsam_training.segmentation.propagate import clean_mask
from medlsam_training.vf.train import lateral_swap
from medlsam_training.volumes.boxes import Box3D
from medlsam_training.volumes.resample import resample_to_reference
from medlsam_training.volumes.volume import orient

TARGETS = ["brainstem", "spinal_cord", "parotid_right", "parotid_left", "mandible"]
MEAN_OF = ["brainstem", "parotid_right", "parotid_left", "mandible"]
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ct_hn_openkbp"


def vote_volume(volume, votes, target: str) -> np.ndarray:
    """The atlas's fused vote of ``target`` on the volume's grid (0 where no template voted)."""
    out = np.zeros(volume.array.shape, np.float32)
    v = votes.get(target)
    if v is not None and not v.own and not v.network:
        out[v.box.slices] = v.vote()
    return out


def prior_crops(volume, votes, inputs) -> torch.Tensor:
    """(Z, T, CROP, CROP) float16: each target's vote on the crops' 4 mm LPS grid, cropped as the image."""
    chans = []
    for t in TARGETS:
        vote = volume.with_array(vote_volume(volume, votes, t))
        on_grid = resample_to_reference(orient(vote, "LPS"), inputs.grid, fill_value=0.0).array
        chans.append(np.stack([crop_at(s, c, 0.0) for s, c in zip(on_grid, inputs.centres)]))
    return torch.from_numpy(np.stack(chans, 1).astype(np.float16))


def load(case, masks: Path):
    """(slice case, prior crops, image, label, votes) of one patient."""
    image, label = case.load()
    votes = load_votes(votes_path(masks, f"{case.name}_0000"))
    sc = load_slice_case(case, TARGETS)
    return sc, prior_crops(image, votes, slice_inputs(image)), image, label, votes


def train(cases: list[SliceCase], priors: list[torch.Tensor] | None, steps: int, seed: int = 0):
    """The shipped recipe (learning.train.finetune's) with the atlas's votes as T more input channels."""
    spec = NetSpec()
    extra = len(TARGETS) if priors is not None else 0
    mirror = lateral_swap(TARGETS)
    chan = torch.from_numpy(np.asarray(mirror[1:]) - 1)  # prior channel order under a left-right flip

    def build():
        from monai.networks.nets import UNet
        return UNet(spatial_dims=2, in_channels=spec.in_channels + extra, out_channels=len(TARGETS) + 1,
                    channels=tuple(spec.channels), strides=(2,) * (len(spec.channels) - 1),
                    num_res_units=spec.res_units, norm="batch")

    usable = [i for i, c in enumerate(cases) if len(c.rows)]

    def step_loss(net, ctx):
        rng = ctx.rng
        picks = rng.choice(usable, 16)
        rows = [int(rng.integers(len(cases[i].labels))) if rng.random() < 0.25 else int(rng.choice(cases[i].rows))
                for i in picks]
        x = torch.cat([stack(cases[i].images, [r], spec.context) for i, r in zip(picks, rows)])
        y = torch.stack([cases[i].labels[r] for i, r in zip(picks, rows)])
        if priors is not None:
            p = torch.stack([priors[i][r] for i, r in zip(picks, rows)]).float()
            x = torch.cat([x, p], 1)
        flip = torch.from_numpy(rng.random(len(picks)) < 0.5)  # left-right, sides and their votes swapped
        x[flip] = torch.flip(x[flip], (3,))
        if priors is not None:
            x[flip, spec.in_channels:] = x[flip][:, spec.in_channels + chan]
        y[flip] = torch.from_numpy(np.asarray(mirror))[torch.flip(y[flip], (2,))]
        x, y = random_affine(x, y, rng, mirror=None, **AUGMENT)
        m = torch.from_numpy(np.stack([cases[i].contoured for i in picks]))
        return probe_loss(net(x), y, m, dice_on_absent=False)

    model = seeded(build, seed)
    res = fit(model, step_loss, LoopSpec(steps, 2e-3, 1e-4, "adamw", "cosine", seed, 0), None, kind="slicenet")
    return res.model.eval(), res.cpu_seconds


@torch.inference_mode()
def probabilities(model, image, prior: torch.Tensor | None) -> dict[str, np.ndarray]:
    """Each target's probability on the image's own grid (left-right flip averaged in, as the product)."""
    spec = NetSpec()
    inputs = slice_inputs(image)
    mirror = torch.from_numpy(np.asarray(lateral_swap(TARGETS)))
    chan = mirror[1:] - 1
    out = []
    for lo in range(0, len(inputs.images), 32):
        rows = np.arange(lo, min(lo + 32, len(inputs.images)))
        x = stack(inputs.images, rows, spec.context)
        if prior is not None:
            x = torch.cat([x, prior[rows].float()], 1)
        p = torch.softmax(model(x), 1)
        xf = torch.flip(x, (3,))
        if prior is not None:
            xf[:, spec.in_channels:] = xf[:, spec.in_channels + chan]
        q = torch.flip(torch.softmax(model(xf), 1), (3,))[:, mirror]
        out.append((p + q) / 2)
    crops = torch.cat(out).numpy()
    probs = uncrop_to(crops, inputs.centres, inputs.grid.array.shape[1:], 0.0)
    probs[:, 0][probs.sum(1) == 0] = 1.0
    probs = np.moveaxis(probs, 1, 0)
    return {t: _class_on_volume(probs, inputs.grid, image, c + 1) for c, t in enumerate(TARGETS)}


def scores(pred: dict[str, np.ndarray], case, label) -> dict[str, float]:
    out = {}
    for t, mask in pred.items():
        g = label.array == case.label_value(t)
        if g.sum() >= 200:
            out[t] = dice_score(clean_mask(mask, True, fill_holes=False), g)
    return out


def argmax_masks(probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    stacked = np.stack([1.0 - np.clip(sum(probs.values()), 0, 1)] + [probs[t] for t in TARGETS])
    best = stacked.argmax(0)
    return {t: best == i + 1 for i, t in enumerate(TARGETS)}


def ceiling(args) -> None:
    """Section 14's ceiling: a network trained on every train-pats volume (``learning_curve.py --pool every``) alone,
    the 5-template atlas alone, their fixed mix and the best single mix per organ (chosen on these patients: an upper
    bound, labelled so); and each registered template's own mask against the truth (one patient's contour against
    another's after registration)."""
    from medlsam_training.learning.train import SliceNetPredictor

    state = torch.load(args.checkpoint, weights_only=True)
    predictor = SliceNetPredictor(state, "cpu", every_class=True)
    val = labelled_cases(DATA, "validation-pats", recommended_only=True)
    grid = {t: [] for t in TARGETS}
    per: dict[str, dict[str, list[float]]] = {a: {t: [] for t in TARGETS} for a in ("network", "atlas", "mix", "one")}
    for case in val:
        image, label = case.load()
        votes = load_votes(votes_path(args.val_masks, f"{case.name}_0000"))
        probs = predictor.target_probabilities(image)
        written = predictor.predict(image)  # once per patient: every organ's mask of the network alone
        value = dict(zip(predictor.classes, predictor.values))
        for t in TARGETS:
            g = label.array == case.label_value(t)
            if g.sum() < 200:
                continue
            atlas = vote_volume(image, votes, t)
            net_mask = written == value[t]
            per["network"][t].append(dice_score(net_mask, g))
            per["atlas"][t].append(dice_score(clean_mask(atlas >= VOTE, True, fill_holes=False), g))
            mixed = 0.5 * probs[t] + 0.5 * atlas >= 0.5 * 0.5 + 0.5 * VOTE
            per["mix"][t].append(dice_score(clean_mask(mixed, True, fill_holes=False), g))
            # every mix on the crop that holds every voxel any of them can make (probability >= 0.05) and the truth
            crop = Box3D.from_mask((atlas > 0) | (probs[t] >= 0.05) | g).slices
            grid[t].append(dice_table(Sample(case.name, atlas[crop], probs[t][crop], g[crop], 0)))
            v = votes.get(t)
            if v is not None and not v.own and not v.network:
                for k in range(len(v.warped)):
                    one = np.zeros(g.shape, bool)
                    one[v.box.slices] = v.warped[k] >= 0.5
                    per["one"][t].append(dice_score(one, g))
    best = {}
    for t in TARGETS:
        table = np.mean(grid[t], axis=0)
        i, j = np.unravel_index(int(np.argmax(table)), table.shape)
        best[t] = (float(SHARES[i]), float(THRESHOLDS[j]), float(table[i, j]))
    rows = {a: {t: float(np.mean(v)) for t, v in d.items() if v} for a, d in per.items()}
    rows["best mix (chosen on these patients)"] = {t: b[2] for t, b in best.items()}
    for arm, ds in rows.items():
        mean4 = float(np.mean([ds[t] for t in MEAN_OF]))
        print(json.dumps({"arm": arm, "dice": {t: round(d, 3) for t, d in ds.items()}, "mean4": round(mean4, 3),
                          "n": {t: len(per.get(arm, per["mix"])[t]) for t in TARGETS}}), flush=True)
    print("best single mix per organ (network share, threshold):",
          {t: (b[0], b[1]) for t, b in best.items()})
    print(f"device: cpu ({platform.processor() or platform.machine()}), load {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ceiling", type=Path, default=None, dest="checkpoint",
                    help="score this network (trained on every train-pats volume) with the atlas instead (section 14)")
    ap.add_argument("--k", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--train-masks", type=Path, default=ROOT / "results" / "refine" / "train_masks")
    ap.add_argument("--val-masks", type=Path, default=ROOT / "results" / "session" / "templates_k5" / "masks")
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "refine" / "scores.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.checkpoint is not None:
        ceiling(args)
        return
    trained = {p.name.removesuffix("_0000.npz") for p in (args.train_masks / ".votes").glob("*.npz")}
    pool = [c for c in labelled_cases(DATA, "train-pats", recommended_only=True) if c.name in trained]
    pool.sort(key=lambda c: int(c.name.split("_")[1]))
    train_data = [load(c, args.train_masks) for c in pool]
    train_data = [d for d in train_data if all(d[0].contoured[TARGETS.index(t)] for t in MEAN_OF)]
    val = labelled_cases(DATA, "validation-pats", recommended_only=True)
    val_data = [load(c, args.val_masks) for c in val]
    print(f"{len(train_data)} training volumes with atlas votes (all four organs), {len(val_data)} validation")
    done = set()
    if args.results.is_file():
        done = {(r["k"], r["arm"]) for r in map(json.loads, args.results.read_text().splitlines())}
    for k in args.k:
        if k > len(train_data):
            print(f"k = {k}: only {len(train_data)} training volumes")
            continue
        data = train_data[:k]
        models = {}
        for name, with_prior in (("image", False), ("refine", True)):
            t0 = time.perf_counter()
            models[name] = train([d[0] for d in data], [d[1] for d in data] if with_prior else None, args.steps)
            print(f"k = {k}: {name} network trained in {time.perf_counter() - t0:.0f} s wall, "
                  f"{models[name][1]:.0f} CPU-s", flush=True)
        per: dict[str, dict[str, list[float]]] = {a: {t: [] for t in TARGETS}
                                                  for a in ("atlas", "image", "mix", "refine", "refine+mix")}
        for case, (_, prior, image, label, votes) in zip(val, val_data):
            atlas = {t: vote_volume(image, votes, t) for t in TARGETS}
            p_img = probabilities(models["image"][0], image, None)
            p_ref = probabilities(models["refine"][0], image, prior)
            arms = {"atlas": {t: atlas[t] >= VOTE for t in TARGETS},
                    "image": argmax_masks(p_img),
                    "mix": {t: 0.5 * p_img[t] + 0.5 * atlas[t] >= 0.5 * 0.5 + 0.5 * VOTE for t in TARGETS},
                    "refine": argmax_masks(p_ref),
                    "refine+mix": {t: 0.5 * p_ref[t] + 0.5 * atlas[t] >= 0.5 * 0.5 + 0.5 * VOTE for t in TARGETS}}
            for arm, masks in arms.items():
                for t, d in scores(masks, case, label).items():
                    per[arm][t].append(d)
        for arm, ds in per.items():
            row = {"k": k, "arm": arm, "steps": args.steps, "dice": {t: float(np.mean(v)) for t, v in ds.items()},
                   "n": {t: len(v) for t, v in ds.items()},
                   "mean4": float(np.mean([np.mean(ds[t]) for t in MEAN_OF])),
                   "cpu_s": models.get("refine" if "refine" in arm else "image", (None, None))[1],
                   "device": "cpu", "cpu": platform.processor() or platform.machine(), "load": os.getloadavg()[0]}
            print(json.dumps(row), flush=True)
            if (k, arm) not in done:
                with args.results.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
