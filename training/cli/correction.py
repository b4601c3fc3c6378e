"""Corrections in 3D: update a target's other slices from the axial slices drawn or fixed (``medlsam correct``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import MedLSAMError
from ..options import CORRECTION_HELP, CorrectionUpdate, choose
from ._app import _fail, app, console

_METHOD_HELP = "; ".join(f"{n} ({h})" for n, h in CORRECTION_HELP.items()) + f". Default {CorrectionUpdate.AUTO}."


def parse_slices(text: str) -> list[int]:
    """'12,18,30' or '12-18,30' -> sorted axial slice indices."""
    out: set[int] = set()
    try:
        for part in filter(None, text.replace(" ", "").split(",")):
            lo, _, hi = part.partition("-")
            out |= set(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--corrected {text!r}: axial slice indices are needed, like 12,18,30 or 12-18") from None
    return sorted(out)


@app.command()
def correct(
    volume: str = typer.Argument(..., help="The volume (file or DICOM folder); with --project, its name there."),
    target: str = typer.Option(..., "--target", help="The target: its name (labels.json beside the mask, or the "
                               "project's) or its label value."),
    corrected: Optional[str] = typer.Option(None, "--corrected", help="Axial slices (0-based z indices of the "
                                            "volume) drawn or fixed in the mask: 12,18,30 or 12-18. With --project "
                                            "they are added to the slices recorded there."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="The label map holding the corrections (with "
                                        "--project: the project's mask of the volume)."),
    method: str = typer.Option(CorrectionUpdate.AUTO.value, help=_METHOD_HELP),
    votes: Optional[Path] = typer.Option(None, help="The atlas's per-template votes (default: .votes/<case>.npz "
                                         "beside the mask, written by medlsam segment)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write (default: over the mask, the previous "
                                       "one kept in .previous/)."),
    project: Optional[Path] = typer.Option(None, "--project", help="A project folder: the volume's recorded "
                                           "corrections, votes and mask."),
) -> None:
    """Update the rest of a target from the axial slices drawn or fixed: corrected slices never change."""

    from ..correction import correct_label_map, load_votes, votes_path
    from ..correction.in_project import correct_in_project
    from ..project.folder import Project
    from ..project.guard import WriteGuard, unchanged_slices, write_automatic
    from ..volumes.datasets import file_stem, label_names_near
    from ..volumes.io import read_label, read_volume

    try:
        how = choose(method, CorrectionUpdate, "correction update")
        slices = parse_slices(corrected) if corrected else []
        if project is not None:
            p = Project.open(project)
            p.entry(volume)  # an unknown volume: one line naming it
            p.target(target)  # an unknown target: one line naming the project's targets
            image = read_volume(p.volume_path(volume))
            mask = mask or p.mask_path(volume)
            label_map = read_label(mask, image, allow_empty=True).array
            if slices:
                # a slice as the last automatic write left it was not drawn or fixed: recording it would freeze it
                same = unchanged_slices(mask, label_map, p.target(target).label, slices)
                if same:
                    console.print(f"[yellow]{target}: slice(s) {', '.join(map(str, same))} are as the last "
                                  "automatic write left them: not recorded as corrected[/]", highlight=False)
                p.add_corrected(volume, target, [z for z in slices if z not in same])
            new, result = correct_in_project(p, volume, target, label_map, image.array, image.spacing_zyx, how)
            name, guard = target, WriteGuard.for_project(p, volume, [target])
        else:
            if mask is None or not slices:
                raise ValueError("give --mask and --corrected (or --project)")
            image = read_volume(Path(volume))
            label_map = read_label(mask, image, allow_empty=True).array
            names = label_names_near(mask)
            value = int(target) if target.isdigit() else next((v for v, n in names.items() if n == target), None)
            if value is None:
                raise ValueError(f"target {target!r} is not a label value and not named in a labels.json / "
                                 f"dataset.json near {mask}")
            name = names.get(value, target)
            found = load_votes(votes or votes_path(mask.parent, file_stem(mask)))
            new, result = correct_label_map(label_map, value, slices, how, found.get(name), image.spacing_zyx, name,
                                            image=image.array)
            guard = WriteGuard.of(file_stem(mask), [value], corrected=slices)
        target_out = out or mask
        write_automatic(target_out, image, label_map, new, guard)
    except (MedLSAMError, ValueError, KeyError) as exc:
        _fail(exc)
    console.print(f"{name}: update '{result.describe()}' changed {result.changed} voxels in {result.seconds:.2f} s; "
                  f"wrote {target_out}", highlight=False)
