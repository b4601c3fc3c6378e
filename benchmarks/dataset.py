"""A whole dataset finished from an empty folder: the slices a simulated annotator draws, volume after volume.

A project folder starts empty: the volumes of ``--data`` (any nnU-Net-layout folder with its ``dataset.json``; on
OpenKBP the recommended patients of ``--split``, default ``validation-pats``), no mask, no template, no network.

- **Order.** The tool's own: ``medlsam suggest`` (k-center greedy on MedLAM embeddings, ``coreset.run.suggest``) ranks
  every volume of the empty folder once; its first pick is the first volume, and the volumes are taken in its order.
- **The first volume** is marked template and the annotator clicks six extreme points per organ, taken from the
  manual contour (``extreme_points_from_mask``): 6 clicks an organ.  The run segments it from its own points (the
  box-only path: LiteMedSAM from the box, the CT threshold for bones).  An organ the first volume lacks (not
  contoured there) is clicked on the first volume that has it: the run has nothing else to find it with
  (``--points-first N``: every organ is clicked on each of the first N volumes, default 1).  A
  contoured organ the run reports "not found" (the atlas's templates disagree, or match too little) is clicked
  there too and the volume run again, as the run's message asks (``--not-found click``, the default; ``draw``: the
  robot draws it from nothing).
- **Every volume**: the annotator's run (``run_project``: the templates, every reviewed volume as the pool, the
  project's network when it has one, combined) segments it; then the correction robot, per organ: the axial slice
  with the largest contour error (``metrics.slice_contour_error`` at 4 mm) is redrawn from the manual contour, the
  slice is recorded as corrected and the product's update runs (``correct_in_project``: what *Update the rest* and
  ``medlsam correct --project`` run, with the votes the run stored), until surface Dice >= 0.90 at 4 mm (MONAI) or
  25 rounds (counted 25, "censored").  The volume is written **with the mask the robot ended with** (an organ the
  manual contours lack is erased: not drawn is not absent) and marked reviewed: the pool learns what a user accepted.
- **The network** is fine-tuned on every reviewed volume after each ``--update-every`` (5) reviewed volumes
  (``finetune_project``: what ``medlsam finetune --project`` and the Learn dock run, its default steps).  It trains in
  the background in a user's session, so the volumes reviewed meanwhile use the previous network: here it trains
  before the next volume's run and is taken into use ``--lag`` (1) volumes later.  Its wall time is recorded, not
  counted as a wait.
- **Counted per volume and organ**: slices drawn; contour drawn (mm) two ways: ``changed`` (the contour the redraw
  changes: the true contour farther than 4 mm from the mask's plus the mask's farther than 4 mm from the true one, on
  that slice: what a user fixing the slice draws or erases) and ``redrawn`` (the whole true contour of each slice
  drawn); clicks (6 per organ on the first volume, one *Update the rest* per slice drawn, one *Reviewed*); seconds
  waited for the run and for each update; the round at which the organ first reaches surface Dice 0.85.
- **The manual references**, on the same volumes, organs and bar: *scratch + fill* (3D Slicer's best manual route:
  every n-th slice drawn, both ends, fill between: the fewest slices of any n that reaches the bar; contour = the
  whole true contour of the slices drawn) and *brush alone* from an empty mask (the robot without updates: each round
  the worst slice drawn).

Resumable: a finished volume is a line of ``volumes.jsonl``; a rerun goes on from the next (a volume interrupted
half-way is done again from its run); ``--volumes K`` stops after the first K of the order (a chunk).
``--part table`` prints the tables again.

    .venv/bin/python benchmarks/dataset.py                      # ~90 min on 2 cores (28 patients, 5 organs)
    .venv/bin/python benchmarks/dataset.py --data DIR --n 10 --organs liver,spleen --out results/mine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from correction import crop_of  # noqa: E402  (the robots of section 9 crop the same way)

from medlsam_training.correction.in_project import correct_in_project  # noqa: E402
from medlsam_training.correction.update import fill_between, load_itk_filters  # noqa: E402
from medlsam_training.learning.project_loop import checkpoint_path, finetune_project  # noqa: E402
from medlsam_training.localization.extreme_points import extreme_points_from_mask  # noqa: E402
from medlsam_training.localization.localize import AtlasLocalizer  # noqa: E402
from medlsam_training.metrics import added_path_per_slice, binary_metrics, slice_contour_error, surface_dice  # noqa: E402
from medlsam_training.project.folder import Project  # noqa: E402
from medlsam_training.project.run import build_templates, project_network, run_project  # noqa: E402
from medlsam_training.segmentation.propagate import PropagationConfig  # noqa: E402
from medlsam_training.segmentation.segmenters import load_segmenter  # noqa: E402
from medlsam_training.volumes.atomic import atomic_path, write_json_atomic  # noqa: E402
from medlsam_training.volumes.io import read_label, read_volume, write_mask  # noqa: E402

HN_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct_hn_openkbp"
HN_ORGANS = "brainstem,spinal_cord,parotid_right,parotid_left,mandible"
TOLERANCE_MM, BAR, EARLY, ROUNDS = 4.0, 0.90, 0.85, 25
MIN_VOXELS = 200  # a contour smaller than this is a fragment: not an organ to finish (as benchmarks/session.py)
DONE_NAME = "volumes.jsonl"


# --- the data --------------------------------------------------------------------------------------------------

def dataset_cases(data: Path, split: str | None, n: int | None) -> list[str]:
    """Case names of an nnU-Net folder: those of ``split`` (recommended) when a manifest names splits, else every
    labelled case; the first ``n``."""
    manifest = data / "manifest.json"
    if split and manifest.is_file():
        cases = json.loads(manifest.read_text())["cases"]
        names = sorted((c["patient"] for c in cases if c["split"] == split and c.get("recommended", True)),
                       key=lambda s: (len(s), s))
    else:
        names = sorted(p.name[: -len(".nii.gz")] for p in (data / "labelsTr").glob("*.nii.gz"))
    if not names:
        raise SystemExit(f"{data}: no labelled case found (labelsTr/*.nii.gz{', split ' + split if split else ''})")
    return names[:n] if n else names


def organ_values(data: Path, organs: list[str]) -> dict[str, int]:
    labels = json.loads((data / "dataset.json").read_text())["labels"]
    missing = [o for o in organs if o not in labels]
    if missing:
        raise SystemExit(f"{data / 'dataset.json'}: no label named {', '.join(missing)} (it names "
                         f"{', '.join(k for k in labels if k != 'background')})")
    return {o: int(labels[o]) for o in organs}


def image_path(data: Path, case: str) -> Path:
    return data / "imagesTr" / f"{case}_0000.nii.gz"


def truth_of(data: Path, case: str, image, organs: dict[str, int]) -> dict[str, np.ndarray]:
    """The manual contour of each organ contoured on this case (a missing contour is not an absent organ)."""
    label = read_label(data / "labelsTr" / f"{case}.nii.gz", image).array
    return {o: label == v for o, v in organs.items() if np.count_nonzero(label == v) >= MIN_VOXELS}


# --- the project -----------------------------------------------------------------------------------------------

def empty_project(data: Path, cases: list[str], organs: dict[str, int], folder: Path) -> Project:
    """The folder a user opens: the volumes (linked, never copied) and the targets named; nothing else."""
    folder.mkdir(parents=True)
    for c in cases:
        (folder / f"{c}.nii.gz").symlink_to(image_path(data, c))
    project = Project.open(folder)
    for organ, value in organs.items():
        project.add_target(organ, value)
    return project


def tool_order(folder: Path, cases: list[str], out: Path) -> list[str]:
    """``medlsam suggest`` on the empty folder: every volume ranked by k-center on MedLAM embeddings."""
    from medlsam_training.coreset.run import suggest

    path = out / "order.json"
    if not path.is_file():
        t0 = time.perf_counter()
        ranked = [s.case for s in suggest(folder, len(cases) - 1)]  # it ranks fewer than all: the last is left
        ranked += [c for c in cases if c not in ranked]
        write_json_atomic({"order": ranked, "seconds": round(time.perf_counter() - t0, 1)}, path)
    return json.loads(path.read_text())["order"]


def click_template(project: Project, name: str, image, truth: dict[str, np.ndarray], organs: dict[str, int]
                   ) -> int:
    """The first volume: template, six points per contoured organ from its manual contour; the clicks made."""
    project.set_template(name)
    clicks = 0
    for organ, mask in truth.items():
        label = image.with_array(mask.astype(np.uint8) * organs[organ])
        for i, idx in enumerate(extreme_points_from_mask(organ, organs[organ], image, label).indices()):
            project.set_point(name, organ, i, idx, image.size, image.geometry)
            clicks += 1
    return clicks


def install_network(project: Project, out: Path, reviewed: int, lag: int) -> int | None:
    """The newest network trained at least ``lag`` volumes ago, copied in as the project's (None: none yet)."""
    ready = sorted((int(p.stem.split("_")[1]) for p in (out / "networks").glob("after_*.pt")), reverse=True)
    pick = next((r for r in ready if r + lag <= reviewed), None)
    state_path = out / "networks" / "installed.json"
    installed = json.loads(state_path.read_text())["after"] if state_path.is_file() else None
    if pick is not None and pick != installed:
        with atomic_path(checkpoint_path(project)) as tmp:
            shutil.copyfile(out / "networks" / f"after_{pick}.pt", tmp)
        write_json_atomic({"after": pick}, state_path)
    return pick


