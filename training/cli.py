"""The ``medlsam`` command line: headless versions of what the napari plugin does by hand."""

from __future__ import annotations

import json

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .datasets import label_names_near, read_label_names
from .errors import MedLSAMError
from .io import align_label_to_image, as_label, read_label, read_volume, write_volume

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="MedLSAM annotation tools: volume I/O, localization, SAM segmentation, training.")
console = Console()
err_console = Console(stderr=True)


def _error_line(exc: Exception) -> None:
    # one line on stderr, never wrapped: scripts grep it, and a wrapped path is a broken path
    err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)


def _fail(exc: Exception) -> None:
    _error_line(exc)
    raise typer.Exit(code=2)


@app.command()
def info(
    path: Path = typer.Argument(..., help="Volume file or DICOM series folder."),
    label: Optional[Path] = typer.Option(None, "--label", "-l", help="Label map to summarise on this image."),
    names: Optional[Path] = typer.Option(None, help="labels.json / dataset.json mapping values to names (default: "
                                         "beside the label or up to two folders above, as every command looks)."),
) -> None:
    """Print a volume's geometry and intensity statistics, and per-label statistics of a label map."""
    try:
        vol = read_volume(path)
        lab = read_label(label, vol, allow_empty=True) if label else None
        label_names = (read_label_names(names) if names else label_names_near(label)) if label else {}
    except MedLSAMError as exc:
        _fail(exc)
    g = vol.geometry
    table = Table(title=str(path), show_header=False)
    table.add_row("size (x, y, z)", " x ".join(map(str, g.size)))
    table.add_row("spacing (mm)", ", ".join(f"{s:.4g}" for s in g.spacing))
    table.add_row("origin (LPS mm)", ", ".join(f"{o:.3f}" for o in g.origin))
    table.add_row("direction", np.array2string(g.direction_matrix, precision=4, suppress_small=True))
    table.add_row("dtype", str(vol.array.dtype))
    a = vol.array
    table.add_row("intensity", f"min {a.min():.1f}  p1 {np.percentile(a, 1):.1f}  mean {a.mean():.1f}  "
                               f"p99 {np.percentile(a, 99):.1f}  max {a.max():.1f}")
    for key, value in vol.meta.items():
        table.add_row(key, str(value))
    console.print(table)
    if lab is None:
        return
    voxel_ml = float(np.prod(vol.spacing)) / 1000.0
    values, counts = np.unique(lab.array, return_counts=True)
    lt = Table(title=f"labels in {label}")
    for col in ("value", "name", "voxels", "volume (mL)", "mean intensity"):
        lt.add_column(col, justify="right")
    for value, count in zip(values, counts):
        if value == 0:
            continue
        mean = float(a[lab.array == value].mean())
        lt.add_row(str(value), label_names.get(int(value), ""), str(count), f"{count * voxel_ml:.1f}", f"{mean:.1f}")
    console.print(lt)


@app.command()
def convert(
    src: Path = typer.Argument(..., help="Volume file or DICOM series folder."),
    dst: Path = typer.Argument(..., help="Output file (.nii.gz, .nii, .nrrd, .mha; .seg.nrrd for a label map: a "
                               "3D Slicer segmentation named from the labels.json / dataset.json beside it)."),
    label: bool = typer.Option(False, "--label", help="Treat as a label map (integer type, integral values checked)."),
) -> None:
    """Convert between formats, keeping spacing, origin and direction exactly."""
    from .interop.seg_nrrd import write_seg_nrrd

    try:
        vol = read_volume(src)
        if dst.name.lower().endswith(".seg.nrrd"):  # the name promises segments: names and colours, not a plain NRRD
            if not label:
                raise MedLSAMError(f"{dst}: a .seg.nrrd holds a label map's segments; pass --label for a label map "
                                   "(or 'medlsam seg export LABEL --image IMAGE --out X.seg.nrrd')")
            write_seg_nrrd(as_label(vol), label_names_near(src), dst)
        else:
            write_volume(as_label(vol) if label else vol, dst)
    except MedLSAMError as exc:
        _fail(exc)
    console.print(f"wrote {dst} ({vol.geometry.describe()})")


@app.command()
def phantom(
    out: Path = typer.Argument(..., help="Folder to write phantom_XXX/{image,label}.nii.gz into."),
    n: int = typer.Option(4, "--n", min=1, help="Number of phantoms."),
    seed: int = typer.Option(0, help="Seed of the first phantom."),
) -> None:
    """Generate SYNTHETIC abdominal CT phantoms with known labels (the bundled sample data)."""
    from .phantom import write_phantom_dataset

    for folder in write_phantom_dataset(out, n=n, first_seed=seed):
        console.print(f"wrote {folder}")


class _RichProgress:
    """A rich progress bar driven by (done, total, message) callbacks."""

    def __init__(self, description: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        # no live bar when the output is a file or a pipe: the commands print a line per volume instead
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                                 disable=not console.is_terminal)
        self.task = self.progress.add_task(description, total=None, info="")

    def __enter__(self) -> "_RichProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, done: int, total: int, message: str = "") -> None:
        self.progress.update(self.task, completed=done, total=total, info=message)


