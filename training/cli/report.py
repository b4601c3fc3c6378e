"""Report drafting: report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import MedLSAMError
from ..volumes.datasets import label_names_near
from ..volumes.io import read_label, read_volume
from ._app import _fail, _names_option, app, console, err_console


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
    from ..report import Patient, build_report, load_references
    from ..report.export import write_report

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
        from ..report.dicom_sr import write_measurement_report
        from ..volumes.dicom_series import series_datasets

        try:
            path = write_measurement_report(result, series_datasets(image, vol.meta.get("series_uid")),
                                            Path(out).with_suffix(".sr.dcm"))
        except MedLSAMError as exc:
            err_console.print(f"[bold red]error:[/] DICOM SR not written: {exc}", soft_wrap=True, highlight=False)
            raise typer.Exit(code=1) from None
        console.print(f"wrote {path} (DICOM SR, TID 1500)")
