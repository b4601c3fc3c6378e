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
    from medlsam_training.volumes.phantom import write_phantom_dataset

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


# --- a project of real head-and-neck CT for the learning loop (tests/test_learning_loop.py, the dock's test) ---
HN_TARGETS = {"brainstem": 1, "parotid_right": 3, "parotid_left": 4, "mandible": 7}  # OpenKBP's label values
HN_REVIEWED = ("pt_1", "pt_2")  # train-pats with all four contoured
HN_PARTLY = "pt_4"              # its mandible reviewed (locked), the rest not
HN_PENDING = "pt_9"


def hn_truth(openkbp: Path, name: str, image):
    """The patient's manual contours of HN_TARGETS on ``image``'s grid (uint8, OpenKBP's values)."""
    import numpy as np

    from medlsam_training.volumes.io import read_label

    lab = read_label(openkbp / "labelsTr" / f"{name}.nii.gz", image).array
    return np.where(np.isin(lab, list(HN_TARGETS.values())), lab, 0).astype(np.uint8)


class HNProject:
    """The project folder and what it holds (test modules read the names from here, not from constants)."""

    targets, reviewed, partly, pending = HN_TARGETS, HN_REVIEWED, HN_PARTLY, HN_PENDING

    def __init__(self, folder: Path, openkbp: Path):
        self.folder, self.openkbp = folder, openkbp

    def truth(self, name: str, image):
        return hn_truth(self.openkbp, name, image)


@pytest.fixture()
def hn_project(openkbp: Path, tmp_path: Path) -> HNProject:
    """Four OpenKBP train-pats volumes linked (not copied) into a project: two reviewed, one with its mandible
    locked and a stroke of parotid painted by hand, one pending."""
    return make_hn_project(openkbp, tmp_path)


def make_hn_project(openkbp: Path, tmp_path: Path) -> HNProject:
    import numpy as np

    from medlsam_training.project.folder import Project
    from medlsam_training.volumes.io import read_volume, write_mask

    folder = tmp_path / "project"
    folder.mkdir()
    for name in (*HN_REVIEWED, HN_PARTLY, HN_PENDING):
        (folder / f"{name}.nii.gz").symlink_to(openkbp / "imagesTr" / f"{name}_0000.nii.gz")
    project = Project.open(folder)
    for t, v in HN_TARGETS.items():
        project.add_target(t, v)
    for name in HN_REVIEWED:
        image = read_volume(project.volume_path(name))
        mask = write_mask(hn_truth(openkbp, name, image), image, project.mask_path(name))
        project.set_status(name, "segmented", mask)
        project.mark_reviewed(name)
    image = read_volume(project.volume_path(HN_PARTLY))
    partly = np.where(hn_truth(openkbp, HN_PARTLY, image) == 7, 7, 0).astype(np.uint8)
    partly[60:62, 60:64, 60:64] = 3
    project.set_status(HN_PARTLY, "segmented", write_mask(partly, image, project.mask_path(HN_PARTLY)))
    project.set_locked(HN_PARTLY, "mandible")
    return HNProject(folder, openkbp)


@pytest.fixture(scope="session")
def hn_segmented_once(openkbp: Path, tmp_path_factory) -> HNProject:
    """The head-and-neck project of ``hn_project`` after ``medlsam segment --project`` (the atlas over the reviewed
    volumes): its masks and the atlas's votes beside them.  Built once per session; tests get a copy."""
    from typer.testing import CliRunner

    from medlsam_training.cli import app

    folder = make_hn_project(openkbp, tmp_path_factory.mktemp("hn_segmented")).folder
    r = CliRunner().invoke(app, ["segment", "--project", str(folder), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return HNProject(folder, openkbp)


@pytest.fixture()
def hn_segmented(hn_segmented_once: HNProject, tmp_path: Path) -> HNProject:
    """A copy of the segmented head-and-neck project, this test's own (its volumes stay links to ../shared/data)."""
    import shutil

    folder = tmp_path / "segmented"
    shutil.copytree(hn_segmented_once.folder, folder, symlinks=True)
    return HNProject(folder, hn_segmented_once.openkbp)


@pytest.fixture(scope="session")
def hn_trained_once(openkbp: Path, tmp_path_factory) -> HNProject:
    """The head-and-neck project of ``hn_project`` with its network trained (300 steps: the mandible is learned,
    docs/benchmarks.md; what else is learned is recorded in the checkpoint).  Built once; tests get a copy."""
    from medlsam_training.learning.project_loop import finetune_project
    from medlsam_training.learning.train import LearnConfig
    from medlsam_training.project.folder import Project

    hn = make_hn_project(openkbp, tmp_path_factory.mktemp("hn_trained"))
    finetune_project(Project.open(hn.folder), cfg=LearnConfig(steps=300), device="cpu")
    return hn


@pytest.fixture()
def hn_trained(hn_trained_once: HNProject, tmp_path: Path) -> HNProject:
    """A copy of the trained head-and-neck project, this test's own."""
    import shutil

    folder = tmp_path / "trained"
    shutil.copytree(hn_trained_once.folder, folder, symlinks=True)
    return HNProject(folder, hn_trained_once.openkbp)