@app.command("train-medlam")
def train_medlam(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of CT volumes; labels are never used."),
    out: Path = typer.Option(..., "--out", help="Training checkpoint (resumed if it exists)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config (default: the CPU-sized one)."),
    steps: Optional[int] = typer.Option(None, help="Override the number of steps."),
    batch_pairs: Optional[int] = typer.Option(None, help="Override patch pairs per step."),
    export: Optional[Path] = typer.Option(None, help="Also export fp16 inference weights here when done."),
    split: Optional[str] = typer.Option(None, help="Only cases of this split where a folder's manifest.json "
                                        "lists splits (e.g. train-pats)."),
    init: Optional[Path] = typer.Option(None, help="Start a new run from these weights (ignored on resume)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: torch's)."),
) -> None:
    """Self-supervised MedLAM training (RDR + MSS). Multi-GPU/multi-node: launch with torchrun."""
    import platform
    import time

    import torch

    from .medlam.train import DEFAULT_CONFIG, TrainConfig, export_weights, train

    cfg = TrainConfig.load(config or DEFAULT_CONFIG, data=[str(d) for d in data], steps=steps, batch_pairs=batch_pairs,
                           split=split, init=str(init) if init else None, threads=threads)
    started = time.time()
    with _RichProgress("training MedLAM") as bar:
        ckpt = train(cfg, out, progress=bar)
    console.print(f"checkpoint {ckpt} ({time.time() - started:.0f} s this run)")
    if export:
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        export_weights(ckpt, export, {"data": cfg.data, "device": device,
                                      "seconds_last_run": round(time.time() - started)})
        console.print(f"exported inference weights to {export}")


def _parse_device(device: Optional[str]):
    import torch

    if device in (None, "auto"):
        return None
    if device.startswith("cuda") and not torch.cuda.is_available():
        _fail(ValueError(f"device {device!r} asked for but CUDA is not available"))
    return torch.device(device)


@app.command("extreme-points")
def extreme_points(
    image: Path = typer.Argument(..., help="Template volume."),
    label: Path = typer.Argument(..., help="Its label map."),
    target: str = typer.Option(..., "--target", help="Target name, e.g. liver."),
    value: Optional[int] = typer.Option(None, "--value", help="Label value (default: looked up by name in labels.json)."),
    out: Path = typer.Option(..., "--out", help="Extreme-points JSON to write."),
    slabs: int = typer.Option(0, help="Also store per-z-slab points for SPL mode (e.g. 4)."),
) -> None:
    """Derive a target's six extreme points from a template's mask (for users who have masks)."""
    from .extreme_points import extreme_points_from_mask

    try:
        vol = read_volume(image)
        lab = read_label(label, vol)
        if value is None:
            names = label_names_near(label)
            matches = [v for v, n in names.items() if n == target]
            if not matches:
                present = [int(v) for v in np.unique(lab.array) if v]
                known = (f"it names {', '.join(f'{v}={n}' for v, n in sorted(names.items()))}" if names else
                         f"no labels.json or dataset.json beside it; values present: {', '.join(map(str, present))}")
                raise ValueError(f"{label}: no label named {target!r} ({known}); pass --value or another --target")
            value = matches[0]
        ep = extreme_points_from_mask(target, value, vol, lab, n_slabs=slabs)
        ep.save(out)
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    console.print(f"wrote {out}: {target} (label {value}) on {image}, {len(ep.slabs_mm)} slabs")


@app.command()
def localize(
    templates: list[Path] = typer.Option(..., "--templates", "-t", help="Extreme-points JSON file(s)."),
    queries: list[Path] = typer.Option(..., "--queries", "-q", help="Query volume(s) or dataset folder(s)."),
    out: Path = typer.Option(..., "--out", help="boxes JSON to write."),
    localizer: str = typer.Option("atlas", help="atlas (default: best on the H&N benchmark), medlam (fast preview), "
                                  "medlam+reg, registration or registration+bspline."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: CUDA when present)."),
) -> None:
    """Find every template target in every query volume; write boxes (voxels) and points (mm)."""
    from .atomic import write_json_atomic
    from .localize import load_templates, make_localizer
    from .pipeline import localized_json, query_cases

    try:
        loc = make_localizer(localizer, **({"device": _parse_device(device)} if localizer.startswith("medlam") else {}))
        tpls = load_templates(templates)
        cases = query_cases(queries, exclude={t.volume.path for t in tpls if t.volume.path})
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    results, table = {}, Table(title=f"localization ({localizer})")
    for col in ("query", "target", "status", "box (voxels x0,y0,z0,x1,y1,z1)", "spread mm", "s"):
        table.add_column(col)
    failed = 0
    for case in cases:
        try:
            located = loc.localize(read_volume(case.image), tpls)
            results[str(case.image)] = {t.target: localized_json(t) for t in located}
            for t in located:
                table.add_row(case.name, t.target, t.status, ",".join(map(str, t.box.as_list())) if t.box else "-",
                              f"{t.spread_mm:.1f}", f"{t.seconds:.1f}")
        except (MedLSAMError, ValueError, RuntimeError) as exc:
            failed += 1
            results[str(case.image)] = {"error": f"{type(exc).__name__}: {exc}"}
            table.add_row(case.name, "[red]failed[/]", "", str(exc)[:80], "", "")
    write_json_atomic(results, out)
    console.print(table)
    console.print(f"wrote {out}")
    if failed:
        err_console.print(f"[bold red]error:[/] {failed} of {len(cases)} queries failed", soft_wrap=True,
                          highlight=False)
        raise typer.Exit(code=1)


def _segmenter(segmenter: str, device: Optional[str]):
    from .segmenters import load_segmenter

    return load_segmenter(segmenter, device=_parse_device(device))


