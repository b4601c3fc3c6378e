"""CAM seeding as the CLI and the dock run it: train the slice classifier on a tagged dataset, seed a volume from
its tags, and write the maps and pseudo-masks with the image's geometry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..progress import ProgressFn
from ..volumes.io import align_label_to_image, write_volume
from ..volumes.volume import Volume, orient
from .classifier import SliceClassifier, prepare_slices, train_classifier
from .data import labelled_cases, load_tagged
from .seeding import TargetSeeds, sam_from_mask, seed_target
from .tags import ABSENT, PRESENT, TagError, require_usable


def canonical_order(volume: Volume) -> np.ndarray:
    """For each axial slice of the LPS-oriented volume, the index of the same slice in the volume's own array.

    Tags are given in the volume's own slice indices (what a viewer scrolls through); the classifier works on the
    LPS-oriented grid."""
    marker = volume.with_array(np.broadcast_to(np.arange(volume.array.shape[0], dtype=np.int32)[:, None, None],
                                               volume.array.shape).copy())
    canon = orient(marker, "LPS").array
    if not np.all(canon == canon[:, :1, :1]):
        raise TagError(f"{volume.name}: its array slices are not axial; slice tags need an axial volume")
    return canon[:, 0, 0]


def tags_to_canonical(volume: Volume, own_tags: np.ndarray) -> np.ndarray:
    own_tags = np.asarray(own_tags)
    if own_tags.shape[0] != volume.array.shape[0]:
        raise TagError(f"{volume.name}: {own_tags.shape[0]} slice tags for {volume.array.shape[0]} slices")
    return own_tags[canonical_order(volume)]


def train_from_dataset(data: str | os.PathLike[str], targets: list[str], out: str | os.PathLike[str], *,
                       split: str | None = None, tag_file: dict | None = None, epochs: int = 8,
                       slices_per_epoch: int = 6000, labels: str | None = None,
                       progress: ProgressFn | None = None) -> Path:
    """Train on every labelled case of ``data`` (tags from ``tag_file`` where it lists a case, else from masks;
    ``labels`` a label folder such as "ptvTr" instead of labelsTr/)."""
    cases = labelled_cases(data, split, labels=labels) if tag_file is None else _cases_with_tags(data, tag_file)
    if not cases:
        raise TagError(f"{data}: no case to train on{f' in split {split}' if split else ''}")
    known = {n for c in cases for n in c.label_names.values()}
    missing = [t for t in targets if t not in known and tag_file is None]
    if missing:
        raise TagError(f"{data}: no case has a label named {', '.join(missing)} (known: {', '.join(sorted(known))})")
    tagged = load_tagged(cases, targets, tag_file)
    for t, name in enumerate(targets):
        require_usable(np.concatenate([tags[:, t] for _, _, tags, _ in tagged]), f"{data}/{name}")
    return train_classifier([(p, tags) for _, p, tags, _ in tagged], targets, out, epochs=epochs,
                            slices_per_epoch=slices_per_epoch, modality=tagged[0][1].modality, progress=progress)


@dataclass
class RefinerData:
    """The refinement network's training set: slices of the pseudo-labelled volumes and how good the pseudo-masks
    were where the volumes' own masks exist (a benchmark figure; tags from a file have no mask to compare)."""

    images: torch.Tensor
    masks: torch.Tensor
    volumes: int
    pseudo_dice: list[float]


def pseudo_label_dataset(model: SliceClassifier, model_targets: list[str], target: str,
                         data: str | os.PathLike[str], *, split: str | None = None, labels: str | None = None,
                         tag_file: dict | None = None, max_cases: int = 0, seed: int = 0,
                         progress: ProgressFn | None = None) -> RefinerData:
    """UM-CAM + GSE pseudo-masks of the tagged volumes of ``data`` (the classifier's own training volumes, as in
    the paper), as the refinement network's training slices."""
    from ..metrics import dice_score
    from .rvc import training_slices

    if target not in model_targets:
        raise TagError(f"target {target!r} is not one the classifier learned ({', '.join(model_targets)})")
    t = model_targets.index(target)
    cases = labelled_cases(data, split, labels=labels) if tag_file is None else _cases_with_tags(data, tag_file)
    cases = cases[:max_cases] if max_cases else cases
    rng = np.random.default_rng(seed)
    images, masks, quality = [], [], []
    for i, (case, prep, tags, lab) in enumerate(load_tagged(cases, model_targets, tag_file)):
        if progress:
            progress(i, len(cases), f"pseudo-labelling {case.name}")
        if not np.any(tags[:, t] == PRESENT) or not np.any(tags[:, t] == ABSENT):
            continue
        pseudo = seed_target(model, prep, tags[:, t], t, target).masks.get("umcam_gse")
        if pseudo is None:
            continue
        if lab is not None and tag_file is None:
            quality.append(float(dice_score(pseudo, lab == case.label_value(target))))
        x, y = training_slices(prep, pseudo, tags[:, t], rng)
        images.append(x)
        masks.append(y)
    if not images:
        raise TagError(f"{data}: no volume with slices tagged both present and absent for {target}")
    return RefinerData(torch.cat(images), torch.cat(masks), len(images), quality)