def train_network(project: Project, out: Path, reviewed: int, device: str, steps: int | None) -> dict:
    """What the Learn dock / ``finetune --project`` runs on every reviewed volume; kept aside until installed."""
    from medlsam_training.learning.train import LearnConfig

    path = out / "networks" / f"after_{reviewed}.pt"
    cpu, t0 = time.process_time(), time.perf_counter()
    cfg = LearnConfig() if steps is None else LearnConfig(steps=steps)
    fit = finetune_project(project, out=path, cfg=cfg, device=device,
                           say=lambda line: print("  " + line, flush=True))
    return {"after": reviewed, "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - cpu, 1), "volumes": len(fit.volumes),
            "scores": {k: round(float(v), 3) for k, v in (fit.scores or {}).items()}}


# --- the robots ------------------------------------------------------------------------------------------------

def nsd(mask: np.ndarray, truth: np.ndarray, spacing) -> float:
    if not mask.any():
        return 0.0
    sl = crop_of(mask, truth)
    return surface_dice(mask[sl], truth[sl], spacing, TOLERANCE_MM)


def true_contour_mm(truth: np.ndarray, spacing) -> np.ndarray:
    """Per axial slice, mm of the whole true contour (what drawing that slice from scratch draws)."""
    return added_path_per_slice(np.zeros_like(truth), truth, spacing, TOLERANCE_MM)[1]


