"""Checks of the built wheel as a napari user installs it (run by .ci/wheel; each prints one line, exits 1 on failure).

    check_wheel.py contents dist/medlsam_napari-*.whl       # manifest, configs and every shipped weight inside
    check_wheel.py lowest dist/medlsam_napari-*.whl         # its dependencies at their lower bounds (constraints)
    check_wheel.py unchanged before.txt after.txt napari numpy torch   # pip changed none of them
    check_wheel.py contributions npe2.json                   # npe2 lists the plugin's readers, writers, widgets...
    check_wheel.py annotator <volume>                        # (under Xvfb) the annotator opens a volume
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fail(message: str) -> None:
    print(f"FAILED: {message}")
    raise SystemExit(1)


def contents(wheel: str) -> None:
    """Everything a user's install needs that is not Python code: the manifest, the configs, the weights."""
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.relative_to(ROOT / "training") for p in (ROOT / "training").rglob("*")
               if p.suffix in (".pt", ".json", ".toml") and "continue" not in p.parts and p.is_file()]
    wanted = ["medlsam_napari/napari.yaml", *[f"medlsam_training/{p.as_posix()}" for p in shipped]]
    missing = [w for w in wanted if w not in names]
    if missing:
        fail(f"{wheel}: missing {', '.join(missing)}")
    entry = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry[0]).decode() if entry else ""
    if "napari.manifest" not in text or "medlsam_napari:napari.yaml" not in text:
        fail(f"{wheel}: no napari.manifest entry point")
    print(f"{Path(wheel).name}: manifest, entry point and {len(wanted) - 1} data files inside "
          f"({sum(1 for w in wanted if w.endswith('.pt'))} weights)")


def lowest(wheel: str) -> None:
    """The wheel's dependencies at exactly their lower bounds, as pip constraints (what a "lowest" resolution
    installs): every floor pyproject.toml declares is then a version tested."""
    import re

    meta = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA")][0]
    for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines():
        if not line.startswith("Requires-Dist:") or "extra ==" in line:
            continue
        found = re.match(r"Requires-Dist:\s*([A-Za-z0-9_.\-]+)\s*\(?\s*>=\s*([^,;)\s]+)", line)
        if found:
            print(f"{found.group(1)}=={found.group(2)}")


def _freeze(path: str) -> dict[str, str]:
    out = {}
    for line in Path(path).read_text().splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def unchanged(before: str, after: str, *names: str) -> None:
    a, b = _freeze(before), _freeze(after)
    changed = [f"{n} {a.get(n.lower())} -> {b.get(n.lower())}" for n in names if a.get(n.lower()) != b.get(n.lower())]
    if changed:
        fail("pip changed the environment's " + "; ".join(changed))
    print("kept: " + ", ".join(f"{n} {a.get(n.lower())}" for n in names))


def contributions(listing: str) -> None:
    plugins = [p for p in json.loads(Path(listing).read_text()) if p.get("name") == "medlsam-napari"]
    if not plugins:
        fail("npe2 list does not show medlsam-napari")
    p = plugins[0]
    counts = {k: len(p.get(f"contributions.{k}") or []) for k in ("readers", "writers", "widgets", "sample_data")}
    empty = [k for k, n in counts.items() if not n]
    if empty:
        fail(f"npe2 lists medlsam-napari without {', '.join(empty)}")
    print(f"npe2 lists medlsam-napari {p.get('version')}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


def annotator(volume: str) -> None:
    """The annotator dock from napari's plugin menu, a project folder holding one real volume, that volume opened:
    its image layer carries the volume's geometry (spacing, origin, direction)."""
    import tempfile

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from medlsam_training.volumes.io import read_volume

    folder = Path(tempfile.mkdtemp())
    name = Path(volume).name.split(".")[0]
    (folder / Path(volume).name).symlink_to(Path(volume).resolve())  # read in place, never copied
    viewer = napari.Viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("medlsam-napari", "MedLSAM annotator")
    widget.open_project(folder)
    widget.volumes.open(name)
    QApplication.instance().processEvents()
    layer = widget.state.image_layer
    if layer is None:
        fail(f"{volume}: the annotator opened no image layer")
    expected = read_volume(volume)
    affine = np.asarray(layer.affine.affine_matrix)
    if layer.data.shape != expected.array.shape or not np.allclose(affine, expected.geometry.affine_zyx(), atol=1e-4):
        fail(f"{volume}: layer {layer.data.shape} with affine {affine.tolist()}, volume {expected.array.shape} with "
             f"{expected.geometry.affine_zyx().tolist()}")
    print(f"annotator (napari {napari.__version__}, numpy {np.__version__}): opened {name} {layer.data.shape} with "
          f"its geometry (spacing {tuple(round(float(s), 3) for s in expected.spacing_zyx)} mm)")
    viewer.close()


if __name__ == "__main__":
    commands = {"contents": contents, "lowest": lowest, "unchanged": unchanged, "contributions": contributions,
                "annotator": annotator}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        fail(f"usage: {__doc__}")
    commands[sys.argv[1]](*sys.argv[2:])
