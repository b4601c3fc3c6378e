"""The annotator's models: the localizer and segmenter that the project's settings name, loaded once."""

from __future__ import annotations

from medlsam_training.localization.localize import make_localizer
from medlsam_training.project.folder import Project
from medlsam_training.segmentation.segmenters import load_segmenter


def load_models(project: Project, cache: dict[str, object]):
    """(localizer, segmenter) for the project's settings; segmenters are kept across runs."""
    device = None if project.device == "auto" else project.device
    key = f"{project.segmenter}@{device}"
    if key not in cache:
        cache[key] = load_segmenter(project.segmenter, device=device)
    return make_localizer(project.localizer, device=device), cache[key]