def correct_organ(project: Project, name: str, organ: str, value: int, label: np.ndarray, image, truth: np.ndarray,
                  contour: np.ndarray, freeze: str = "slice") -> tuple[np.ndarray, dict]:
    """The robot on one organ through the product's update; returns the label map it ends with and its record."""
    spacing = image.spacing_zyx
    rec = {"start_nsd": nsd(label == value, truth, spacing), "start_dice": binary_metrics(
        label == value, truth, spacing, 2.0)["dice"], "slices": 0, "reached": False, "round_085": None,
        "changed_mm": 0.0, "redrawn_mm": 0.0, "updates_s": [], "methods": []}
    drawn: list[int] = []
    for rounds in range(ROUNDS + 1):
        mask = label == value
        score = nsd(mask, truth, spacing)
        if rec["round_085"] is None and score >= EARLY:
            rec["round_085"] = rounds
        if score >= BAR:
            rec["reached"] = True
            break
        if rounds == ROUNDS:
            break
        sl = crop_of(mask, truth)
        error = np.full(label.shape[0], -1.0)
        error[sl[0]] = slice_contour_error(mask[sl], truth[sl], spacing, TOLERANCE_MM)
        error[drawn] = -1.0
        z = int(np.argmax(error))
        if error[z] <= 0:
            break  # no slice is wrong beyond the tolerance: more drawing cannot help
        rec["changed_mm"] += float(error[z])
        rec["redrawn_mm"] += float(contour[z])
        # the brush of this target paints the true slice (over anything) and its eraser removes the excess
        label[z][truth[z]] = value
        label[z][(label[z] == value) & ~truth[z]] = 0
        drawn.append(z)
        project.add_corrected(name, organ, [z])
        t0 = time.perf_counter()
        if freeze == "slice":  # the product: a slice corrected for any target stays as it is
            label, result = correct_in_project(project, name, organ, label, image.array, spacing)
        else:
            label, result = update_own_slices(project, name, organ, value, label, image)
        rec["updates_s"].append(round(time.perf_counter() - t0, 3))
        rec["methods"].append(result.method)
    rec["slices"] = len(drawn) if rec["reached"] else ROUNDS
    rec["final_nsd"] = nsd(label == value, truth, spacing)
    return label, rec