@app.command()
def segment(
    templates: Optional[list[Path]] = typer.Option(None, "--templates", "-t", help="Extreme-points JSON file(s)."),
    queries: Optional[list[Path]] = typer.Option(None, "--queries", "-q", help="Query volume(s) or dataset folder(s)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder: one <case>.nii.gz label map per query."),
    project: Optional[Path] = typer.Option(None, "--project", help="A project folder (the annotator's): its templates "
                                           "and queries, masks into its masks/, statuses and locks kept; replaces "
                                           "-t, -q and --out."),
    localizer: Optional[str] = typer.Option(None, help="atlas (default: best on the H&N benchmark), medlam (fast "
                                            "preview), medlam+reg, registration or registration+bspline (default "
                                            "with --project: the project's)."),
    mode: Optional[str] = typer.Option(None, help="atlas (default: the templates' masks warped and fused; SAM from "
                                       "the box where templates have no mask), mask (SAM, mask-guided), wpl (SAM, "
                                       "one box on every slice), spl (SAM, z sub-boxes); with --project: the "
                                       "project's."),
    segmenter: Optional[str] = typer.Option(None, help="litemedsam (embedded, default) or a SAM/MedSAM checkpoint path."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache folder (default: ~/.cache/medlsam-napari)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: CUDA when present)."),
    existing: str = typer.Option("skip", help="A query whose mask exists: skip it (resumable runs), or write this "
                                 "run's targets into it: keep (other labels kept), overwrite (over other labels too), "
                                 "empty (only empty voxels). Locked (reviewed) targets are never changed."),
) -> None:
    """The MedLSAM pipeline: localize every target in every query, segment it slice by slice, write masks."""
    from .embedding_cache import default_cache_dir
    from .label_merge import EXISTING, check_policy
    from .localize import LOCALIZERS, load_templates, make_localizer
    from .pipeline import OWN_MASK, OWN_POINTS, query_cases, run_queries
    from .propagate import MODES, PropagationConfig

    try:
        check_policy(existing, EXISTING)  # options first: a typo must not cost a model load
        if project is not None:
            if templates or queries or out:
                raise ValueError("--project takes its templates, queries and output folder from the project; "
                                 "leave out -t, -q and --out (put extra template files in its templates/)")
            from .project import Project
            from .project_run import build_templates, run_project

            proj = Project.open(project)
            for message in proj.messages:
                console.print(f"[yellow]{message}[/]")
            localizer, mode, segmenter = localizer or proj.localizer, mode or proj.mode, segmenter or proj.segmenter
        elif not (templates and queries and out):
            raise ValueError("give -t (extreme-points files), -q (queries) and --out, or --project FOLDER")
        localizer, mode, segmenter = localizer or LOCALIZERS[0], mode or MODES[0], segmenter or "litemedsam"
        config = PropagationConfig(mode=mode)
        loc = make_localizer(localizer, **({"device": _parse_device(device)} if localizer.startswith("medlam") else {}))
        if project is not None:
            tpls = build_templates(proj)
            cases, out = proj.to_segment, proj.folder / proj.output_dir
            reviewed = [q for q in cases if proj.entry(q).status == "reviewed"]
            if reviewed:
                console.print(f"{len(reviewed)} reviewed volume(s) left as they are: {', '.join(reviewed)}")
        else:
            tpls = load_templates(templates)
            cases = query_cases(queries, exclude={out})  # template volumes among them too: from their own points
        seg = _segmenter(segmenter, device)
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    table = Table(title=f"MedLSAM: {len(cases)} volumes, {localizer} + {seg.name}, mode {mode}")
    for col in ("query", "status", "targets", "seconds", "output / error"):
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
                      f"{r.seconds:.1f}", str(r.output) if r.output else (r.error or "")[:100])

    with _RichProgress("segmenting") as bar:
        if project is not None:  # reviewed volumes and locked targets are left alone, statuses saved
            run_project(proj, tpls, cases, loc, seg, bar, add_row, existing=existing, config=config,
                        cache_dir=cache)
        else:
            for r in run_queries(cases, tpls, loc, seg, out, config, cache or default_cache_dir(), existing, bar):
                add_row(r)
    failed = sum(r.status == "failed" for r in results)
    console.print(table)
    if failed:
        err_console.print(f"[bold red]error:[/] {failed} of {len(cases)} volumes failed; see "
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
    segmenter: str = typer.Option("litemedsam", help="litemedsam or a SAM/MedSAM checkpoint path."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache folder."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda (default: CUDA when present)."),
) -> None:
    """Segment one volume from a 3D box you already have."""
    from .embedding_cache import default_cache_dir
    from .io import write_mask
    from .pipeline import box_from_mm, parse_box
    from .propagate import PropagationConfig, VolumeSegmenter

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
    resample: bool = typer.Option(False, "--resample", help="Resample a prediction that is not on its ground "
                                  "truth's voxel grid onto it (nearest neighbour) instead of refusing it."),
) -> None:
    """Dice, HD95 and NSD per organ and volume, with the mean per organ."""
    from .atomic import compound_suffix
    from .datasets import find_cases
    from .errors import GeometryMismatchError
    from .metrics import label_metrics
    from .resample import resample_to_reference

    try:
        for path, what in ((pred, "--pred"), (gt, "--gt")):
            if not path.exists():
                raise ValueError(f"{path}: no such file or folder ({what})")
        targeted, templates = _targeted_labels(pred)
        if pred.is_file():
            pairs = [(pred.name, pred, gt, {})]
        else:
            gts = {c.name: c for c in find_cases(gt, require_labels=True)}
            pairs = []
            for p in sorted(pred.iterdir()):
                case = p.name[: -len(compound_suffix(p))] if compound_suffix(p) else p.name
                if case in templates:  # its targets came from its own points or mask: a score would flatter
                    console.print(f"{case}: a template of the run; not scored")
                elif case in gts:
                    pairs.append((case, p, gts[case].label, gts[case].label_names))
            if not pairs:
                raise ValueError(f"no prediction in {pred} is named after a case of {gt}")
        table = Table(title="evaluation")
        for col in ("case", "label", "name", "Dice", "HD95 (mm)", f"NSD@{nsd_mm:g}mm"):
            table.add_column(col, justify="right")
        per_label: dict[int, list[float]] = {}
        for case, p, g, names in pairs:
            ref = read_label(g, allow_empty=True)
            try:
                prd = read_label(p, ref, allow_empty=True)
            except GeometryMismatchError as exc:
                if not resample:
                    raise GeometryMismatchError(f"{exc}; pass --resample to resample it onto the ground truth") \
                        from exc
                prd = resample_to_reference(read_label(p, allow_empty=True), ref, is_label=True)
            # an organ the run missed entirely must count (Dice 0), so never only the predicted labels
            predicted = {int(v) for v in np.unique(prd.array) if v}
            if labels:
                values = [int(v) for v in labels.split(",")]
            elif case in targeted:
                values = sorted(targeted[case] | predicted)
            else:
                values = sorted(predicted | {int(v) for v in np.unique(ref.array) if v})
            for v, m in label_metrics(prd.array, ref.array, ref.spacing_zyx, values, nsd_mm).items():
                per_label.setdefault(v, []).append(m["dice"])
                table.add_row(case, str(v), names.get(v, ""), f"{m['dice']:.3f}", f"{m['hd95']:.1f}", f"{m['nsd']:.3f}")
        for v, dices in sorted(per_label.items()):
            table.add_row("[bold]mean[/]", str(v), "", f"{np.mean(dices):.3f}", "", "")
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    console.print(table)


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


