"""Failures are visible, outputs are right, and the annotator's files are safe (issue: trust)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medlsam_training.cli import app, expand_list_options
from medlsam_training.errors import NaNVoxelsError
from medlsam_training.project.pipeline import query_cases
from medlsam_training.segmentation.propagate import (
    PropagationConfig,
    bone_target,
    clean_mask,
    for_target,
    single_part_target,
)
from medlsam_training.vf.train import lateral_swap
from medlsam_training.volumes.atomic import write_json_atomic
from medlsam_training.volumes.io import read_volume, write_volume
from medlsam_training.volumes.volume import Volume

runner = CliRunner()


def _label_file(path: Path, array: np.ndarray) -> Path:
    write_volume(Volume(array.astype(np.uint8), spacing=(2.0, 2.0, 3.0)), path)
    return path


def test_evaluate_counts_an_organ_the_prediction_missed(tmp_path: Path) -> None:
    gt = np.zeros((8, 20, 20), np.uint8)
    gt[2:6, 2:8, 2:8] = 1
    gt[2:6, 12:18, 12:18] = 2
    pred = np.where(gt == 1, 1, 0)
    r = runner.invoke(app, ["evaluate", "--pred", str(_label_file(tmp_path / "p.nii.gz", pred)),
                            "--gt", str(_label_file(tmp_path / "g.nii.gz", gt))])
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[2].strip(): line for line in r.output.splitlines() if line.count("│") > 4}
    assert "1.000" in rows["1"] and "0.000" in rows["2"], r.output  # label 2 missed entirely: Dice 0
    # the added path length: none of label 1's contour to redraw, all of label 2's
    assert rows["1"].split("│")[-2].strip() == "0.00" and rows["2"].split("│")[-2].strip() == "1.00", r.output


def test_evaluate_with_a_missing_folder_says_so_in_one_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(tmp_path)])
    assert r.exit_code == 2
    assert "nope" in r.output and "no such file or folder" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("writer", ["nibabel", "simpleitk"])
def test_nan_and_inf_in_a_float_nifti_are_refused(writer: str, tmp_path: Path) -> None:
    arr = np.zeros((6, 7, 8), np.float32)
    arr[1, 2, 3], arr[2, 2, 2] = np.nan, np.inf
    path = tmp_path / "bad.nii.gz"
    if writer == "nibabel":
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    else:
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    with pytest.raises(NaNVoxelsError, match="bad.nii.gz: 2 of 336 voxels are NaN or infinite"):
        read_volume(path)
    assert np.isnan(read_volume(path, allow_nan=True).array).sum() == 0  # what ITK makes of them, when allowed


def test_an_image_given_as_template_is_named(ct_example: Path, tmp_path: Path) -> None:
    image = ct_example / "image.nii.gz"
    r = runner.invoke(app, ["localize", "-t", str(image), "-q", str(image), "--out", str(tmp_path / "b.json"),
                            "--localizer", "registration"])
    assert r.exit_code == 2
    assert "image.nii.gz: not an extreme-points JSON file" in r.output and "codec" not in r.output


def test_list_options_take_several_values_after_one_flag() -> None:
    argv = ["segment", "-t", "a.json", "b.json", "-q", "dir1", "dir2", "--out", "o", "--existing", "keep"]
    assert expand_list_options(argv) == ["segment", "-t", "a.json", "-t", "b.json", "-q", "dir1", "-q", "dir2",
                                         "--out", "o", "--existing", "keep"]
    assert expand_list_options(["info", "x.nii.gz", "--label", "l.nii.gz"]) == ["info", "x.nii.gz", "--label",
                                                                                  "l.nii.gz"]


def test_extreme_points_finds_names_in_an_nnunet_dataset_json(openkbp: Path, tmp_path: Path) -> None:
    out = tmp_path / "mandible.json"
    r = runner.invoke(app, ["extreme-points", str(openkbp / "imagesTr" / "pt_1_0000.nii.gz"),
                            str(openkbp / "labelsTr" / "pt_1.nii.gz"), "--target", "mandible", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["label"] == 7


def test_a_bad_mode_fails_before_any_work(tmp_path: Path) -> None:
    r = runner.invoke(app, ["segment", "-t", str(tmp_path / "missing.json"), "-q", str(tmp_path), "--out",
                            str(tmp_path / "o"), "--mode", "wpI"])
    assert r.exit_code == 2 and "unknown propagation mode 'wpI'" in r.output


def test_a_folder_of_predictions_is_never_taken_as_queries(tmp_path: Path) -> None:
    data = tmp_path / "data"
    vol = Volume(np.zeros((4, 5, 6), np.int16), spacing=(1.0, 1.0, 1.0))
    write_volume(vol, data / "case_a.nii.gz")
    write_volume(vol, data / "masks" / "case_a.nii.gz")
    write_json_atomic({"case_a": {}}, data / "masks" / "medlsam_results.json")
    write_volume(vol, data / "out2" / "case_b.nii.gz")
    names = [c.image for c in query_cases([data], exclude={data / "out2"})]
    assert names == [data / "case_a.nii.gz"]


def test_written_files_respect_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        new = write_json_atomic({"a": 1}, tmp_path / "new.json")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        existing = tmp_path / "kept.json"
        existing.write_text("{}")
        existing.chmod(0o640)
        write_json_atomic({"a": 2}, existing)
        assert stat.S_IMODE(existing.stat().st_mode) == 0o640  # a replaced file keeps its mode
        mask = write_volume(Volume(np.zeros((2, 3, 4), np.uint8)), tmp_path / "mask.nii.gz")
        assert stat.S_IMODE(Path(mask).stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_left_right_flips_swap_lateralised_labels() -> None:
    assert lateral_swap(["liver", "kidney_left", "kidney_right"]).tolist() == [0, 1, 3, 2]
    assert lateral_swap(["liver", "spleen"]).tolist() == [0, 1, 2]
    assert lateral_swap(["parotid_right", "mandible"]) is None  # a partner is missing: no left-right flip
    assert lateral_swap(["Left-Putamen", "Right-Putamen"]).tolist() == [0, 2, 1]


def test_multi_part_targets_keep_every_part() -> None:
    mask = np.zeros((5, 20, 20), bool)
    mask[1:4, 2:6, 2:6] = True
    mask[1:4, 12:18, 12:18] = True  # two separate parts
    for target, parts in (("liver", 1), ("small_bowel", 2), ("parotids", 2), ("lesion", 2)):
        config = for_target(PropagationConfig(), target)
        cleaned = clean_mask(mask, config.largest_component, config.fill_holes)
        from scipy import ndimage
        assert ndimage.label(cleaned)[1] == parts, target
    assert single_part_target("spleen") and not single_part_target("colon")
    # bones by name (a box alone makes them a CT threshold): not the spinal cord, nor a distribution of anything
    assert all(bone_target(n) for n in ("mandible", "rib_left_3", "vertebrae_C2", "Femur R", "hip_left"))
    assert not any(bone_target(n) for n in ("spinal_cord", "parotid_left", "brainstem", "distribution", "liver"))
    assert for_target(PropagationConfig(largest_component=True), "colon").largest_component is True  # explicit wins


def test_a_dicom_series_with_a_missing_slice_is_refused(ct_dicom: Path, tmp_path: Path) -> None:
    import shutil

    from medlsam_training.errors import CorruptFileError

    files = sorted((ct_dicom / "dicom").iterdir())
    series = tmp_path / "series"
    series.mkdir()
    for f in files:
        shutil.copy(f, series / f.name)
    read_volume(series)  # complete: fine
    reference = read_volume(ct_dicom / "dicom")
    # drop the slice at the middle position (files are not named in slice order)
    z = {f: float(sitk.ReadImage(str(f)).GetOrigin()[2]) for f in series.iterdir()}
    middle = sorted(z, key=z.get)[len(z) // 2]
    middle.unlink()
    with pytest.raises(CorruptFileError, match="unevenly spaced.*a slice is missing"):
        read_volume(series)
    assert reference.size[2] == len(files)


def test_dicom_files_without_extension_are_found_in_a_dataset(ct_dicom: Path, tmp_path: Path) -> None:
    import shutil

    from medlsam_training.volumes.datasets import find_cases

    patient = tmp_path / "data" / "patient_7"
    shutil.copytree(ct_dicom / "dicom", patient)
    assert not any(p.suffix.lower() == ".dcm" for p in patient.iterdir())
    cases = find_cases(tmp_path / "data")
    assert [(c.name, c.image) for c in cases] == [("patient_7", patient)]


def test_slice_preparation_matches_the_references_on_a_non_square_slice() -> None:
    import torch

    from medlsam_training.segmentation.segmenters import Segmenter, _minmax, _sam_normalize

    rng = np.random.default_rng(0)
    slice_unit = rng.uniform(0.3, 0.9, (100, 160)).astype(np.float32)  # no pixel at 0: padding must not matter
    lite = Segmenter(torch.nn.Identity(), 256, _minmax, "lite", "cpu")
    frame = lite.frame(100, 160)
    t = lite.prepare(frame, slice_unit)
    h, w = frame.resized
    assert (h, w) == (160, 256)
    # LiteMedSAM: resize longest side, min-max normalize the image, then pad with 0
    assert float(t[:, :h, :w].min()) == 0.0 and abs(float(t[:, :h, :w].max()) - 1.0) < 1e-6
    assert float(t[:, h:, :].abs().max()) == 0.0
    # SAM: mean/std normalization of the image, then zero padding (SAM's preprocess order)
    sam = Segmenter(torch.nn.Identity(), 1024, _sam_normalize, "sam", "cpu")
    ts = sam.prepare(sam.frame(100, 160), slice_unit)
    resized = torch.nn.functional.interpolate(torch.from_numpy(slice_unit)[None, None], size=(640, 1024),
                                              mode="bilinear", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(ts[:, :640, :], _sam_normalize(resized.expand(3, -1, -1)))
    assert float(ts[:, 640:, :].abs().max()) == 0.0
    # MedSAM: a plain resize to 1024 x 1024, boxes scaled per axis
    medsam = Segmenter(torch.nn.Identity(), 1024, _minmax, "medsam", "cpu")
    medsam.stretch = True
    f = medsam.frame(100, 160)
    tm = medsam.prepare(f, slice_unit)
    assert tm.shape == (3, 1024, 1024) and float(tm[:, -1, :].min()) >= 0.0 and float(tm.min()) == 0.0
    np.testing.assert_allclose(f.box_to_model([0, 0, 159, 99]), [0, 0, 1024, 1024])
    np.testing.assert_allclose(f.box_from_model(f.box_to_model([10, 20, 30, 40])), [10, 20, 30, 40])


def test_the_plugin_does_not_hide_triton_from_other_plugins() -> None:
    import subprocess
    import sys

    code = "import medlsam_napari, sys; print(sys.modules.get('triton', 'absent') is not None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True", out.stderr


def test_the_embedding_cache_is_bounded_on_disk_and_in_memory(tmp_path: Path, monkeypatch) -> None:
    import time

    import torch

    from medlsam_training.segmentation.embedding_cache import SliceEmbeddings, prune_cache
    from medlsam_training.segmentation.segmenters import Segmenter, _minmax

    class TinyEncoder(torch.nn.Module):  # a real encoder's interface, small enough for a unit test
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool2d(x, 16)

    model = torch.nn.Module()
    model.image_encoder = TinyEncoder()
    seg = Segmenter(model, 64, _minmax, "tiny", "cpu", encoder_backend="torch")
    vol = np.random.default_rng(0).random((30, 40, 50), dtype=np.float32)
    monkeypatch.setenv("MEDLSAM_CACHE_SLICES", "10")
    emb = SliceEmbeddings(vol, seg, tmp_path / "cache")
    emb.ensure(range(30))
    assert len(emb._memory) == 10 and seg.encoder_calls == 30
    first = emb.get(0)  # evicted from RAM, read back from disk, not encoded again
    assert seg.encoder_calls == 30 and first.shape == (3, 4, 4)

    for i in range(3):  # three older volumes' folders of 1 kB each
        old = tmp_path / "cache" / f"old{i}"
        old.mkdir()
        (old / "slice_0000.npy").write_bytes(b"x" * 1000)
        os.utime(old / "slice_0000.npy", (time.time() - 1000 + i, time.time() - 1000 + i))
    removed = prune_cache(tmp_path / "cache", max_bytes=emb_bytes(tmp_path / "cache" / emb.key) + 1500,
                          keep=emb.key)
    assert [p.name for p in removed] == ["old0", "old1"]  # least recently used first, the open volume kept


def emb_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.npy"))


def test_installed_import_names_cannot_collide(tmp_path: Path) -> None:
    """The folders training/ and plugins/ install as medlsam_training and medlsam_plugins."""
    import subprocess
    import sys

    code = ("import importlib.util as u; import medlsam_training, medlsam_plugins, medlsam_napari; "
            "print(u.find_spec('training') is None, u.find_spec('plugins') is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_queries_with_one_file_name_are_named_after_their_folders_or_refused(tmp_path: Path) -> None:
    """Two 'image.nii.gz' from two case folders are two queries (the second was silently skipped as 'nothing to
    do'); names that still collide are one line before any work."""
    blob = np.zeros((4, 8, 8))
    blob[1:3, 2:6, 2:6] = 1
    for case in ("phantom_001", "phantom_002"):
        (tmp_path / case).mkdir()
        _label_file(tmp_path / case / "image.nii.gz", blob)
    a, b = tmp_path / "phantom_001" / "image.nii.gz", tmp_path / "phantom_002" / "image.nii.gz"
    cases = query_cases([a, b])
    assert [(c.name, c.image) for c in cases] == [("phantom_001", a), ("phantom_002", b)]
    assert [c.name for c in query_cases([a, a])] == ["image"]  # one file given twice is one query
    for d in ("x/case", "y/case"):
        (tmp_path / d).mkdir(parents=True)
        _label_file(tmp_path / d / "image.nii.gz", np.zeros((4, 8, 8)))
    tpl = tmp_path / "t.json"
    r = runner.invoke(app, ["extreme-points", str(a), str(a), "--target", "t", "--value", "1", "--out", str(tpl)])
    assert r.exit_code == 0, r.output
    clash = ["-q", str(tmp_path / "x/case/image.nii.gz"), "-q", str(tmp_path / "y/case/image.nii.gz")]
    r = runner.invoke(app, ["segment", "-t", str(tpl), *clash, "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "both be written as case.nii.gz" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_evaluate_pairs_nnunet_channel_names_and_a_labels_folder(tmp_path: Path) -> None:
    """'segment -q imagesTr/pt_9_0000.nii.gz' writes pt_9_0000.nii.gz: evaluate pairs it with case pt_9, from the
    dataset folder or its labelsTr/ alone, names the targets from the run's labels.json, scores only the run's."""
    gt = np.zeros((8, 20, 20), np.uint8)
    gt[2:6, 2:8, 2:8] = 1
    gt[2:6, 12:18, 12:18] = 7
    root = tmp_path / "data"
    for d in ("imagesTr", "labelsTr"):
        (root / d).mkdir(parents=True)
    _label_file(root / "imagesTr" / "pt_9_0000.nii.gz", gt)
    _label_file(root / "labelsTr" / "pt_9.nii.gz", gt)
    pred = tmp_path / "masks"
    pred.mkdir()
    _label_file(pred / "pt_9_0000.nii.gz", np.where(gt == 7, 7, 0))
    write_json_atomic({"7": "mandible"}, pred / "labels.json")
    write_json_atomic({"pt_9_0000": {"status": "done", "targets": {"mandible": {"label": 7}}}},
                      pred / "medlsam_results.json")
    for where in (root, root / "labelsTr"):
        r = runner.invoke(app, ["evaluate", "--pred", str(pred), "--gt", str(where)])
        assert r.exit_code == 0, r.output
        rows = [line for line in r.output.splitlines() if line.count("│") > 4 and "pt_9" in line]
        assert len(rows) == 1 and "mandible" in rows[0] and "1.000" in rows[0], r.output  # label 1 not targeted


def test_template_files_work_from_any_folder_and_errors_name_them(tmp_path: Path, monkeypatch) -> None:
    """extreme-points given a relative path stores it absolute; a template volume that is gone is an error naming
    the template file."""
    blob = np.zeros((4, 8, 8))
    blob[1:3, 2:6, 2:6] = 1
    (tmp_path / "data").mkdir()
    _label_file(tmp_path / "data" / "image.nii.gz", blob)
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["extreme-points", "data/image.nii.gz", "data/image.nii.gz", "--target", "t",
                            "--value", "1", "--out", "t.json"])
    assert r.exit_code == 0, r.output
    # one unwrapped line that says what was written, no '0 slabs'
    assert len(r.output.strip().splitlines()) == 1 and "slabs" not in r.output, r.output
    assert "the six extreme points of t (label 1)" in r.output, r.output
    stored = json.loads((tmp_path / "t.json").read_text())
    assert stored["template"]["path"] == str(tmp_path / "data" / "image.nii.gz")
    assert stored["mask"]["path"] == str(tmp_path / "data" / "image.nii.gz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = runner.invoke(app, ["localize", "-t", str(tmp_path / "t.json"), "-q", str(tmp_path / "data"),
                            "--out", "boxes.json", "--localizer", "registration"])
    assert "cannot be read" not in r.output, r.output  # found from another working folder
    (tmp_path / "data" / "image.nii.gz").rename(tmp_path / "data" / "moved.nii.gz")
    r = runner.invoke(app, ["localize", "-t", str(tmp_path / "t.json"), "-q", str(tmp_path / "data"),
                            "--out", "boxes.json"])
    assert r.exit_code == 2 and str(tmp_path / "t.json") in r.output and "template volume" in r.output, r.output


def test_ctrl_c_on_segment_says_how_far_it_got_and_how_to_resume(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C during the second volume: exit 130, the first mask kept, one line saying what to do."""
    import medlsam_training.localization.localize as localize

    blob = np.zeros((4, 8, 8))
    blob[1:3, 2:6, 2:6] = 1
    for case in ("a", "b", "template"):
        (tmp_path / "data" / case).mkdir(parents=True)
        _label_file(tmp_path / "data" / case / "image.nii.gz", blob)
    t = tmp_path / "data" / "template" / "image.nii.gz"
    r = runner.invoke(app, ["extreme-points", str(t), str(t), "--target", "t", "--value", "1",
                            "--out", str(tmp_path / "t.json")])
    assert r.exit_code == 0, r.output

    class Interrupted:  # the localizer of a run the user stops with Ctrl-C during its second volume
        calls = 0

        def localize(self, query, templates):
            Interrupted.calls += 1
            if Interrupted.calls == 2:
                raise KeyboardInterrupt
            return []

    monkeypatch.setattr(localize, "make_localizer", lambda *a, **k: Interrupted())
    out = tmp_path / "out"
    r = runner.invoke(app, ["segment", "-t", str(tmp_path / "t.json"), "-q", str(tmp_path / "data" / "a"),
                            "-q", str(tmp_path / "data" / "b"), "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 130, r.output
    assert "interrupted: 1 of 2 done; rerun the same command to resume" in r.output, r.output
    assert (out / "a.nii.gz").is_file() and not (out / "b.nii.gz").exists()


def test_evaluate_says_not_contoured_and_leaves_it_out_of_the_mean(openkbp: Path, tmp_path: Path) -> None:
    """OpenKBP's pt_206 has no mandible contour: nobody drew it, so a predicted mandible is not scored Dice 0 (it
    pulled the mean down) unless the user says that a missing label means an absent organ."""
    from medlsam_training.volumes.io import read_label, write_mask

    truth = read_label(openkbp / "labelsTr" / "pt_206.nii.gz")
    assert 7 not in np.unique(truth.array)
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "pt_206.nii.gz").symlink_to(openkbp / "labelsTr" / "pt_206.nii.gz")
    pred = truth.array.copy()
    pred[pred == 2] = 0  # the cord missed: still scored, Dice 0
    z = truth.array.shape[0] // 2
    pred[z - 3:z + 3, 40:60, 40:60] = 7  # a mandible where nobody drew one
    write_mask(pred, truth, tmp_path / "pred" / "pt_206.nii.gz")
    r = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                            "--labels", "1,2,7"])
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if line.count("│") > 4]
    [i] = [k for k, line in enumerate(rows) if line.split("│")[1].strip() == "pt_206" and line.split("│")[2].strip()
           == "7"]
    cells = [" ".join(c.strip() for c in col) for col in zip(*(line.split("│") for line in rows[i:i + 3]))]
    assert cells[4].startswith("not contoured") and cells[8].startswith("2400 vox predicted"), cells
    means = {line.split("│")[2].strip(): line for line in rows if "mean" in line.split("│")[1]}
    assert set(means) == {"1", "2"} and "0.000" in means["2"] and "1.000" in means["1"]
    assert means["1"].split("│")[5].strip() == "0.0"  # HD95 in the mean rows too
    r = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                            "--labels", "1,2,7", "--missing-is-absent"])
    rows = [line for line in r.output.splitlines() if line.count("│") > 4]
    assert any(line.split("│")[2].strip() == "7" and "0.000" in line for line in rows), r.output