def update_own_slices(project: Project, name: str, organ: str, value: int, label: np.ndarray, image):
    """A what-if, not the product (``--freeze target``): the update keeps this target's corrected slices only, so it
    may still move this target's own voxels on slices drawn for another target (never another target's voxels)."""
    from medlsam_training.correction import load_votes, votes_path
    from medlsam_training.correction.update import correct_label_map
    from medlsam_training.options import CorrectionUpdate

    slices = project.corrected_slices(name, organ)
    votes = load_votes(votes_path(project.folder / project.output_dir, name)).get(organ)
    return correct_label_map(label, value, slices, CorrectionUpdate.AUTO, votes, image.spacing_zyx, organ, slices,
                             image.array)


def brush_from_empty(truth: np.ndarray, spacing, contour: np.ndarray) -> list:
    """Brush alone from an empty mask: the worst slice drawn each round, nothing updated: [slices, reached, mm]."""
    state, mm, n = np.zeros_like(truth), 0.0, 0
    order = np.argsort(-contour, kind="stable")  # from empty, the worst slice is the one with the most contour
    for z in order:
        if nsd(state, truth, spacing) >= BAR:
            return [n, True, round(mm, 1)]
        if contour[z] <= 0:
            break
        state[z] = truth[z]
        mm += float(contour[z])
        n += 1
    return [n, bool(nsd(state, truth, spacing) >= BAR), round(mm, 1)]


def scratch_fill(truth: np.ndarray, spacing, contour: np.ndarray) -> list:
    """3D Slicer's route: every n-th slice of the organ (both ends) drawn, fill between; the fewest slices of any n
    that reaches the bar: [slices, reached, mm].  Fewer slices come with a larger n, so the search runs from the
    largest n down and stops at the first that reaches it."""
    zs = np.nonzero(truth.any(axis=(1, 2)))[0]
    z0, z1 = int(zs.min()), int(zs.max())
    sl = crop_of(truth)
    t = truth[sl]
    seen = set()
    for n in range(z1 - z0 + 1, 0, -1):
        drawn = sorted(set(range(z0, z1 + 1, n)) | {z1})
        if tuple(drawn) in seen:
            continue
        seen.add(tuple(drawn))
        local = [z - sl[0].start for z in drawn]
        given = np.zeros_like(t)
        given[local] = t[local]
        if nsd(fill_between(given, local), t, spacing) >= BAR:
            return [len(drawn), True, round(float(contour[drawn].sum()), 1)]
    return [z1 - z0 + 1, False, round(float(contour[z0:z1 + 1].sum()), 1)]


# --- the session -----------------------------------------------------------------------------------------------

