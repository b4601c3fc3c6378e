"""Segmentation interchange: seg export | import (Slicer .seg.nrrd, DICOM SEG, RT structure sets)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ..errors import MedLSAMError
from ..volumes.datasets import label_names_near
from ..volumes.io import align_label_to_image, read_label, read_volume, write_volume
from ._app import _fail, _names_option, app, console, plural

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
    from ..interop.dicom_seg import export_dicom_seg
    from ..interop.rtstruct import export_rtstruct
    from ..interop.seg_nrrd import read_seg_nrrd, write_seg_nrrd

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
    n = len(np.unique(lab.array)) - 1
    kind = "ROI" if fmt == "rtstruct" else "segment"  # an RT structure set holds ROIs
    console.print(f"wrote {path} ({plural(n, kind)})", soft_wrap=True, highlight=False)


@seg_app.command("import")
def seg_import(
    src: Path = typer.Argument(..., help="A .seg.nrrd, a DICOM SEG or a DICOM RT structure set file."),
    out: Path = typer.Option(..., "--out", help="Label map to write (.nii.gz, .nrrd, .mha); labels.json beside it."),
    image: Optional[Path] = typer.Option(None, "--image", help="The image (for DICOM SEG and RT structure sets: "
                                         "their series folder)."),
) -> None:
    """Import a segmentation file as one label map on its image's grid, with a labels.json of segment names."""
    from ..interop.dicom_seg import import_dicom_seg
    from ..interop.rtstruct import dicom_modality, import_rtstruct
    from ..interop.seg_nrrd import read_seg_nrrd
    from ..volumes.atomic import keep_previous, write_json_atomic

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
