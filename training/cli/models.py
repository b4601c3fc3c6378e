"""Model training and inference: train-medlam, pretrain-vf, finetune, predict."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import MedLSAMError
from ..options import POLICY_HELP, LabelPolicy
from ..volumes.io import read_volume
from ._app import _fail, _parse_device, _RichProgress, app, console, plural


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

    from ..medlam.train import DEFAULT_CONFIG, TrainConfig, export_weights, train

    cfg = TrainConfig.load(config or DEFAULT_CONFIG, data=[str(d) for d in data], steps=steps, batch_pairs=batch_pairs,
                           split=split, init=str(init) if init else None, threads=threads)
    started = time.time()
    with _RichProgress("training MedLAM") as bar:
        ckpt = train(cfg, out, progress=bar)
    console.print(f"checkpoint {ckpt} ({time.time() - started:.0f} s this run)")
    if export:
        cpu = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu
        export_weights(ckpt, export, {"data": cfg.data, "device": device,
                                      "seconds_last_run": round(time.time() - started)})
        console.print(f"exported inference weights to {export}")


@app.command("pretrain-vf")
def pretrain_vf_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of CT volumes; labels are never read."),
    out: Path = typer.Option(..., "--out", help="Checkpoint (resumed if it exists)."),
    network: str = typer.Option("pctnet", help="pctnet (3D, for finetune --data) or slicenet (the learning "
                                "loop's network, for finetune --project --init)."),
    config: Optional[Path] = typer.Option(None, "--config", help="PCT-Net: TOML config (default: the CPU-sized one)."),
    steps: Optional[int] = typer.Option(None, help="Override the number of steps."),
    split: Optional[str] = typer.Option(None, help="Only cases of this split where a folder's manifest.json lists "
                                        "splits (e.g. train-pats)."),
) -> None:
    """Volume Fusion self-supervised pretraining (resumable). PCT-Net: multi-GPU/multi-node with torchrun."""
    try:
        if network == "slicenet":
            result = _pretrain_slicenet(data, out, steps, split)
            console.print(f"checkpoint {out}: {result.steps} steps, {result.cpu_seconds / 60:.1f} CPU-min")
            return
        if network != "pctnet":
            raise ValueError(f"--network {network!r}: pctnet or slicenet")
        from ..vf.train import DEFAULT_CONFIG, VFConfig, pretrain_vf

        cfg = VFConfig.load(config or DEFAULT_CONFIG, steps=steps)
        with _RichProgress("Volume Fusion pretraining") as bar:
            pretrain_vf(cfg, data, out, bar)
    except (MedLSAMError, ValueError) as exc:
        _fail(exc)
    console.print(f"checkpoint {out}")


def _pretrain_slicenet(data: list[Path], out: Path, steps: Optional[int], split: Optional[str]):
    from ..coreset.probe import slice_inputs
    from ..learning.train import LearnConfig, pretrain_vf
    from ..medlam.preprocess import looks_like_ct
    from ..volumes.datasets import find_cases, split_members

    volumes = []
    for folder in data:
        members = split_members(folder, split) if split else None
        for case in find_cases(folder):
            if members is None or case.name in members:
                volume = read_volume(case.image)
                if looks_like_ct(volume):
                    volumes.append(slice_inputs(volume).images)
    cfg = LearnConfig() if steps is None else LearnConfig(steps=steps)
    with _RichProgress("Volume Fusion pretraining (slice network)") as bar:
        return pretrain_vf(volumes, out, cfg, progress=bar)


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
    project: Optional[Path] = typer.Option(None, "--project", help="Project folder: its reviewed volumes and locked "
                                           "targets train the learning loop's slice network, which then "
                                           "pre-segments the volumes not reviewed."),
    data: Optional[Path] = typer.Option(None, "--data", help="PCT-Net: dataset folder with image/label pairs."),
    labels: Optional[str] = typer.Option(None, "--labels", help="PCT-Net: labels to learn, values or names: e.g. "
                                         "liver,spleen or 5,1."),
    out: Optional[Path] = typer.Option(None, "--out", help="Checkpoint (resumed if it exists; with --project "
                                       "default <project>/models/slicenet.pt)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this (e.g. Volume Fusion) checkpoint "
                                        "(with --project: pretrain-vf --network slicenet)."),
    cases: Optional[str] = typer.Option(None, help="PCT-Net: comma-separated case names to train on (default: all)."),
    config: Optional[Path] = typer.Option(None, "--config", help="PCT-Net: TOML config (default: the CPU-sized one)."),
    steps: Optional[int] = typer.Option(None, help="Override the number of steps."),
    targets: Optional[str] = typer.Option(None, help="--project: comma-separated targets (default: all)."),
    presegment: bool = typer.Option(True, "--presegment/--no-presegment", help="--project: pre-segment the volumes "
                                    "not reviewed when training ends."),
    policy: str = typer.Option(LabelPolicy.EMPTY.value, help="--project: how predictions enter a label map: " +
                               "; ".join(f"{p} ({POLICY_HELP[p]})" for p in LabelPolicy) +
                               ". Locked (reviewed) targets are never changed."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda (default: CUDA when present)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="--project: pre-segment on a local Dask cluster "
                                          "of N worker processes (one volume per task, one thread each)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="--project: pre-segment on an existing Dask "
                                            "cluster, e.g. tcp://host:8786 (the project folder shared with it)."),
) -> None:
    """Fine-tune on the volumes that have masks: a project's reviewed work (the learning loop), or PCT-Net on a
    dataset folder; matching pretrained weights are loaded."""
    if project is not None:
        _finetune_project(project, out, init, steps, targets, presegment, policy, device, workers, scheduler)
        return
    from ..vf.train import DEFAULT_CONFIG, VFConfig
    from ..vf.train import finetune as run_finetune
    from ..volumes.datasets import find_cases

    try:
        if data is None or labels is None or out is None:
            raise ValueError("give --project FOLDER, or --data, --labels and --out (PCT-Net)")
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


def _finetune_project(folder: Path, out: Optional[Path], init: Optional[Path], steps: Optional[int],
                      targets: Optional[str], presegment: bool, policy: str, device: Optional[str],
                      workers: Optional[int] = None, scheduler: Optional[str] = None) -> None:
    from ..cluster import open_engine
    from ..learning.combination import summary as mix_summary
    from ..learning.project_loop import finetune_project, presegment_project
    from ..learning.train import LearnConfig, fit_summary
    from ..project.folder import Project
    from ..segmentation.label_merge import check_policy

    dev = _parse_device(device)
    try:
        check_policy(policy)  # options first: a typo must not cost a training
        proj = Project.open(folder)
        chosen = [t.strip() for t in targets.split(",") if t.strip()] if targets else None
        for t in chosen or []:
            proj.target(t)  # an unknown target is one line
        cfg = LearnConfig() if steps is None else LearnConfig(steps=steps)
        # the cluster reached (or started) before training: a wrong address must not cost a training either
        with open_engine(workers if presegment else None, scheduler if presegment else None,
                         device=device) as engine:
            with _RichProgress("fine-tuning the slice network") as bar:
                said: list[str] = []
                result = finetune_project(proj, targets=chosen, cfg=cfg, init=init, out=out, progress=bar,
                                          device=dev, say=said.append)
            for line in said:
                if " left out of the training: " in line:
                    console.print(f"[yellow]{line}[/]", soft_wrap=True, highlight=False)
            console.print(f"checkpoint {result.path}: {plural(len(result.volumes), 'volume')} "
                          f"({', '.join(result.volumes)}), "
                          f"{result.steps} steps, {result.cpu_seconds / 60:.1f} CPU-min"
                          + (f"; from {init}" if init else ""), soft_wrap=True, highlight=False)
            console.print(fit_summary(result.scores, result.untrained), soft_wrap=True, highlight=False)
            if result.combination:
                console.print(mix_summary(result.combination), soft_wrap=True, highlight=False)
            if not presegment:
                return
            if engine is not None:
                console.print(f"pre-segmenting on a Dask cluster of {plural(engine.workers, 'worker')}: one volume "
                              "per task", soft_wrap=True, highlight=False)
            with _RichProgress("pre-segmenting") as bar:
                report = presegment_project(proj, result.path, policy=policy, progress=bar, device=dev,
                                            engine=engine)
    except (MedLSAMError, ValueError, OSError) as exc:
        _fail(exc)
    if report.note:
        console.print(f"[yellow]nothing pre-segmented: {report.note}[/]", soft_wrap=True, highlight=False)
        return
    for name in report.written:
        console.print(f"{name}: pre-segmented ({report.seconds[name]:.1f} CPU-s) -> {proj.mask_path(name)}")
    for name, why in report.skipped.items():
        console.print(f"{name}: skipped ({why})")


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Fine-tuned PCT-Net checkpoint."),
    inputs: list[Path] = typer.Option(..., "--input", "-i", help="Volume(s) or dataset folder(s)."),
    out: Path = typer.Option(..., "--out", help="Output folder: <case>.nii.gz label maps, image geometry."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda (default: CUDA when present)."),
) -> None:
    """Pre-segment volumes with a fine-tuned PCT-Net (sliding window), masks overlaying their images exactly."""
    from ..project.pipeline import query_cases
    from ..vf.train import PCTPredictor
    from ..volumes.io import write_mask

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
