"""Every list of choices a user makes, in one place: the CLI, the annotator, the project file and the benchmarks read
these enums (and their help), and ``choose`` validates a value against one of them with a single-line error."""

from __future__ import annotations

import difflib
from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


class LocalizerName(StrEnum):
    """How a template's target is found in a query volume; the first is the default."""

    ATLAS = "atlas"
    MEDLAM = "medlam"
    MEDLAM_REG = "medlam+reg"
    REGISTRATION = "registration"
    REGISTRATION_BSPLINE = "registration+bspline"

    @property
    def takes_device(self) -> bool:
        """Only MedLAM runs a network; the registration localizers run in SimpleITK on the CPU."""
        return self in (LocalizerName.MEDLAM, LocalizerName.MEDLAM_REG)


LOCALIZER_HELP = {
    LocalizerName.ATLAS: "registration of each template, warped masks fused (best on the head-and-neck benchmark)",
    LocalizerName.MEDLAM: "MedLAM landmark network (fast preview)",
    LocalizerName.MEDLAM_REG: "registration's points refined by MedLAM's similarity step",
    LocalizerName.REGISTRATION: "affine registration of each template",
    LocalizerName.REGISTRATION_BSPLINE: "affine + B-spline registration of each template",
}
#: other spellings accepted for a localizer
LOCALIZER_ALIASES = {"reg": LocalizerName.REGISTRATION, "deformable": LocalizerName.REGISTRATION_BSPLINE,
                     "medlam+registration": LocalizerName.MEDLAM_REG}


class PropagationMode(StrEnum):
    """How a localized target becomes a mask; the first is the default."""

    ATLAS = "atlas"
    MASK = "mask"
    WPL = "wpl"
    SPL = "spl"


MODE_HELP = {
    PropagationMode.ATLAS: "the templates' warped masks fused by vote (SAM from the box where a template has no mask)",
    PropagationMode.MASK: "SAM slice by slice from the box's centre, each slice prompted by the previous mask's box",
    PropagationMode.WPL: "SAM with the 3D box's xy on every slice",
    PropagationMode.SPL: "SAM with per-slab sub-boxes",
}


class LabelPolicy(StrEnum):
    """What writing a target into a label map does to the labels already there
    (training/segmentation/label_merge.py)."""

    KEEP = "keep"
    OVERWRITE = "overwrite"
    EMPTY = "empty"


POLICY_HELP = {  # short: they label a combo box in a narrow dock
    LabelPolicy.KEEP: "keep other labels",
    LabelPolicy.OVERWRITE: "overwrite other labels",
    LabelPolicy.EMPTY: "fill empty voxels only",
}


#: What a re-run does with a volume whose label map exists: leave it (skip), or merge by a label policy.
ExistingMaps = StrEnum("ExistingMaps", {"SKIP": "skip", **{p.name: p.value for p in LabelPolicy}})


class SegmenterName(StrEnum):
    """Segmenters known by name (any other value is the path of a SAM-family checkpoint)."""

    LITEMEDSAM = "litemedsam"


class TargetClass(StrEnum):
    """What weak-label seeding starts from (training/cam/): slice ticks for lesions, a box for organs."""

    LESION = "lesion"
    ORGAN = "organ"


TARGET_CLASS_HELP = {
    TargetClass.LESION: "lesion / target volume: slice ticks -> CAM (UM-CAM + GSE), or the refinement network",
    TargetClass.ORGAN: "organ: the localizer's mask (or a drawn box's in-box prior) on the ticked slices; LiteMedSAM "
                       "optional",
}


class CorrectionUpdate(StrEnum):
    """How corrected axial slices update the rest of a target (training/correction/); the first is the default."""

    AUTO = "auto"
    FILL = "fill"
    REFUSE = "refuse"
    REFUSE_SHIFT = "refuse+shift"
    REFUSE_SHIFT_GROW = "refuse+shift+grow"


CORRECTION_HELP = {
    CorrectionUpdate.AUTO: "what measured best for the target's class: refuse+shift+grow for bones on CT, refuse+shift "
                           "for the rest (docs/benchmarks.md, section 9)",
    CorrectionUpdate.FILL: "fill between corrected slices (morphological contour interpolation, Slicer's 'Fill between "
                           "slices'); other slices unchanged",
    CorrectionUpdate.REFUSE: "the atlas re-fused at the threshold that agrees best with the corrected slices",
    CorrectionUpdate.REFUSE_SHIFT: "re-fused, then each corrected slice's change carried to its neighbours (signed "
                                   "distances, faded with distance)",
    CorrectionUpdate.REFUSE_SHIFT_GROW: "refuse+shift, then the boundary re-decided on the image (FastGrowCut, "
                                        "Slicer's 'Grow from seeds')",
}


class OptionError(ValueError):
    """A value that is none of an option list's choices."""


def choose(value: str | StrEnum, options: type[E], what: str, aliases: dict[str, E] | None = None) -> E:
    """``value`` as a member of ``options`` (case-insensitive, aliases allowed), else one line naming the choices
    and the closest one."""
    text = str(value).strip().lower()
    if aliases and text in aliases:
        return aliases[text]
    try:
        return options(text)
    except ValueError:
        names = [m.value for m in options]
        close = difflib.get_close_matches(text, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise OptionError(f"unknown {what} {value!r}{hint}; choose one of {', '.join(names)}") from None


def listed(options: type[StrEnum]) -> str:
    """'a, b or c': the choices for a help text."""
    names = [m.value for m in options]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


__all__ = ["CORRECTION_HELP", "CorrectionUpdate", "ExistingMaps", "LOCALIZER_ALIASES", "LOCALIZER_HELP", "LabelPolicy",
           "LocalizerName", "MODE_HELP",
           "OptionError", "POLICY_HELP", "PropagationMode", "SegmenterName", "TARGET_CLASS_HELP", "TargetClass",
           "choose", "listed"]