@app.command("pretrain-vf")
def pretrain_vf_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of CT volumes; labels are never read."),
    out: Path = typer.Option(..., "--out", help="Checkpoint (resumed if it exists)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config (default: the CPU-sized one)."),
    steps: Optional[int] = typer.Option(None, help="Override the number of steps."),
) -> None:
    """Volume Fusion self-supervised pretraining of PCT-Net. Multi-GPU/multi-node: launch with torchrun."""
    from .vf.train import DEFAULT_CONFIG, VFConfig, pretrain_vf

    try:
        cfg = VFConfig.load(config or DEFAULT_CONFIG, steps=steps)
        with _RichProgress("Volume Fusion pretraining") as bar:
            pretrain_vf(cfg, data, out, bar)
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    console.print(f"checkpoint {out}")


def _labels_arg(labels: str, names: dict[int, str]) -> list[tuple[int, str]]:
    out = []
    for item in labels.split(","):
        item = item.strip()
        if item.isdigit():
            out.append((int(item), names.get(int(item), f"label_{item}")))
        else:
            matches = [v for v, n in names.items() if n == item]
            if not matches:
                raise ValueError(f"no label named {item!r} (known: {sorted(names.values())})")
            out.append((matches[0], item))
    return out


@app.command()
def finetune(
    data: Path = typer.Option(..., "--data", help="Dataset folder with image/label pairs (see README)."),
    labels: str = typer.Option(..., "--labels", help="Labels to learn, values or names: e.g. liver,spleen or 5,1."),
    out: Path = typer.Option(..., "--out", help="Checkpoint (resumed if it exists)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this (e.g. Volume Fusion) checkpoint."),
    cases: Optional[str] = typer.Option(None, help="Comma-separated case names to train on (default: all)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config (default: the CPU-sized one)."),
    steps: Optional[int] = typer.Option(None, help="Override the number of steps."),
) -> None:
    """Fine-tune PCT-Net on the few volumes that have masks; matching pretrained weights are loaded."""
    from .datasets import find_cases
    from .vf.train import DEFAULT_CONFIG, VFConfig
    from .vf.train import finetune as run_finetune

    try:
        found = find_cases(data, require_labels=True)
        if cases:
            wanted = {c.strip() for c in cases.split(",")}
            found = [c for c in found if c.name in wanted]
            if missing := wanted - {c.name for c in found}:
                raise ValueError(f"no labelled case named {sorted(missing)} in {data}")
        chosen = _labels_arg(labels, found[0].label_names)
        cfg = VFConfig.load(config or DEFAULT_CONFIG, steps=steps)
        with _RichProgress("fine-tuning PCT-Net") as bar:
            path, skipped = run_finetune(cfg, found, chosen, out, init, bar)
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    if init:
        console.print(f"initialised from {init}; not loaded ({len(skipped)}): {', '.join(skipped) or 'none'}")
    console.print(f"checkpoint {path}: {len(found)} volumes, labels {chosen}")


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Fine-tuned PCT-Net checkpoint."),
    inputs: list[Path] = typer.Option(..., "--input", "-i", help="Volume(s) or dataset folder(s)."),
    out: Path = typer.Option(..., "--out", help="Output folder: <case>.nii.gz label maps, image geometry."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda (default: CUDA when present)."),
) -> None:
    """Pre-segment volumes with a fine-tuned PCT-Net (sliding window), masks overlaying their images exactly."""
    from .io import write_mask
    from .pipeline import query_cases
    from .vf.train import PCTPredictor

    try:
        predictor = PCTPredictor(checkpoint, _parse_device(device))
        cases = query_cases(inputs)
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    for case in cases:
        try:
            vol = read_volume(case.image)
            path = write_mask(predictor.predict(vol), vol, out / f"{case.name}.nii.gz")
            console.print(f"{case.name}: wrote {path}")
        except (MedLSAMError, ValueError) as exc:
            console.print(f"[red]{case.name}: failed: {exc}[/]")


#: options that take several values; ``-t a.json b.json`` (a shell glob) means ``-t a.json -t b.json``
LIST_OPTIONS = frozenset({"-t", "--templates", "-q", "--queries", "--data"})


