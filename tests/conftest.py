"""Shared fixtures: the real volumes in ../shared/data (never copied into the project)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# With both bindings installed (CI tests PyQt5 too), qtpy would take PyQt5 first: the default is PyQt6, the binding
# the set-up script installs; QT_API chooses explicitly.
if "QT_API" not in os.environ and importlib.util.find_spec("PyQt6") is not None:
    os.environ["QT_API"] = "pyqt6"
os.environ.setdefault("PYTEST_QT_API", os.environ.get("QT_API", "pyqt6"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        message = f"shared data missing: {path} (clone the project beside its shared/ folder)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has shared/: its absence is a broken run, not a skip
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def ct_example(shared_data: Path) -> Path:
    """TotalSegmentator example CT (3 mm iso) folder: image.nii.gz, label.nii.gz, labels.json."""
    return _require(shared_data / "ct" / "ts_example")


@pytest.fixture(scope="session")
def ct_dicom(shared_data: Path) -> Path:
    """Upper-abdomen CT as a DICOM series with a RAS-stored NIfTI label."""
    return _require(shared_data / "ct" / "ts_dicom_abdomen")


@pytest.fixture(scope="session")
def openkbp(shared_data: Path) -> Path:
    """OpenKBP head-and-neck CT with manual contours (nnU-Net layout); train-pats for templates only."""
    return _require(shared_data / "ct_hn_openkbp")


@pytest.fixture(scope="session")
def cli_project(tmp_path_factory) -> Path:
    """A project folder made with the command line alone (the documented layout): three small phantoms, the
    liver's extreme points from phantom_000's mask in templates/liver.json, masks of the others by
    'medlsam segment' in masks/.  Copy it before changing it."""
    from typer.testing import CliRunner

    from medlsam_training.cli import app
    from medlsam_training.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("cli_project") / "project"
    # the CI-sized phantom of test_pipeline_cli: clinical in-plane spacing, 20 thick slices
    write_phantom_dataset(root, n=3, size=(192, 160, 20), spacing=(1.8, 1.8, 6.0))
    runner = CliRunner()
    template = root / "templates" / "liver.json"
    r = runner.invoke(app, ["extreme-points", str(root / "phantom_000" / "image.nii.gz"),
                            str(root / "phantom_000" / "label.nii.gz"), "--target", "liver", "--out", str(template)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["segment", "-t", str(template), "-q", str(root), "--out", str(root / "masks"),
                            "--localizer", "registration", "--device", "cpu",
                            "--cache", str(tmp_path_factory.mktemp("embeddings"))])
    assert r.exit_code == 0, r.output
    return root
