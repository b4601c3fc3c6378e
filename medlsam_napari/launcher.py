"""``medlsam-napari [PROJECT_DIR]``: napari with the annotator docked and the project loaded."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    import argparse
    import importlib.util
    import os

    parser = argparse.ArgumentParser(prog="medlsam-napari",
                                     description="napari with the MedLSAM annotator docked and the project loaded.")
    parser.add_argument("project", nargs="?", help="folder of volumes to annotate (resumed if it has a session)")
    args = parser.parse_args(argv)
    if args.project is not None and not os.path.isdir(args.project):  # one line, before any window opens
        what = "not a folder" if os.path.exists(args.project) else "does not exist"
        print(f"medlsam-napari: error: {args.project}: {what}", file=sys.stderr)
        raise SystemExit(2)

    # qtpy prefers PyQt5 when both bindings are installed; PyQt6 is napari's recommended one (QT_API overrides)
    if "QT_API" not in os.environ and importlib.util.find_spec("PyQt6") is not None:
        os.environ["QT_API"] = "pyqt6"
    import napari

    from .annotator import AnnotatorWidget

    viewer = napari.Viewer(title="MedLSAM annotator")
    widget = AnnotatorWidget(viewer, args.project)
    viewer.window.add_dock_widget(widget, name="MedLSAM annotator", area="right")
    napari.run()


if __name__ == "__main__":
    main(sys.argv[1:])
