"""The ``medlsam`` command line: headless versions of what the napari plugin does by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .datasets import read_label_names
from .errors import MedLSAMError
from .io import as_label, read_label, read_volume, write_volume

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="MedLSAM annotation tools: volume I/O, localization, SAM segmentation, training.")
console = Console()


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


@app.command()
def info(
    path: Path = typer.Argument(..., help="Volume file or DICOM series folder."),
    label: Optional[Path] = typer.Option(None, "--label", "-l", help="Label map to summarise on this image."),
    names: Optional[Path] = typer.Option(None, help="labels.json mapping values to names (default: beside the label)."),
) -> None:
    """Print a volume's geometry and intensity statistics, and per-label statistics of a label map."""
    try:
        vol = read_volume(path)
        lab = read_label(label, vol, allow_empty=True) if label else None
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
    names_path = names or next((p for p in (label.parent / "labels.json",) if p.is_file()), None)
    label_names = read_label_names(names_path) if names_path else {}
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
    dst: Path = typer.Argument(..., help="Output file (.nii.gz, .nii, .nrrd, .mha)."),
    label: bool = typer.Option(False, "--label", help="Treat as a label map (integer type, integral values checked)."),
) -> None:
    """Convert between formats, keeping spacing, origin and direction exactly."""
    try:
        vol = read_volume(src)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
