"""The headless MedLSAM pipeline end to end through the CLI, on small synthetic phantoms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.metrics import binary_metrics
from medlsam_training.volumes.io import read_label, read_volume
from medlsam_training.volumes.phantom import write_phantom_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    # Same field of view as the default phantom with 20 thick slices: a quick CI-sized pipeline. In-plane
    # spacing stays clinical (1.8 mm); at 3.6 mm the spleen is 15 pixels wide and LiteMedSAM over-segments it.
    write_phantom_dataset(root / "data", n=2, size=(192, 160, 20), spacing=(1.8, 1.8, 6.0))
    (root / "data" / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    return root


@pytest.mark.slow
def test_extreme_points_localize_segment_evaluate(phantoms: Path) -> None:
    data, tpl = phantoms / "data", phantoms / "spleen.json"
    r = runner.invoke(app, ["extreme-points", str(data / "phantom_000" / "image.nii.gz"),
                            str(data / "phantom_000" / "label.nii.gz"), "--target", "spleen", "--out", str(tpl)])
    assert r.exit_code == 0, r.output
    assert json.loads(tpl.read_text())["label"] == 2

    boxes = phantoms / "boxes.json"
    r = runner.invoke(app, ["localize", "-t", str(tpl), "-q", str(data), "--out", str(boxes),
                            "--localizer", "registration"])
    assert r.exit_code == 1 and "1 of 2 queries failed" in r.output, r.output  # scripts must see the failure
    found = json.loads(boxes.read_text())
    assert "error" in found[str(data / "broken.nii.gz")]  # one bad volume is reported, the loop goes on
    assert len(found[str(data / "phantom_001" / "image.nii.gz")]["spleen"]["box"]) == 6

    out = phantoms / "masks"
    args = ["segment", "-t", str(tpl), "-q", str(data), "--out", str(out), "--localizer", "registration",
            "--mode", "mask", "--cache", str(phantoms / "cache"), "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "1 of 3 queries failed" in r.output, r.output  # the others were still done
    image = read_volume(data / "phantom_001" / "image.nii.gz")
    mask = read_label(out / "phantom_001.nii.gz", allow_empty=True)
    assert mask.geometry.is_close(image.geometry, tol=1e-6)  # overlays its image exactly
    truth = read_label(data / "phantom_001" / "label.nii.gz").array == 2
    assert binary_metrics(mask.array == 2, truth, image.spacing_zyx)["dice"] > 0.85
    summary = json.loads((out / "medlsam_results.json").read_text())
    assert summary["broken"]["status"] == "failed" and "broken.nii.gz" in summary["broken"]["error"]
    # the template volume is segmented too, from its own points (an exact box), and marked as a template
    own = summary["phantom_000"]
    assert own["template"] and own["targets"]["spleen"]["method"] == "template: its own points", own
    own_truth = read_label(data / "phantom_000" / "label.nii.gz").array == 2
    own_mask = read_label(out / "phantom_000.nii.gz", allow_empty=True).array == 2
    # SAM from the exact box on 6 mm slices: a behaviour check (its own box was used), not a SAM benchmark
    assert binary_metrics(own_mask, own_truth, image.spacing_zyx)["dice"] > 0.75
    assert "phantom_000 (template): done" in r.output  # and the run says so, one line per volume

    before = (out / "phantom_001.nii.gz").stat().st_mtime_ns
    r = runner.invoke(app, args)  # resumable: finished queries are skipped
    assert r.exit_code == 1 and "skipped" in r.output
    assert (out / "phantom_001.nii.gz").stat().st_mtime_ns == before

    r = runner.invoke(app, ["evaluate", "--pred", str(out), "--gt", str(data)])
    assert r.exit_code == 0, r.output
    assert "phantom_001" in r.output and "mean" in r.output
    assert "phantom_000: a template of the run; not scored" in r.output  # it would flatter the mean


@pytest.mark.slow
def test_segment_box_cli_with_mm_box_and_bad_box(phantoms: Path) -> None:
    image = phantoms / "data" / "phantom_001" / "image.nii.gz"
    truth = read_label(phantoms / "data" / "phantom_001" / "label.nii.gz").array == 4
    vol = read_volume(image)
    zz, yy, xx = np.nonzero(truth)
    lo = vol.index_to_physical([xx.min(), yy.min(), zz.min()])
    hi = vol.index_to_physical([xx.max(), yy.max(), zz.max()])
    out = phantoms / "kidney.nrrd"
    r = runner.invoke(app, ["segment-box", str(image), "--box-mm", ",".join(f"{v:.2f}" for v in (*lo, *hi)),
                            "--out", str(out), "--mode", "wpl", "--value", "4", "--cache", str(phantoms / "cache")])
    assert r.exit_code == 0, r.output
    mask = read_label(out)
    assert binary_metrics(mask.array == 4, truth, vol.spacing_zyx)["dice"] > 0.6
    r = runner.invoke(app, ["segment-box", str(image), "--box", "1,2,3", "--out", str(out)])
    assert r.exit_code == 2 and "six numbers" in r.output


@pytest.mark.slow
def test_segment_defaults_fuse_the_templates_masks(phantoms: Path, tmp_path: Path) -> None:
    """The default pipeline (atlas localizer, 'atlas' mode): the template file names its mask, which is warped
    into each query and written as the query's mask."""
    data, tpl = phantoms / "data", tmp_path / "liver.json"
    r = runner.invoke(app, ["extreme-points", str(data / "phantom_000" / "image.nii.gz"),
                            str(data / "phantom_000" / "label.nii.gz"), "--target", "liver", "--out", str(tpl)])
    assert r.exit_code == 0, r.output
    assert json.loads(tpl.read_text())["mask"] == {"path": str(data / "phantom_000" / "label.nii.gz"), "label": 1}
    query = data / "phantom_001" / "image.nii.gz"
    r = runner.invoke(app, ["segment", "-t", str(tpl), "-q", str(query), "--out", str(tmp_path / "masks")])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "masks" / "medlsam_results.json").read_text())
    liver = summary["image"]["targets"]["liver"]  # a query given as a file is named after it
    # this 20-slice phantom's liver runs into its last slice: the status says so
    assert liver["method"] == "atlas" and liver["status"] == "partly outside the scan", liver
    # the path taken, not only a quality floor that SAM from the box also clears: the fused template mask
    assert liver["source"] == "fused template masks" and liver["fallback"] is None, liver
    assert liver["agreement"] is not None, liver
    image = read_volume(query)
    mask = read_label(tmp_path / "masks" / "image.nii.gz")
    assert mask.geometry.is_close(image.geometry, tol=1e-6)
    truth = read_label(data / "phantom_001" / "label.nii.gz").array == 1
    assert binary_metrics(mask.array == 1, truth, image.spacing_zyx)["dice"] > 0.85
