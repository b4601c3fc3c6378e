"""Model training and inference: train-medlam, pretrain-vf, finetune, predict."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import MedLSAMError
from ..io import read_volume
from ._app import _fail, _parse_device, _RichProgress, app, console


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
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config (default: the CPU-sized one)."),
    steps: Optional[int] = typer.Option(None, help="Override the number of steps."),
) -> None:
    """Volume Fusion self-supervised pretraining of PCT-Net. Multi-GPU/multi-node: launch with torchrun."""
    from ..vf.train import DEFAULT_CONFIG, VFConfig, pretrain_vf

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
    from ..datasets import find_cases
    from ..vf.train import DEFAULT_CONFIG, VFConfig
    from ..vf.train import finetune as run_finetune

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
    from ..io import write_mask
    from ..pipeline import query_cases
    from ..vf.train import PCTPredictor

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
