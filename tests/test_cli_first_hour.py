"""What a new user hit in the first hour with the command line: one-line errors that name what to fix, names found
the same way by every command, a .seg.nrrd that is a segmentation, and normal runs without library noise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import slicerio
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.volumes.io import read_label, write_volume
from medlsam_training.volumes.phantom import write_phantom_dataset
from medlsam_training.volumes.volume import Volume

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shared_folder():
    """A folder that every user may read (pytest's own are the test runner's alone)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="medlsam_first_hour_"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def phantom(shared_folder: Path) -> Path:
    write_phantom_dataset(shared_folder / "data", n=1, size=(96, 80, 24), spacing=(3.6, 3.6, 6.0))
    for p in (shared_folder / "data").rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    (shared_folder / "data").chmod(0o755)
    return shared_folder / "data" / "phantom_000"


def _as_unprivileged(args: list[str]) -> list[str]:
    # root writes through any mode bits: drop to 'nobody' so the folder is really read-only for the command
    if os.geteuid() != 0:
        return args
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only")
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*drop, sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:  # e.g. a Python whose shared library lies under root's home (.ci/wheel's pyenv 3.13)
        pytest.skip(f"this Python cannot run as an unprivileged user here: {probe.stderr.strip()[:200]}")
    return [*drop, *args]


@pytest.mark.parametrize("command", ["report", "convert", "seg-export", "extreme-points"])
def test_a_read_only_output_folder_is_one_line_naming_the_folder(phantom: Path, shared_folder: Path,
                                                                 command: str) -> None:
    locked = shared_folder / f"locked_{command}"
    locked.mkdir()
    locked.chmod(0o555)
    image, label = phantom / "image.nii.gz", phantom / "label.nii.gz"
    args = {
        "report": ["report", str(image), str(label), "--out", str(locked / "report.md")],
        "convert": ["convert", str(label), str(locked / "label.nrrd"), "--label"],
        "seg-export": ["seg", "export", str(label), "--image", str(image), "--out", str(locked / "l.seg.nrrd")],
        "extreme-points": ["extreme-points", str(image), str(label), "--target", "liver", "--out",
                           str(locked / "liver.json")],
    }[command]
    r = subprocess.run(_as_unprivileged([sys.executable, "-m", "medlsam_training.cli", *args]), capture_output=True,
                       text=True, cwd=shared_folder, timeout=300)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr
    assert lines == [f"error: {locked}: cannot write here (Permission denied)"], r.stderr
    assert list(locked.iterdir()) == []  # nothing half-written, no temporary file left


def test_convert_to_seg_nrrd_writes_named_segments_or_refuses(phantom: Path, tmp_path: Path) -> None:
    out = tmp_path / "label.seg.nrrd"
    r = runner.invoke(app, ["convert", str(phantom / "label.nii.gz"), str(out), "--label"])
    assert r.exit_code == 0, r.output
    seg = slicerio.read_segmentation(str(out), skip_voxels=True)
    names = {s["labelValue"]: s["name"] for s in seg["segments"]}
    assert names[1] == "liver" and names[2] == "spleen"  # from the labels.json beside the label map
    r = runner.invoke(app, ["convert", str(phantom / "image.nii.gz"), str(tmp_path / "image.seg.nrrd")])
    assert r.exit_code == 2 and "pass --label" in r.output and "seg export" in r.output
    assert not (tmp_path / "image.seg.nrrd").exists()