@app.command()
def report(
    image: Path = typer.Argument(..., help="Image file or DICOM series folder."),
    label: Path = typer.Argument(..., help="Label map on that image's voxel grid: the same grid in any axis order "
                                 "or orientation, or a crop of it (outside the crop is background)."),
    out: Path = typer.Option(..., "--out", "-o", help="Markdown draft to write; .json (and .sr.dcm) beside it."),
    names: Optional[str] = typer.Option(None, help="labels.json / dataset.json naming the label values, or "
                                        "'1=tumour,2=oedema' (default: a names file beside the label map)."),
    sex: Optional[str] = typer.Option(None, help="M or F, for sex-specific references (default: DICOM header)."),
    age: Optional[float] = typer.Option(None, help="Age in years (default: DICOM header)."),
    modality: Optional[str] = typer.Option(None, help="CT or MR (default: header, else guessed from the values)."),
    references: Optional[Path] = typer.Option(None, help="Reference table JSON (default: the bundled one)."),
    sr: bool = typer.Option(True, help="Also write a DICOM SR (TID 1500) when the image is a DICOM series."),
) -> None:
    """Draft a findings report: per-structure measurements against reference ranges (Markdown, JSON, DICOM SR)."""
    from .report import Patient, build_report, load_references
    from .report.export import write_report

    try:
        if sex is not None and sex.upper() not in ("M", "F"):
            raise MedLSAMError(f"--sex {sex}: give M or F")
        if modality is not None and modality.upper() not in ("CT", "MR"):
            raise MedLSAMError(f"--modality {modality}: give CT or MR")
        refs = load_references(references)
        vol = read_volume(image)
        lab = read_label(label, vol)
        label_names = _names_option(names) if names else label_names_near(label)
        result = build_report(vol, lab, label_names, references=refs,
                              patient=Patient.from_meta(vol.meta, sex=sex, age=age),
                              modality=modality.upper() if modality else None)
        written = write_report(result, out)
    except MedLSAMError as exc:
        _fail(exc)
    for line in result.impression:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    console.print(f"wrote {', '.join(map(str, written))}")
    if image.is_dir() and sr:
        from .dicom_series import series_datasets
        from .report.dicom_sr import write_measurement_report

        try:
            path = write_measurement_report(result, series_datasets(image, vol.meta.get("series_uid")),
                                            Path(out).with_suffix(".sr.dcm"))
        except MedLSAMError as exc:
            err_console.print(f"[bold red]error:[/] DICOM SR not written: {exc}", soft_wrap=True, highlight=False)
            raise typer.Exit(code=1)
        console.print(f"wrote {path} (DICOM SR, TID 1500)")


cam_app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="Weak-label CAM seeding: masks from 'present on this slice' ticks (UM-CAM + GSE).")
app.add_typer(cam_app, name="cam-seed")


def _targets_arg(targets: str) -> list[str]:
    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names:
        raise MedLSAMError(f"--targets {targets!r}: give target names separated by commas")
    return names


@cam_app.command("train")
def cam_train(
    data: Path = typer.Option(..., "--data", help="Dataset folder (MSD/nnU-Net, case folders, pairs)."),
    targets: str = typer.Option(..., "--targets", help="Target names, e.g. brainstem,parotid_left."),
    out: Path = typer.Option(..., "--out", help="Classifier checkpoint to write."),
    tags: Optional[Path] = typer.Option(None, help="Slice tags (JSON/CSV); default: derived from the masks."),
    split: Optional[str] = typer.Option(None, help="Only cases of this split (manifest.json), e.g. train-pats."),
    labels: Optional[str] = typer.Option(None, help="Label folder beside labelsTr/ to derive tags from, e.g. "
                                         "ptvTr (OpenKBP's target volumes)."),
    epochs: int = typer.Option(8, min=1),
    slices_per_epoch: int = typer.Option(6000, min=1),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
) -> None:
    """Train the 2D slice classifier whose activation maps seed the masks."""
    import torch

    from .cam.run import train_from_dataset
    from .cam.tags import read_tags

    if threads:
        torch.set_num_threads(threads)
    try:
        names = _targets_arg(targets)
        tag_file = read_tags(tags) if tags else None
        with _RichProgress("training") as bar:
            path = train_from_dataset(data, names, out, split=split, tag_file=tag_file, epochs=epochs,
                                      slices_per_epoch=slices_per_epoch, labels=labels, progress=bar)
    except MedLSAMError as exc:
        _fail(exc)
    console.print(f"wrote {path}")


@cam_app.command("refine")
def cam_refine(
    model: Path = typer.Option(..., "--model", help="Classifier from 'cam-seed train'."),
    data: Path = typer.Option(..., "--data", help="The tagged dataset the classifier learned from."),
    target: str = typer.Option(..., "--target", help="The target to learn, e.g. ptv70."),
    out: Path = typer.Option(..., "--out", help="Refinement network checkpoint to write."),
    tags: Optional[Path] = typer.Option(None, help="Slice tags (JSON/CSV); default: derived from the masks."),
    split: Optional[str] = typer.Option(None, help="Only cases of this split, e.g. train-pats."),
    labels: Optional[str] = typer.Option(None, help="Label folder beside labelsTr/, e.g. ptvTr."),
    max_cases: int = typer.Option(0, min=0, help="Pseudo-label only the first N volumes (0: all)."),
    steps: int = typer.Option(1500, min=1),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
) -> None:
    """Noise-robust training on the UM-CAM + GSE pseudo-masks (random-view consensus): the network that segments
    the slices ticked present ('cam-seed run --refiner')."""
    import torch

    from .cam.classifier import load_classifier
    from .cam.run import pseudo_label_dataset
    from .cam.rvc import train_rvc
    from .cam.tags import read_tags

    if threads:
        torch.set_num_threads(threads)
    try:
        net, learned, _ = load_classifier(model)
        tag_file = read_tags(tags) if tags else None
        with _RichProgress("pseudo-labelling") as bar:
            ds = pseudo_label_dataset(net, learned, target, data, split=split, labels=labels, tag_file=tag_file,
                                      max_cases=max_cases, progress=bar)
        with _RichProgress("training") as bar:
            path = train_rvc(ds.images, ds.masks, out, steps=steps, progress=bar)
    except MedLSAMError as exc:
        _fail(exc)
    quality = f"; pseudo-mask Dice with the masks {np.mean(ds.pseudo_dice):.3f}" if ds.pseudo_dice else ""
    console.print(f"wrote {path} ({ds.volumes} volumes, {len(ds.images)} slices{quality})")