def run(args) -> None:
    data, out = args.data, args.out
    organs = organ_values(data, args.organs)
    cases = dataset_cases(data, args.split, args.n)
    folder = out / "project"
    if not folder.is_dir():
        empty_project(data, cases, organs, folder)
    order = tool_order(folder, cases, out)
    done_path = out / DONE_NAME
    rows = [json.loads(line) for line in done_path.read_text().splitlines()] if done_path.is_file() else []
    done = {r["volume"] for r in rows}
    segmenter = load_segmenter("litemedsam", device=args.device)
    load_itk_filters()  # as the annotator does in the background when it opens (ITK's wrapping loads in ~10 s)
    print(f"{len(order)} volumes in the tool's order (k-center on MedLAM embeddings): {', '.join(order)}", flush=True)
    for i, name in enumerate(order):
        if name in done:
            continue
        if args.volumes is not None and i >= args.volumes:
            break  # a chunk: a rerun goes on from here
        project = Project.open(folder)
        reviewed = sum(v.status == "reviewed" for v in project.volumes)
        due = reviewed // args.update_every * args.update_every
        update = None
        if due and not (out / "networks" / f"after_{due}.pt").is_file():
            update = train_network(project, out, due, args.device, args.steps)  # before the next volume's run
            print(f"  network update after {due} reviewed: {update}", flush=True)
        network_after = install_network(project, out, reviewed, args.lag)
        image = read_volume(project.volume_path(name))
        truth = truth_of(data, name, image, organs)
        # six points for each contoured organ no earlier volume holds (all of them on the first volume): the run
        # has nothing else to find it with, and says so ("no template for ..."), so a user clicks it here
        held = {o for r in rows for o in r["organs"]} if i >= args.points_first else set()
        needed = {o: m for o, m in truth.items() if o not in held}
        clicks = click_template(project, name, image, needed, organs) if needed else 0
        project.clear_corrected(name)  # a volume interrupted half-way starts again from its run
        t0 = time.perf_counter()
        results = run_project(project, build_templates(project), [name], AtlasLocalizer(), segmenter,
                              existing="overwrite", config=PropagationConfig(mode=project.mode),
                              network=project_network(project))
        run_s = time.perf_counter() - t0
        result = results[0]
        if result.status != "done":
            raise SystemExit(f"{name}: the run {result.status}: {result.error}")
        sources = {t.target: t.source or t.status for t in result.targets}
        missed = {o: m for o, m in truth.items() if sources.get(o) == "not found"}
        if missed and args.not_found == "click":
            # the run says "not found" of a target the annotator sees: six points on it here, and the run again
            clicks += click_template(project, name, image, missed, organs)
            t0 = time.perf_counter()
            result = run_project(project, build_templates(project), [name], AtlasLocalizer(), segmenter,
                                 existing="overwrite", config=PropagationConfig(mode=project.mode),
                                 network=project_network(project))[0]
            run_s += time.perf_counter() - t0
            sources = {t.target: t.source or t.status for t in result.targets}
        label = read_label(project.mask_path(name), image, allow_empty=True).array.copy()
        row = {"volume": name, "index": i, "reviewed_before": reviewed, "network_after": network_after,
               "run_s": round(run_s, 1), "clicks": clicks, "clicked": sorted(needed) + sorted(missed) if
               args.not_found == "click" else sorted(needed), "organs": {}}
        if update is not None:
            row["network_update"] = update
        for organ, value in organs.items():
            if organ not in truth:
                label[label == value] = 0  # not contoured: the run's guess is not accepted as a reviewed contour
                continue
            contour = true_contour_mm(truth[organ], image.spacing_zyx)
            label, rec = correct_organ(project, name, organ, value, label, image, truth[organ], contour, args.freeze)
            rec["source"] = sources.get(organ)
            rec["scratch_fill"] = scratch_fill(truth[organ], image.spacing_zyx, contour)
            rec["brush"] = brush_from_empty(truth[organ], image.spacing_zyx, contour)
            rec["contour_mm"] = round(float(contour.sum()), 1)
            row["organs"][organ] = rec
            print(f"  {organ}: start NSD {rec['start_nsd']:.2f} ({rec['source']}), {rec['slices']} slices "
                  f"({'reached' if rec['reached'] else 'censored'}), scratch+fill {rec['scratch_fill'][0]}, "
                  f"brush {rec['brush'][0]}", flush=True)
        row["clicks"] += sum(len(r["updates_s"]) for r in row["organs"].values()) + 1  # updates, and Reviewed
        write_mask(label, image, project.mask_path(name))
        project.mark_reviewed(name)
        reviewed += 1
        rows.append(row)
        with done_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        tool = sum(r["slices"] for r in row["organs"].values())
        sf = sum(r["scratch_fill"][0] for r in row["organs"].values())
        print(f"{i + 1:2d} {name}: run {run_s:.0f} s, {tool} slices drawn (scratch+fill {sf}), "
              f"{reviewed} reviewed", flush=True)
    print_tables(rows, args)


