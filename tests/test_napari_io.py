"""The napari reader places volumes in patient space; the writer restores the source geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from medlsam_napari._reader import get_reader
from medlsam_napari._sample_data import make_phantom_sample
from medlsam_napari._writer import write_labels
from medlsam_napari.layer_geometry import GEOMETRY_KEY
from medlsam_training.volumes.io import read_label, read_volume, write_volume


def test_manifest_commands_resolve() -> None:
    import importlib

    manifest = yaml.safe_load((Path(__file__).parents[1] / "medlsam_napari" / "napari.yaml").read_text())
    for command in manifest["contributions"]["commands"]:
        module, func = command["python_name"].split(":")
        assert callable(getattr(importlib.import_module(module), func))


def test_reader_puts_dicom_series_in_lps_space(ct_dicom: Path) -> None:
    reader = get_reader(str(ct_dicom / "dicom"))
    assert reader is not None
    (data, kwargs, kind), = reader(str(ct_dicom / "dicom"))
    assert kind == "image" and data.shape == (20, 512, 512)
    affine = kwargs["affine"]
    # Voxel (z=0, y=0, x=0) sits at the DICOM origin, listed in (z, y, x) order.
    np.testing.assert_allclose(affine[:3, 3], (-804.5, -437.51171875, -249.51171875))
    np.testing.assert_allclose(np.diag(affine)[:3], (2.0, 0.9765625, 0.9765625))
    assert kwargs["contrast_limits"] == (-160.0, 240.0)
    assert get_reader(str(ct_dicom / "labels.json")) is None


def test_label_file_opens_as_labels_layer(ct_example: Path) -> None:
    (data, kwargs, kind), = get_reader(str(ct_example / "label.nii.gz"))(str(ct_example / "label.nii.gz"))
    assert kind == "labels" and data.dtype == np.uint8


def test_writer_restores_oblique_geometry_from_metadata_or_affine(ct_example: Path, tmp_path: Path) -> None:
    ct = read_volume(ct_example / "image.nii.gz")
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = ct.with_array(ct.array, direction=(c, -s, 0, s, c, 0, 0, 0, 1), spacing=(0.8, 0.8, 2.5))
    src = write_volume(oblique, tmp_path / "oblique.nrrd")
    (data, kwargs, _), = get_reader(str(src))(str(src))
    mask = (data > 100).astype(np.uint8)
    attributes = {"metadata": kwargs["metadata"], "affine": kwargs["affine"], "scale": (1, 1, 1),
                  "translate": (0, 0, 0)}
    for name, attrs in (("from_meta.nii.gz", attributes),
                        ("from_affine.nii.gz", {**attributes, "metadata": {}})):
        (out,) = write_labels(str(tmp_path / name), mask, attrs)
        written = read_label(out)
        assert written.geometry.is_close(oblique.geometry, tol=1e-4), name
        np.testing.assert_array_equal(written.array, mask)


def test_sample_data_is_the_synthetic_phantom() -> None:
    (img, img_kwargs, k1), (lab, lab_kwargs, k2) = make_phantom_sample()
    assert (k1, k2) == ("image", "labels") and img.shape == lab.shape
    assert "SYNTHETIC" in img_kwargs["name"]
    assert lab_kwargs["metadata"]["label_names"]["1"] == "liver"
    assert GEOMETRY_KEY in lab_kwargs["metadata"]