@cam_app.command("run")
def cam_run(
    model: Path = typer.Option(..., "--model", help="Classifier from 'cam-seed train'."),
    out: Path = typer.Option(..., "--out", help="Folder for the maps and pseudo-masks."),
    image: Optional[Path] = typer.Option(None, help="One volume (with --tags, or --label for tags from a mask)."),
    data: Optional[Path] = typer.Option(None, help="A dataset folder: every case the tags name (or, with "
                                        "--from-labels, every labelled case)."),
    tags: Optional[Path] = typer.Option(None, help="Slice tags JSON/CSV in the volume's own slice indices."),
    label: Optional[Path] = typer.Option(None, help="Derive the tags of --image from this mask (tests, demos)."),
    from_labels: bool = typer.Option(False, help="With --data: derive tags from each case's mask."),
    targets: Optional[str] = typer.Option(None, help="Targets to seed (default: every target of the classifier)."),
    sam: bool = typer.Option(False, help="Also refine each pseudo-mask with LiteMedSAM (per-slice boxes)."),
    refiner: Optional[Path] = typer.Option(None, help="Network from 'cam-seed refine': also segment the ticked "
                                           "slices with it (<case>_<target>_refined.nii.gz)."),
) -> None:
    """Seed masks from slice tags: UM-CAM soft map, uncertainty, GSE pseudo-mask (and LiteMedSAM) per target."""
    from .cam.classifier import load_classifier
    from .cam.run import seed_volume, write_seeds
    from .cam.tags import read_tags, tags_from_mask, tags_from_ranges
    from .datasets import Case, find_cases
    from .report.measure import guess_modality

    failed = 0
    try:
        net, learned, modality = load_classifier(model)
        names = _targets_arg(targets) if targets else learned
        if (image is None) == (data is None):
            raise MedLSAMError("give exactly one of --image or --data")
        tag_file = read_tags(tags) if tags else None
        if image is not None:
            cases = [Case(image.name.split(".")[0], image, label, label_names_near(label) if label else {})]
        else:
            cases = [c for c in find_cases(data, require_labels=from_labels) if tag_file is None or c.name in tag_file]
        if tag_file is None and not (label or from_labels):
            raise MedLSAMError("give --tags, or --label / --from-labels to derive them from masks")
        segmenter = _segmenter("litemedsam", None) if sam else None
        if refiner is not None:
            from .cam.rvc import load_net

            refine_net = load_net(refiner)
    except MedLSAMError as exc:
        _fail(exc)
    for case in cases:
        try:
            volume, lab = case.load()
            own: dict[str, np.ndarray] = {}
            for name in names:
                if tag_file is not None:
                    entry = tag_file.get(case.name, {}).get(name)
                    if entry:
                        own[name] = tags_from_ranges(volume.array.shape[0], entry.get("present", []),
                                                     entry.get("absent"), where=f"{case.name}/{name}")
                elif lab is not None:
                    value = case.label_value(name) if case.label_names else None
                    if value is not None and np.any(lab.array == value):
                        own[name] = tags_from_mask(lab.array == value)
            if not own:
                raise MedLSAMError(f"{case.name}: no tags for {', '.join(names)}")
            if guess_modality(volume) != modality:
                raise MedLSAMError(f"{case.name}: looks like {guess_modality(volume)}, the classifier learned {modality}")
            prep, seeds, sam_masks = seed_volume(net, learned, volume, own, modality=modality, segmenter=segmenter)
            refined = {}
            if refiner is not None:
                from .cam.run import tags_to_canonical
                from .cam.rvc import segment_ticked

                refined = {n: segment_ticked(refine_net, prep, tags_to_canonical(volume, t))[1] for n, t in own.items()}
            written = write_seeds(volume, prep.canonical, seeds, sam_masks, out, case.name, refined)
            console.print(f"{case.name}: {len(seeds)} target(s), {len(written)} files")
        except MedLSAMError as exc:
            failed += 1
            err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
    if failed:
        err_console.print(f"{failed} of {len(cases)} volume(s) failed", soft_wrap=True, highlight=False)
        raise typer.Exit(code=1)