# --- the tables ------------------------------------------------------------------------------------------------

def totals(rows: list[dict]) -> dict[str, float]:
    organs = [r for row in rows for r in row["organs"].values()]
    return {"tool": sum(r["slices"] for r in organs), "sf": sum(r["scratch_fill"][0] for r in organs),
            "brush": sum(r["brush"][0] for r in organs), "changed": sum(r["changed_mm"] for r in organs),
            "redrawn": sum(r["redrawn_mm"] for r in organs), "sf_mm": sum(r["scratch_fill"][2] for r in organs),
            "brush_mm": sum(r["brush"][2] for r in organs), "organs": len(organs),
            "censored": sum(not r["reached"] for r in organs)}


def share(rows: list[dict]) -> float:
    t = totals(rows)
    return t["tool"] / t["sf"] if t["sf"] else float("nan")


def print_tables(rows: list[dict], args) -> None:
    if not rows:
        print("no volume finished yet")
        return
    rows = sorted(rows, key=lambda r: r["index"])
    print("\n#### Volume by volume (the tool's order), slices drawn until surface Dice >= 0.90 at 4 mm, all organs\n")
    print("| # | volume | reviewed before | network (after) | run s | tool slices | scratch + fill | brush | "
          "contour changed / redrawn mm | scratch + fill mm | clicks | update s (median / max) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        t = totals([row])
        ups = [s for r in row["organs"].values() for s in r["updates_s"]]
        up = f"{np.median(ups):.2f} / {max(ups):.2f}" if ups else "-"
        print(f"| {row['index'] + 1} | {row['volume']} | {row['reviewed_before']} | {row['network_after'] or '-'} | "
              f"{row['run_s']:.0f} | {t['tool']} ({t['censored']} censored) | {t['sf']} | {t['brush']} | "
              f"{t['changed']:.0f} / {t['redrawn']:.0f} | {t['sf_mm']:.0f} | {row['clicks']} | {up} |")
    print("\n#### The curve: slices per volume, by five volumes done\n")
    print("| volumes | reviewed before | tool | scratch + fill | brush | share of scratch + fill's |")
    print("|---|---|---|---|---|---|")
    for lo in range(0, len(rows), 5):
        part = rows[lo:lo + 5]
        t = totals(part)
        print(f"| {lo + 1}-{lo + len(part)} | {part[0]['reviewed_before']}-{part[-1]['reviewed_before']} | "
              f"{t['tool'] / len(part):.1f} | {t['sf'] / len(part):.1f} | {t['brush'] / len(part):.1f} | "
              f"{share(part):.2f} |")
    print("\n#### Per organ (mean slices per volume; reached the bar / organs)\n")
    print("| organ | n | start NSD@4 | tool | scratch + fill | brush | first round at NSD 0.85 (median) | "
          "sources of the run |")
    print("|---|---|---|---|---|---|---|---|")
    for organ in args.organs:
        rs = [row["organs"][organ] for row in rows if organ in row["organs"]]
        if not rs:
            continue
        early = [r["round_085"] for r in rs if r["round_085"] is not None]
        src: dict[str, int] = {}
        for r in rs:
            src[str(r["source"])] = src.get(str(r["source"]), 0) + 1
        print(f"| {organ} | {len(rs)} | {np.mean([r['start_nsd'] for r in rs]):.2f} | "
              f"{np.mean([r['slices'] for r in rs]):.1f} ({sum(r['reached'] for r in rs)}/{len(rs)}) | "
              f"{np.mean([r['scratch_fill'][0] for r in rs]):.1f} | {np.mean([r['brush'][0] for r in rs]):.1f} | "
              f"{np.median(early) if early else '-'} | {src} |")
    updates = [row["network_update"] for row in rows if "network_update" in row]
    for u in updates:
        print(f"network update after {u['after']} reviewed: {u['wall_s']:.0f} s wall, {u['cpu_s']:.0f} CPU-s, "
              f"{u['volumes']} volumes, training Dice {u['scores']}")
    ups = [s for row in rows for r in row["organs"].values() for s in r["updates_s"]]
    runs = [row["run_s"] for row in rows]
    print(f"\nrun per volume: median {np.median(runs):.0f} s, max {max(runs):.0f} s; update: median "
          f"{np.median(ups) if ups else 0:.2f} s, max {max(ups) if ups else 0:.2f} s")
    t = totals(rows)
    first, last = rows[:5], rows[-10:]
    print(f"first 5 volumes: share of scratch + fill: {share(first):.2f}; last 10: {share(last):.2f} "
          f"(n = {len(rows)})")
    print(f"contour drawn: tool {t['changed']:.0f} mm changed ({t['redrawn']:.0f} mm as whole slices redrawn), "
          f"scratch + fill {t['sf_mm']:.0f} mm, brush {t['brush_mm']:.0f} mm: share of scratch + fill's contour "
          f"{t['changed'] / t['sf_mm']:.2f} (whole slices {t['redrawn'] / t['sf_mm']:.2f})")
    print(f"device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), load at the end "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{len(rows)} volumes, {t['organs']} organs: tool {t['tool']} slices, scratch + fill {t['sf']}, brush "
          f"{t['brush']}; share of scratch + fill: {share(rows):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("run", "table"), default="run")
    parser.add_argument("--data", type=Path, default=HN_DATA, help="an nnU-Net-layout folder with dataset.json")
    parser.add_argument("--split", default="validation-pats",
                        help="the manifest's split to take (when the folder has a manifest.json naming splits)")
    parser.add_argument("--n", type=int, default=None, help="the first N cases (default: all)")
    parser.add_argument("--organs", default=HN_ORGANS, help="the targets, as dataset.json names them")
    parser.add_argument("--update-every", type=int, default=5, help="the network is fine-tuned after every N "
                        "reviewed volumes")
    parser.add_argument("--lag", type=int, default=1, help="volumes reviewed while the network trains (they use "
                        "the previous one)")
    parser.add_argument("--volumes", type=int, default=None, help="stop after this many volumes of the order (a "
                        "chunk; a rerun goes on)")
    parser.add_argument("--points-first", type=int, default=1, help="the annotator clicks six points of every organ "
                        "on each of the first N volumes (1: the first only; later volumes only for organs not held)")
    parser.add_argument("--not-found", choices=("click", "draw"), default="click",
                        help="a contoured organ the run reports not found: the annotator clicks its six points there "
                        "and runs again (click), or draws it with the robot from nothing (draw)")
    parser.add_argument("--freeze", choices=("slice", "target"), default="slice",
                        help="what an update keeps: every slice corrected for any target (slice: the product), or, "
                        "as a what-if, only the updated target's own corrected slices (target)")
    parser.add_argument("--steps", type=int, default=None, help="the network's training steps (default: the "
                        "product's, what finetune --project trains)")
    parser.add_argument("--out", type=Path, default=Path("results/dataset"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.out, args.data = args.out.resolve(), args.data.resolve()
    args.organs = [o.strip() for o in args.organs.split(",") if o.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "run":
        from medlsam_training.threads import apply_thread_policy

        print(f"threads: {apply_thread_policy()} (the CLI's policy: the cores free now)", flush=True)
        run(args)
    else:
        path = args.out / DONE_NAME
        print_tables([json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else [], args)


if __name__ == "__main__":
    main()