def _cases_with_tags(data, tag_file: dict):
    from ..volumes.datasets import find_cases

    cases = [c for c in find_cases(data) if c.name in tag_file]
    if not cases:
        raise TagError(f"{data}: none of its cases is named in the tag file ({', '.join(list(tag_file)[:5])}…)")
    return cases


def seed_volume(model: SliceClassifier, model_targets: list[str], volume: Volume, own_tags: dict[str, np.ndarray],
                *, modality: str = "CT", segmenter=None, progress: ProgressFn | None = None
                ) -> tuple[object, dict[str, TargetSeeds], dict[str, np.ndarray]]:
    """(prepared slices, seeds per target, SAM masks per target when a segmenter is given) on the LPS grid."""
    for name, tags in own_tags.items():
        if name not in model_targets:
            raise TagError(f"{volume.name}: target {name!r} is not one the classifier learned "
                           f"({', '.join(model_targets)})")
        if not np.any(np.asarray(tags) == PRESENT):
            raise TagError(f"{volume.name}/{name}: no slice tagged present; nothing to seed")
    prep = prepare_slices(volume, modality)
    seeds, sam = {}, {}
    vs = None
    if segmenter is not None:
        from ..segmentation.propagate import VolumeSegmenter

        vs = VolumeSegmenter(prep.canonical, segmenter)
    for i, (name, tags) in enumerate(own_tags.items()):
        if progress:
            progress(i, len(own_tags), name)
        seeds[name] = seed_target(model, prep, tags_to_canonical(volume, tags), model_targets.index(name), name)
        if vs is not None:
            sam[name] = sam_from_mask(vs, seeds[name].masks["umcam_gse"])
    if progress:
        progress(len(own_tags), len(own_tags), "done")
    return prep, seeds, sam


def on_volume_grid(canonical: Volume, array: np.ndarray, volume: Volume) -> Volume:
    """A map or mask on the LPS-oriented grid, re-indexed exactly onto the volume's own grid and geometry."""
    return align_label_to_image(canonical.with_array(array), volume)


def write_seeds(volume: Volume, canonical: Volume, seeds: dict[str, TargetSeeds], sam: dict[str, np.ndarray],
                out: str | os.PathLike[str], case: str, refined: dict[str, np.ndarray] | None = None) -> list[Path]:
    """<case>_<target>_{umcam,gse,uncertainty}.nii.gz (fused CAM, after GSE, its uncertainty), _pseudo.nii.gz (the
    GSE pseudo-mask), _sam.nii.gz (LiteMedSAM from it) and _refined.nii.gz (the refinement network on the ticked
    slices) with the volume's geometry."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, s in seeds.items():
        if not s.masks:
            continue
        items = {"umcam": s.maps["umcam"].astype(np.float32), "gse": s.maps["umcam_gse"].astype(np.float32),
                 "pseudo": s.masks["umcam_gse"].astype(np.uint8)}
        if s.uncertainty is not None:
            items["uncertainty"] = s.uncertainty.astype(np.float32)
        if name in sam:
            items["sam"] = sam[name].astype(np.uint8)
        if refined and name in refined:
            items["refined"] = refined[name].astype(np.uint8)
        for kind, arr in items.items():
            written.append(write_volume(on_volume_grid(canonical, arr, volume), out / f"{case}_{name}_{kind}.nii.gz"))
    return written


__all__ = ["ABSENT", "PRESENT", "canonical_order", "on_volume_grid", "seed_volume", "tags_to_canonical",
           "train_from_dataset", "write_seeds"]