@cam_app.command("organ")
def cam_organ(
    image: Path = typer.Argument(..., help="The volume."),
    target: str = typer.Option(..., "--target", help="The organ's name (bone organs get a bone-threshold prior)."),
    out: Path = typer.Option(..., "--out", help="Mask to write (the image's grid and geometry)."),
    prior: Optional[Path] = typer.Option(None, help="The localizer's mask of the organ (e.g. from 'segment "
                                         "--mode atlas'): the prior, on the image's grid."),
    prior_value: Optional[int] = typer.Option(None, help="Label value of the organ in --prior (default: its "
                                              "name's value, or every non-zero voxel)."),
    box: Optional[str] = typer.Option(None, help="x0,y0,z0,x1,y1,z1 voxel box instead of --prior: filled by an "
                                      "ellipsoid (soft tissue) or a bone threshold (bone)."),
    tags: Optional[Path] = typer.Option(None, help="Slice ticks (JSON/CSV) limiting the slices: "
                                        "{case: {target: {present: [[z0, z1]]}}}."),
) -> None:
    """Seed an organ from a box, not from slice tags: localizer mask or box -> in-box prior -> LiteMedSAM on every
    ticked slice (organs share their slices, so tags alone cannot place them)."""
    from .cam.organ import seed_organ_volume
    from .cam.tags import read_tags, tags_from_ranges
    from .pipeline import parse_box

    try:
        volume = read_volume(image)
        if (prior is None) == (box is None):
            raise MedLSAMError("give exactly one of --prior or --box")
        warped = None
        if prior is not None:
            lab = align_label_to_image(read_label(prior), volume).array
            value = prior_value
            if value is None:
                named = {n: v for v, n in label_names_near(prior).items()}
                value = named.get(target)
            warped = lab == value if value is not None else lab > 0
        ticks = None
        if tags is not None:
            case = image.name.split(".")[0]
            entry = read_tags(tags).get(case, {}).get(target)
            if not entry:
                raise MedLSAMError(f"{tags}: no ticks for {case}/{target}")
            ticks = tags_from_ranges(volume.array.shape[0], entry.get("present", []), entry.get("absent"),
                                     where=f"{tags}: {case}/{target}")
        mask, _, kind = seed_organ_volume(volume, _segmenter("litemedsam", None), target, warped=warped,
                                          box=parse_box(box) if box else None, own_ticks=ticks)
        path = write_volume(volume.with_array(mask.astype(np.uint8)), out)
    except (MedLSAMError, ValueError) as exc:  # parse_box says what is wrong with the box as a ValueError
        _fail(exc)
    console.print(f"wrote {path}: {target}, {int(mask.sum())} voxels (prior: {kind.value})")


@app.command()
def value(
    data: Path = typer.Option(..., "--data", help="Labelled dataset folder (the volumes to value)."),
    targets: str = typer.Option(..., "--targets", help="Structures the probe segments, e.g. liver,spleen."),
    out: Path = typer.Option(..., "--out", help="Folder for values.csv, selection.json, values.png, probe.pt."),
    budget: float = typer.Option(0.3, help="Coreset size: a fraction in (0, 1) or a number of volumes."),
    split: Optional[str] = typer.Option(None, help="Only cases of this split (manifest.json)."),
    steps: int = typer.Option(2000, min=1, help="Probe training steps (batch 16 crops of 64 x 64; about 0.05 "
                              "CPU-s each on one core)."),
    value_every: int = typer.Option(100, min=1, help="Value every volume every this many steps."),
    seed: int = typer.Option(0),
) -> None:
    """'Train on less' and suspicious labels: a CPU probe trains on the volumes while each one is valued (loss per
    target, Dice with its own label, GradNorm, Data-SI); coresets by each rule and a ranking of labels that look
    wrong, with the reason."""
    from .coreset.run import SUSPICIOUS_CSV, value_dataset

    try:
        with _RichProgress("valuing") as bar:
            v = value_dataset(data, _targets_arg(targets), out, budget=budget, split=split, steps=steps,
                              value_every=value_every, seed=seed, progress=bar)
    except MedLSAMError as exc:
        _fail(exc)
    for rule, names in v.selections.items():
        console.print(f"{rule}: {len(names)} of {len(v.cases)} volumes")
    for s in v.suspects[:len(v.flagged)]:
        console.print(f"suspicious #{s.rank} {s.case} (z {s.worst_z_mm:.1f} mm): {s.reason}", soft_wrap=True,
                      highlight=False)
    console.print(f"wrote {out / SUSPICIOUS_CSV}, {out / 'values.csv'}, {out / 'selection.json'}, "
                  f"{out / 'values.png'}")


@app.command()
def suggest(
    pool: Path = typer.Option(..., "--pool", help="Folder of volumes not yet annotated."),
    budget: float = typer.Option(..., "--budget", help="How many to annotate next: a fraction or a number."),
    out: Path = typer.Option(..., "--out", help="Ranked list (CSV)."),
    labelled_data: Optional[Path] = typer.Option(None, "--labelled", help="Volumes already annotated: the "
                                                 "suggestions stay away from them."),
    probe: Optional[Path] = typer.Option(None, help="probe.pt from 'medlsam value' for the uncertainty term."),
    targets: Optional[str] = typer.Option(None, help="The probe's targets (with --probe)."),
) -> None:
    """'Annotate next': k-center greedy on MedLAM embeddings, with the probe's uncertainty when given."""
    from .coreset.run import suggest as rank, write_suggestions

    try:
        if probe and not targets:
            raise MedLSAMError("--probe needs --targets (the structures it was trained on)")
        with _RichProgress("embedding") as bar:
            items = rank(pool, budget, labelled_data=labelled_data, probe=probe,
                         targets=_targets_arg(targets) if targets else None, progress=bar)
        path = write_suggestions(items, out)
    except MedLSAMError as exc:
        _fail(exc)
    for s in items:
        console.print(f"{s.rank:3d}  {s.case}  ({s.reason})", highlight=False)
    console.print(f"wrote {path}")


#: the formats ``seg export`` writes
SEG_FORMATS = ("seg-nrrd", "dicom-seg", "rtstruct")
seg_app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="Segmentation files for 3D Slicer (.seg.nrrd), PACS (DICOM SEG) and radiotherapy "
                           "(DICOM RT structure sets).")
app.add_typer(seg_app, name="seg")


