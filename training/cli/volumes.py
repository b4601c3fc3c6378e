"""Volume commands: info, convert, phantom, extreme-points."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.table import Table

from ..errors import MedLSAMError
from ..volumes.datasets import label_names_near, read_label_names
from ..volumes.io import as_label, read_label, read_volume, write_volume
from ._app import _fail, app, console


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
    from ..interop.seg_nrrd import write_seg_nrrd

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
    from ..volumes.phantom import write_phantom_dataset

    for folder in write_phantom_dataset(out, n=n, first_seed=seed):
        console.print(f"wrote {folder}")


@app.command("extreme-points")
def extreme_points(
    image: Path = typer.Argument(..., help="Template volume."),
    label: Path = typer.Argument(..., help="Its label map."),
    target: str = typer.Option(..., "--target", help="Target name, e.g. liver."),
    value: Optional[int] = typer.Option(None, "--value",
                                        help="Label value (default: looked up by name in labels.json)."),
    out: Path = typer.Option(..., "--out", help="Extreme-points JSON to write."),
    slabs: int = typer.Option(0, help="Also store per-z-slab points for SPL mode (e.g. 4)."),
) -> None:
    """Derive a target's six extreme points from a template's mask (for users who have masks)."""
    from ..localization.extreme_points import extreme_points_from_mask

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
    slabs = f", and the points of {len(ep.slabs_mm)} z-slabs (for mode spl)" if ep.slabs_mm else ""
    console.print(f"wrote {out}: the six extreme points of {target} (label {value}) on {image}{slabs}",
                  soft_wrap=True, highlight=False)