def test_missing_paths_say_does_not_exist(phantom: Path, tmp_path: Path) -> None:
    tpl = tmp_path / "liver.json"
    assert runner.invoke(app, ["extreme-points", str(phantom / "image.nii.gz"), str(phantom / "label.nii.gz"),
                               "--target", "liver", "--out", str(tpl)]).exit_code == 0
    r = runner.invoke(app, ["segment", "-t", str(tpl), "-q", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and f"{tmp_path / 'nowhere'}: does not exist" in r.output, r.output
    r = runner.invoke(app, ["segment", "--project", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "does not exist" in r.output, r.output


def test_an_unknown_target_name_lists_the_names_the_file_has(phantom: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["extreme-points", str(phantom / "image.nii.gz"), str(phantom / "label.nii.gz"),
                            "--target", "livr", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "1=liver, 2=spleen" in r.output and "--value" in r.output, r.output


def test_info_names_openkbp_labels_as_extreme_points_does(openkbp: Path) -> None:
    """dataset.json sits two folders above labelsTr/: every command finds it the same way."""
    label = openkbp / "labelsTr" / "pt_100.nii.gz"
    r = runner.invoke(app, ["info", str(openkbp / "imagesTr" / "pt_100_0000.nii.gz"), "--label", str(label)])
    assert r.exit_code == 0, r.output
    assert "mandible" in r.output and "brainstem" in r.output


def test_report_accepts_a_label_map_on_a_sub_grid_of_its_image(phantom: Path, tmp_path: Path) -> None:
    """What report --help promises: a crop of the image's grid (a label saved on a bounding box) is measured."""
    label = read_label(phantom / "label.nii.gz")
    z0, y0, x0 = 4, 10, 8
    crop = label.array[z0:20, y0:70, x0:90]
    origin = label.geometry.index_to_physical([x0, y0, z0])
    write_volume(Volume(np.ascontiguousarray(crop), label.spacing, tuple(origin), label.direction),
                 tmp_path / "crop.nii.gz")
    (tmp_path / "labels.json").write_text((phantom / "labels.json").read_text())
    full = runner.invoke(app, ["report", str(phantom / "image.nii.gz"), str(phantom / "label.nii.gz"), "--out",
                               str(tmp_path / "full.md")])
    part = runner.invoke(app, ["report", str(phantom / "image.nii.gz"), str(tmp_path / "crop.nii.gz"), "--out",
                               str(tmp_path / "crop.md")])
    assert full.exit_code == 0 and part.exit_code == 0, part.output
    import json
    vol = {s["name"]: s["volume_ml"] for s in json.loads((tmp_path / "crop.json").read_text())["structures"]}
    expected = np.count_nonzero(crop == 1) * np.prod(label.spacing) / 1000
    assert vol["liver"] == pytest.approx(expected, rel=1e-6)


def test_evaluate_on_another_grid_is_one_line_and_resamples_when_asked(phantom: Path, tmp_path: Path) -> None:
    label = read_label(phantom / "label.nii.gz")
    shifted = label.with_array(label.array, origin=tuple(o + 1.3 for o in label.origin))
    pred = write_volume(shifted, tmp_path / "phantom_000.nii.gz")
    args = ["evaluate", "--pred", str(pred), "--gt", str(phantom / "label.nii.gz")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--resample" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = runner.invoke(app, [*args, "--resample", "--labels", "1"])
    assert r.exit_code == 0, r.output
    assert "liver" in r.output or "│     1 │" in r.output


def test_a_folder_scan_asks_gdcm_nothing_when_it_holds_no_dicom(phantom: Path) -> None:
    """ITK's 'No Series were found' came on every folder of NIfTI files."""
    code = ("from medlsam_training.volumes.datasets import find_cases; "
            "from medlsam_training.volumes.io import is_volume_path; "
            f"find_cases({str(phantom.parent)!r}); assert not is_volume_path({str(phantom)!r})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "No Series" not in r.stderr and "WARNING" not in r.stderr, r.stderr


@pytest.mark.slow
def test_loading_litemedsam_and_scoring_raise_no_library_future_warnings(phantom: Path) -> None:
    code = ("import warnings; warnings.simplefilter('error', FutureWarning); import numpy as np\n"
            "from medlsam_training.segmentation.segmenters import load_litemedsam; load_litemedsam(device='cpu')\n"
            "from medlsam_training.metrics import binary_metrics\n"
            "a = np.zeros((8, 8, 8), bool); a[2:6, 2:6, 2:6] = True\n"
            "print(binary_metrics(a, np.roll(a, 1, 0), (1.0, 1.0, 1.0)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_shipped_data_files_live_in_declared_packages() -> None:
    """setuptools warned at install that the MedLAM weights package 'would be ignored': data shipped from a
    sub-folder (``weights/*.pt``) must be a declared package of its own, or a later setuptools drops it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    for package, patterns in config["package-data"].items():
        assert package in declared, package
        for pattern in patterns:
            assert "/" not in pattern, f"{package}: {pattern} ships a sub-folder that is not a declared package"
    assert "medlsam_training.medlam.weights" in declared
    # every package of the three folders is declared: a wheel holds only those (the cluster's was missing)
    for name, folder in config["package-dir"].items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            package = ".".join([name, *init.parent.relative_to(ROOT / folder).parts])
            assert package in declared, f"{package} ({init.parent}) is not in pyproject's packages"