@seg_app.command("export")
def seg_export(
    label: Path = typer.Argument(..., help="Label map (NIfTI, NRRD, MHA, .seg.nrrd)."),
    image: Path = typer.Option(..., "--image", help="Its image; a DICOM series folder for DICOM SEG."),
    out: Path = typer.Option(..., "--out", help="X.seg.nrrd (3D Slicer) or X.dcm (DICOM SEG; an RT structure set "
                             "with --format rtstruct)."),
    names: Optional[str] = typer.Option(None, help="labels.json / dataset.json, or '1=liver,2=spleen' "
                                        "(default: a names file beside the label map)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="seg-nrrd, dicom-seg or rtstruct (default: from the "
                                      "name: .seg.nrrd, else .dcm is DICOM SEG)."),
) -> None:
    """Export a label map with segment names (and SNOMED codes in DICOM SEG), on its image's grid."""
    from .interop.dicom_seg import export_dicom_seg
    from .interop.rtstruct import export_rtstruct
    from .interop.seg_nrrd import read_seg_nrrd, write_seg_nrrd

    try:
        vol = read_volume(image)
        if label.name.lower().endswith(".seg.nrrd"):
            lab, label_names, _ = read_seg_nrrd(label)
            lab = align_label_to_image(lab, vol)
        else:
            lab = read_label(label, vol)
            label_names = {}
        label_names = {**label_names, **(_names_option(names) if names else label_names_near(label))}
        if fmt is None:
            fmt = "seg-nrrd" if out.name.lower().endswith(".seg.nrrd") else "dicom-seg" \
                if out.suffix.lower() == ".dcm" else None
        if fmt not in SEG_FORMATS:
            raise MedLSAMError(f"{out}: write .seg.nrrd (3D Slicer) or .dcm (DICOM SEG, or --format rtstruct)"
                               if fmt is None else f"--format {fmt}: give one of {', '.join(SEG_FORMATS)}")
        if fmt != "seg-nrrd" and not image.is_dir():
            raise MedLSAMError(f"{image}: {fmt} needs the source DICOM series folder as --image")
        if fmt == "seg-nrrd":
            path = write_seg_nrrd(lab, label_names, out)
        elif fmt == "dicom-seg":
            path = export_dicom_seg(lab, label_names, image, out)
        else:
            path = export_rtstruct(lab, label_names, image, out)
    except MedLSAMError as exc:
        _fail(exc)
    console.print(f"wrote {path} ({len(np.unique(lab.array)) - 1} segments)")


@seg_app.command("import")
def seg_import(
    src: Path = typer.Argument(..., help="A .seg.nrrd, a DICOM SEG or a DICOM RT structure set file."),
    out: Path = typer.Option(..., "--out", help="Label map to write (.nii.gz, .nrrd, .mha); labels.json beside it."),
    image: Optional[Path] = typer.Option(None, "--image", help="The image (for DICOM SEG and RT structure sets: "
                                         "their series folder)."),
) -> None:
    """Import a segmentation file as one label map on its image's grid, with a labels.json of segment names."""
    from .atomic import keep_previous, write_json_atomic
    from .interop.dicom_seg import import_dicom_seg
    from .interop.rtstruct import dicom_modality, import_rtstruct
    from .interop.seg_nrrd import read_seg_nrrd

    try:
        if src.name.lower().endswith(".seg.nrrd"):
            lab, label_names, _ = read_seg_nrrd(src)
            if image is not None:
                lab = align_label_to_image(lab, read_volume(image))
        else:
            if not src.is_file():
                raise MedLSAMError(f"{src}: does not exist")
            kind = dicom_modality(src)  # the file says what it is, whatever its name
            if kind not in ("SEG", "RTSTRUCT"):
                found = "not DICOM" if kind is None else f"DICOM of modality {kind or '?'}"
                raise MedLSAMError(f"{src}: neither a .seg.nrrd, a DICOM SEG nor an RT structure set ({found})")
            what = "a DICOM SEG" if kind == "SEG" else "an RT structure set"
            if image is None or not image.is_dir():
                raise MedLSAMError(f"{src}: importing {what} needs --image, its source series folder")
            lab, label_names = (import_dicom_seg if kind == "SEG" else import_rtstruct)(src, image)
        keep_previous(out)
        keep_previous(out.parent / "labels.json")
        write_volume(lab, out)
        names_path = write_json_atomic({str(k): v for k, v in label_names.items()}, out.parent / "labels.json")
    except MedLSAMError as exc:
        _fail(exc)
    console.print(f"wrote {out} and {names_path}")


def expand_list_options(argv: list[str]) -> list[str]:
    """Repeat a list option's flag before each further value given after it."""
    out: list[str] = []
    current = None
    for tok in argv:
        if tok.startswith("-") and tok != "-":
            current = tok if tok in LIST_OPTIONS else None
        elif current is not None and out[-1] != current:
            out.append(current)
        out.append(tok)
    return out


def _names_option(text: str) -> dict[int, str]:
    """A names file, or inline '1=tumour,2=oedema'."""
    if Path(text).is_file():
        return read_label_names(Path(text))
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip().isdigit() or not p[1].strip() for p in pairs):
        raise MedLSAMError(f"--names {text}: neither a file nor 'value=name' pairs such as '1=tumour,2=oedema'")
    return {int(v): n.strip() for v, n in pairs}


def main() -> None:
    import sys

    try:
        app(args=expand_list_options(sys.argv[1:]), prog_name="medlsam")
    except (MedLSAMError, OSError) as exc:  # the commands catch theirs; this is the net under the rest
        name = getattr(exc, "filename", None)
        _error_line(exc if isinstance(exc, MedLSAMError) or not name else
                    OSError(f"{Path(name).parent if Path(name).name.startswith('.') else name}: "
                            f"{exc.strerror or exc}"))
        sys.exit(2)


if __name__ == "__main__":
    main()
