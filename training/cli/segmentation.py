"""Few-shot localization and segmentation: localize, segment, segment-box, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.table import Table

from ..errors import MedLSAMError
from ..options import POLICY_HELP, ExistingMaps, LabelPolicy, LocalizerName, PropagationMode, SegmenterName
from ..volumes.io import read_volume
from ._app import (
    _LOCALIZER_HELP,
    _MODE_HELP,
    _SCHEDULER_HELP,
    _WORKERS_HELP,
    _fail,
    _parse_device,
    _RichProgress,
    _segmenter,
    app,
    console,
    err_console,
    plural,
)


@app.command()
def localize(
    templates: list[Path] = typer.Option(..., "--templates", "-t", help="Extreme-points JSON file(s)."),
    queries: list[Path] = typer.Option(..., "--queries", "-q", help="Query volume(s) or dataset folder(s)."),
    out: Path = typer.Option(..., "--out", help="boxes JSON to write."),
    localizer: str = typer.Option(LocalizerName.ATLAS.value, help=_LOCALIZER_HELP),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: CUDA when present)."),
    workers: Optional[int] = typer.Option(None, "--workers", help=_WORKERS_HELP),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
) -> None:
    """Find every template target in every query volume; write boxes (voxels) and points (mm)."""
    from ..cluster import open_engine
    from ..localization.localize import load_templates, make_localizer
    from ..project.pipeline import localize_case, query_cases
    from ..volumes.atomic import write_json_atomic

    try:
        tpls = load_templates(templates)
        cases = query_cases(queries, exclude={t.volume.path for t in tpls if t.volume.path})
        with open_engine(workers, scheduler, localizer, device=device) as engine:
            if engine is None:
                loc = make_localizer(localizer, device=_parse_device(device))
                records = ((case, localize_case(loc, case, tpls)) for case in cases)
            else:
                console.print(f"on a Dask cluster of {plural(engine.workers, 'worker')}: one volume per task",
                              highlight=False)
                records = engine.localize(cases, tpls)
            done = dict((case.name, (case, record)) for case, record in records)
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    results, table = {}, Table(title=f"localization ({localizer})")
    for col in ("query", "target", "status", "box (voxels x0,y0,z0,x1,y1,z1)", "spread mm", "s"):
        table.add_column(col)
    failed = 0
    for case in cases:  # in the order given, however the tasks finished
        record = done[case.name][1]
        results[str(case.image)] = record
        if "error" in record:
            failed += 1
            table.add_row(case.name, "[red]failed[/]", "", record["error"][:80], "", "")
            continue
        for target, t in record.items():
            table.add_row(case.name, target, t["status"], ",".join(map(str, t["box"])) if t["box"] else "-",
                          f"{t['spread_mm']:.1f}", f"{t['seconds']:.1f}")
    write_json_atomic(results, out)
    console.print(table)
    console.print(f"wrote {out}")
    if failed:
        err_console.print(f"[bold red]error:[/] {failed} of {len(cases)} queries failed", soft_wrap=True,
                          highlight=False)
        raise typer.Exit(code=1)


@app.command()
def segment(
    templates: Optional[list[Path]] = typer.Option(None, "--templates", "-t", help="Extreme-points JSON file(s)."),
    queries: Optional[list[Path]] = typer.Option(None, "--queries", "-q", help="Query volume(s) or dataset folder(s)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder: one <case>.nii.gz label map per query."),
    project: Optional[Path] = typer.Option(None, "--project", help="A project folder (the annotator's): its templates "
                                           "and queries, masks into its masks/, statuses and locks kept; replaces "
                                           "-t, -q and --out."),
    localizer: Optional[str] = typer.Option(None, help=_LOCALIZER_HELP + " With --project: the project's."),
    mode: Optional[str] = typer.Option(None, help=_MODE_HELP + " With --project: the project's."),
    segmenter: Optional[str] = typer.Option(None, help=f"{SegmenterName.LITEMEDSAM} (embedded, default) or a "
                                            "SAM/MedSAM checkpoint path."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache folder (default: ~/.cache/medlsam-napari)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: CUDA when present)."),
    existing: str = typer.Option(ExistingMaps.SKIP.value, help="A query whose mask exists: skip it (resumable "
                                 "runs), or write this run's targets into it: " + "; ".join(
                                     f"{p} ({POLICY_HELP[p]})" for p in LabelPolicy) + ". Locked (reviewed) "
                                 "targets are never changed."),
    workers: Optional[int] = typer.Option(None, "--workers", help=_WORKERS_HELP),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
) -> None:
    """The MedLSAM pipeline: localize every target in every query, segment it slice by slice, write masks."""
    from ..localization.localize import load_templates, make_localizer
    from ..project.pipeline import OWN_MASK, OWN_POINTS, query_cases, run_queries
    from ..segmentation.embedding_cache import default_cache_dir
    from ..segmentation.label_merge import check_policy
    from ..segmentation.propagate import PropagationConfig

    try:
        check_policy(existing, rerun=True)  # options first: a typo must not cost a model load
        if project is not None:
            if templates or queries or out:
                raise ValueError("--project takes its templates, queries and output folder from the project; "
                                 "leave out -t, -q and --out (put extra template files in its templates/)")
            from ..project.folder import Project
            from ..project.run import build_templates, run_project

            proj = Project.open(project)
            for message in proj.messages:
                console.print(f"[yellow]{message}[/]")
            localizer, mode, segmenter = localizer or proj.localizer, mode or proj.mode, segmenter or proj.segmenter
        elif not (templates and queries and out):
            raise ValueError("give -t (extreme-points files), -q (queries) and --out, or --project FOLDER")
        localizer = localizer or LocalizerName.ATLAS
        mode, segmenter = mode or PropagationMode.ATLAS, segmenter or SegmenterName.LITEMEDSAM
        config = PropagationConfig(mode=mode)
        loc = make_localizer(localizer, device=_parse_device(device))
        network = None
        if project is not None:
            from ..project.run import project_network, untemplated_targets

            tpls = build_templates(proj)  # the clicked templates and the reviewed volumes (the pool)
            network = project_network(proj) if mode == PropagationMode.ATLAS else None
            missing = untemplated_targets(proj, tpls)
            if missing:
                learned = [t for t in missing if network is not None and t in network.targets]
                console.print(f"[yellow]no template for {', '.join(missing)}: not segmented (click its six points on "
                              "a template volume, or review a volume that has it)"
                              + (f"; the project's network learned {', '.join(learned)}: medlsam finetune --project "
                                 "pre-segments it" if learned else "") + "[/]", soft_wrap=True, highlight=False)
            clicked = len(proj.ready_templates())
            console.print(f"templates: {clicked} clicked, {len(tpls) - clicked} reviewed volume(s) in the pool; "
                          + (f"the project's network ({', '.join(network.targets)}) is combined with the atlas vote"
                             if network is not None else "no fine-tuned network (medlsam finetune --project)"),
                          soft_wrap=True, highlight=False)
            out = proj.folder / proj.output_dir
            reviewed = [q for q in proj.to_segment if proj.entry(q).status == "reviewed"]
            cases = [q for q in proj.to_segment if q not in reviewed]  # what the title counts is what runs
            if reviewed:
                console.print(f"{len(reviewed)} reviewed volume(s) left as they are: {', '.join(reviewed)}",
                              soft_wrap=True, highlight=False)
        else:
            tpls = load_templates(templates)
            cases = query_cases(queries, exclude={out})  # template volumes among them too: from their own points
        seg = _segmenter(segmenter, device)
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    table = Table(title=f"MedLSAM: {plural(len(cases), 'volume')}, {localizer} + {seg.name}, mode {mode}")
    for col in ("query", "status", "targets", "seconds", "output (in --out)"):
        table.add_column(col)
    results = []

    def add_row(r) -> None:
        results.append(r)
        left = len(cases) - len(results)
        what = r.error or ", ".join(f"{t.target}: {t.method.removeprefix('template: ')}"
                                    if t.method in (OWN_POINTS, OWN_MASK) else f"{t.target} {t.status}"
                                    for t in r.targets) or "nothing to do"
        # one line per volume (above the bar in a terminal): a run piped to a file is visibly alive
        console.print(f"{r.name}{' (template)' if r.template else ''}: {r.status} in {r.seconds:.1f} s ({what}); "
                      f"{left} volume{'s' if left != 1 else ''} left", soft_wrap=True, highlight=False)
        table.add_row(r.name + (" (template)" if r.template else ""), r.status,
                      ", ".join(t.target + ("" if t.status == "found" else f": {t.status}") for t in r.targets),
                      f"{r.seconds:.1f}", r.output.name if r.output else "error: below the table")

    from ..cluster import open_engine

    try:
        with open_engine(workers, scheduler, localizer, segmenter, device) as engine, \
                _RichProgress("segmenting") as bar:
            if engine is not None:
                console.print(f"on a Dask cluster of {plural(engine.workers, 'worker')}: one volume per task",
                              soft_wrap=True, highlight=False)
            if project is not None:  # reviewed volumes and locked targets are left alone, statuses saved
                run_project(proj, tpls, cases, loc, seg, bar, add_row, existing=existing, config=config,
                            cache_dir=cache, network=network, engine=engine)
            else:
                for r in run_queries(cases, tpls, loc, seg, out, config, cache or default_cache_dir(), existing,
                                     bar, engine=engine):
                    add_row(r)
    except MedLSAMError as exc:  # the cluster: an unreachable scheduler, both options
        _fail(exc)
    except KeyboardInterrupt:  # Ctrl-C: finished masks are on disk, the one in progress was never half-written
        done = sum(r.status != "failed" for r in results)
        err_console.print(f"interrupted: {done} of {len(cases)} done; rerun the same command to resume",
                          soft_wrap=True, highlight=False)
        raise typer.Exit(code=130) from None
    failed = sum(r.status == "failed" for r in results)
    console.print(table)
    console.print(f"masks in {out}", soft_wrap=True, highlight=False)
    skipped = [r.name for r in results if r.status == "skipped"]
    if skipped and existing == ExistingMaps.SKIP:
        one = len(skipped) == 1
        console.print(f"[yellow]{plural(len(skipped), 'volume')} already had a mask and {'was' if one else 'were'} "
                      f"skipped: --existing keep segments {'it' if one else 'them'} again (locked targets and "
                      "corrected slices are kept)[/]", soft_wrap=True, highlight=False)
    for r in results:  # whole, below the table: a path or a reason cut mid-word is no use
        if r.error:
            err_console.print(f"{r.name}: {r.error}", soft_wrap=True, highlight=False, markup=False)
    if failed:
        err_console.print(f"[bold red]error:[/] {failed} of {plural(len(cases), 'query', 'queries')} failed; see "
                          f"{out / 'medlsam_results.json'}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=1)


@app.command("segment-box")
def segment_box(
    image: Path = typer.Argument(..., help="Volume file or DICOM folder."),
    out: Path = typer.Option(..., "--out", help="Mask file to write (image geometry)."),
    box: Optional[str] = typer.Option(None, help="x0,y0,z0,x1,y1,z1 in voxel indices (inclusive)."),
    box_mm: Optional[str] = typer.Option(None, help="x0,y0,z0,x1,y1,z1 in LPS mm."),
    mode: str = typer.Option("mask", help="wpl, mask."),
    value: int = typer.Option(1, help="Label value written."),
    segmenter: str = typer.Option(SegmenterName.LITEMEDSAM.value, help="litemedsam or a SAM/MedSAM checkpoint path."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache folder."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda (default: CUDA when present)."),
) -> None:
    """Segment one volume from a 3D box you already have."""
    from ..project.pipeline import box_from_mm, parse_box
    from ..segmentation.embedding_cache import default_cache_dir
    from ..segmentation.propagate import PropagationConfig, VolumeSegmenter
    from ..volumes.io import write_mask

    if (box is None) == (box_mm is None):
        _fail(ValueError("give exactly one of --box (voxels) or --box-mm (mm)"))
    try:
        vol = read_volume(image)
        b = parse_box(box) if box else box_from_mm(box_mm, vol)
        clipped = b.clip(vol.size)
        if clipped != b:
            console.print(f"[yellow]box {b.as_list()} clipped to the volume: {clipped.as_list()}[/]")
        vs = VolumeSegmenter(vol, _segmenter(segmenter, device), cache_dir=cache or default_cache_dir())
        with _RichProgress("segmenting") as bar:
            mask = vs.propagate([clipped], PropagationConfig(mode=mode), bar)
        write_mask(mask.astype(np.uint16 if value > 255 else np.uint8) * value, vol, out)
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    console.print(f"wrote {out}: {int(mask.sum())} voxels, {mask.sum() * np.prod(vol.spacing) / 1000:.1f} mL")


@app.command()
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Folder of predicted label maps named <case>.nii.gz (or a file)."),
    gt: Path = typer.Option(..., "--gt", help="Dataset folder with ground truth (or a label file)."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated label values (default: the labels the run "
                                         "targeted, from medlsam_results.json, else every ground-truth and "
                                         "predicted label)."),
    nsd_mm: float = typer.Option(2.0, help="Tolerance of the normalized surface distance (mm)."),
    apl_mm: float = typer.Option(4.0, help="Tolerance of the added path length (mm): true contour farther than "
                                 "this from the predicted one, slice by slice, is contour to redraw."),
    resample: bool = typer.Option(False, "--resample", help="Resample a prediction that is not on its ground "
                                  "truth's voxel grid onto it (nearest neighbour) instead of refusing it."),
    missing_is_absent: bool = typer.Option(False, "--missing-is-absent", help="A label the ground truth lacks is an "
                                           "absent organ (its predicted voxels are false positives). Default: it was "
                                           "not contoured (radiotherapy data), said on its row and left out of the "
                                           "mean."),
    workers: Optional[int] = typer.Option(None, "--workers", help=_WORKERS_HELP),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
) -> None:
    """Dice, HD95, NSD and the added path length (APL: mm of true contour to redraw, and its share of the whole
    true contour) per organ and volume, with the mean per organ."""
    from ..cluster import open_engine
    from ..metrics import pooled_apl_share
    from ..project.evaluation import score_pair
    from ..volumes.atomic import compound_suffix

    try:
        for path, what in ((pred, "--pred"), (gt, "--gt")):
            if not path.exists():
                raise ValueError(f"{path}: no such file or folder ({what})")
        targeted, templates = _targeted_labels(pred)
        run_names = _run_label_names(pred)
        if pred.is_file():
            pairs = [(pred.name, pred, gt, run_names)]
        else:
            gts = _ground_truth(gt)
            pairs = []
            for p in sorted(pred.iterdir()):
                case = p.name[: -len(compound_suffix(p))] if compound_suffix(p) else p.name
                # nnU-Net's channel suffix: a run on imagesTr/pt_9_0000.nii.gz wrote pt_9_0000.nii.gz for case pt_9
                key = case if case in gts else case[:-5] if case.endswith("_0000") and case[:-5] in gts else None
                if case in templates:  # its targets came from its own points or mask: a score would flatter
                    console.print(f"{case}: a template of the run; not scored")
                elif key is not None:
                    pairs.append((case, p, gts[key].label, gts[key].label_names or run_names))
            if not pairs:
                raise ValueError(f"no prediction in {pred} is named after a case of {gt}")
        table = Table(title="evaluation")
        # short headers, names never cut: eight columns fit an 80-character terminal (the caption says the units)
        table.caption = (f"HD95 in mm; NSD at {nsd_mm:g} mm; APL: mm of true contour farther than {apl_mm:g} mm from "
                         "the prediction (to redraw), and its share of the whole contour")
        for col in ("case", "label", "name", "Dice", "HD95", f"NSD@{nsd_mm:g}", f"APL@{apl_mm:g}", "APL share"):
            table.add_column(col, justify="right", no_wrap=col in ("case", "name"), overflow="fold")
        per_label: dict[int, list[dict[str, float]]] = {}
        asked = [int(v) for v in labels.split(",")] if labels else None
        jobs = [(p, g, asked, sorted(targeted[case]) if case in targeted else None, nsd_mm, apl_mm, resample,
                 missing_is_absent) for case, p, g, _ in pairs]
        with open_engine(workers, scheduler) as engine:
            if engine is None:
                scores = [score_pair(*job) for job in jobs]
            else:
                console.print(f"on a Dask cluster of {plural(engine.workers, 'worker')}: one volume per task",
                              soft_wrap=True, highlight=False)
                scores = engine.each(score_pair, jobs)  # in the order of the pairs, whatever order they finished
        label_names: dict[int, str] = {}
        uncontoured: dict[int, int] = {}
        for (case, _, _, names), metrics in zip(pairs, scores):
            for v, m in metrics.items():
                label_names.setdefault(v, names.get(v, ""))
                if not m.get("contoured", True):  # nobody drew it: no score, and out of the mean
                    uncontoured[v] = uncontoured.get(v, 0) + 1
                    table.add_row(case, str(v), names.get(v, ""), "not contoured", "", "", "",
                                  f"{m['predicted_voxels']} vox predicted" if m["predicted_voxels"] else "")
                    continue
                per_label.setdefault(v, []).append(m)
                table.add_row(case, str(v), names.get(v, ""), f"{m['dice']:.3f}", f"{m['hd95']:.1f}", f"{m['nsd']:.3f}",
                              f"{m['apl_mm']:.0f}", _share(m["apl_share"]))
        for v, ms in sorted(per_label.items()):
            # the share over the organ's whole true contour (a volume without it adds nothing to either sum)
            left = f", {uncontoured[v]} not contoured" if v in uncontoured else ""
            table.add_row(f"[bold]mean[/] (n={len(ms)}{left})", str(v), label_names.get(v, ""),
                          f"{np.mean([m['dice'] for m in ms]):.3f}", f"{np.mean([m['hd95'] for m in ms]):.1f}",
                          f"{np.mean([m['nsd'] for m in ms]):.3f}", f"{np.mean([m['apl_mm'] for m in ms]):.0f}",
                          _share(pooled_apl_share(ms)))
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    console.print(table)


def _ground_truth(gt: Path) -> dict:
    """Case name -> labelled case: a dataset folder, or a folder of label maps alone (nnU-Net's labelsTr/)."""
    from ..errors import DatasetError
    from ..volumes.datasets import Case, find_cases, label_names_near
    from ..volumes.io import is_volume_path

    try:
        return {c.name: c for c in find_cases(gt, require_labels=True)}
    except DatasetError:
        files = [p for p in sorted(gt.iterdir()) if p.is_file() and is_volume_path(p)] if gt.is_dir() else []
        if not files:
            raise
        names = label_names_near(files[0])
        return {p.name.split(".")[0]: Case(p.name.split(".")[0], p, p, names) for p in files}


def _run_label_names(pred: Path) -> dict[int, str]:
    """The target names the run wrote beside its masks (labels.json), when the ground truth names none."""
    from ..project.pipeline import LABELS_NAME
    from ..volumes.datasets import read_label_names

    path = (pred if pred.is_dir() else pred.parent) / LABELS_NAME
    try:
        return read_label_names(path) if path.is_file() else {}
    except MedLSAMError:
        return {}


def _share(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.2f}"


def _targeted_labels(pred: Path) -> tuple[dict[str, set[int]], set[str]]:
    """Per case, the label values a MedLSAM run was asked for, and the run's template volumes (from its
    medlsam_results.json, if it left one)."""
    summary = (pred if pred.is_dir() else pred.parent) / "medlsam_results.json"
    if not summary.is_file():
        return {}, set()
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{summary}: unreadable run summary ({exc})") from exc
    entries = {case: entry for case, entry in data.items() if isinstance(entry, dict)}
    return ({case: {int(t["label"]) for t in entry.get("targets", {}).values() if t.get("label")}
             for case, entry in entries.items()}, {case for case, entry in entries.items() if entry.get("template")})
