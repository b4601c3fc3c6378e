"""Weak-label seeding: cam-seed train | refine | run | organ."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ..errors import MedLSAMError
from ..options import SegmenterName
from ..volumes.datasets import label_names_near
from ..volumes.io import align_label_to_image, read_label, read_volume, write_volume
from ._app import _fail, _RichProgress, _segmenter, _targets_arg, app, console, err_console

cam_app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="Weak-label CAM seeding: masks from 'present on this slice' ticks (UM-CAM + GSE).")
app.add_typer(cam_app, name="cam-seed")


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

    from ..cam.run import train_from_dataset
    from ..cam.tags import read_tags

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

    from ..cam.classifier import load_classifier
    from ..cam.run import pseudo_label_dataset
    from ..cam.rvc import train_rvc
    from ..cam.tags import read_tags

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
    from ..cam.classifier import load_classifier
    from ..cam.run import seed_volume, write_seeds
    from ..cam.tags import read_tags, tags_from_mask, tags_from_ranges
    from ..report.measure import guess_modality
    from ..volumes.datasets import Case, find_cases

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
        segmenter = _segmenter(SegmenterName.LITEMEDSAM, None) if sam else None
        if refiner is not None:
            from ..cam.rvc import load_net

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
                raise MedLSAMError(f"{case.name}: looks like {guess_modality(volume)}, the classifier learned "
                                   f"{modality}")
            prep, seeds, sam_masks = seed_volume(net, learned, volume, own, modality=modality, segmenter=segmenter)
            refined = {}
            if refiner is not None:
                from ..cam.run import tags_to_canonical
                from ..cam.rvc import segment_ticked

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
    sam: bool = typer.Option(False, help="Re-segment each ticked slice with LiteMedSAM from the prior's box "
                             "(measured worse than the prior itself on 4 mm head-and-neck CT)."),
) -> None:
    """Seed an organ from a box, not from slice tags: localizer mask or box -> in-box prior -> LiteMedSAM on every
    ticked slice (organs share their slices, so tags alone cannot place them)."""
    from ..cam.organ import seed_organ_volume
    from ..cam.tags import read_tags, tags_from_ranges
    from ..project.pipeline import parse_box

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
        segmenter = _segmenter(SegmenterName.LITEMEDSAM, None) if sam else None
        mask, _, kind = seed_organ_volume(volume, target, segmenter=segmenter, warped=warped,
                                          box=parse_box(box) if box else None, own_ticks=ticks)
        path = write_volume(volume.with_array(mask.astype(np.uint8)), out)
    except (MedLSAMError, ValueError) as exc:  # parse_box says what is wrong with the box as a ValueError
        _fail(exc)
    console.print(f"wrote {path}: {target}, {int(mask.sum())} voxels (prior: {kind.value})")
