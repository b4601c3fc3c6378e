"""Dock tools of medlsam-napari (fine-tuning, report drafting, CAM seeding, coreset suggestions)."""

# The plugin package first: it imports torch with triton hidden (see medlsam_napari/__init__.py), which every
# dock here needs before napari's canvas exists.
import medlsam_napari  # noqa: F401, E402
