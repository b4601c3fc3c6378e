"""Dataset discovery on the real shared folders and on an MSD-style layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medlsam_training.errors import DatasetError
from medlsam_training.volumes.datasets import find_cases, read_label_names
from medlsam_training.volumes.io import write_volume
from medlsam_training.volumes.volume import Volume


def test_shared_ct_cases_with_label_names(shared_data: Path) -> None:
    cases = {c.name: c for c in find_cases(shared_data / "ct", require_labels=True)}
    assert set(cases) == {"ts_example", "ts_dicom_abdomen", "ts_aorta_crop", "lidc_0001_chest"}
    assert cases["ts_example"].label_value("liver") == 5
    assert cases["ts_dicom_abdomen"].image.name == "dicom"
    assert cases["ts_aorta_crop"].label_names == {1: "aorta"}
    image, label = cases["ts_dicom_abdomen"].load()
    assert image.geometry.is_close(label.geometry)


def test_flat_pairs_and_unlabelled(shared_data: Path) -> None:
    tumours = find_cases(shared_data / "mr" / "brain_tumour")
    assert [c.name for c in tumours] == ["brain1", "brain2"]
    assert all(c.label is not None for c in tumours)
    with pytest.raises(DatasetError, match="found no"):
        find_cases(shared_data / "ct_unlabelled", require_labels=True)


def test_msd_layout_with_dataset_json(tmp_path: Path) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for case in ("liver_0", "liver_1"):
        write_volume(Volume(np.zeros((4, 5, 6), np.int16)), tmp_path / "imagesTr" / f"{case}_0000.nii.gz")
        write_volume(Volume(np.ones((4, 5, 6), np.uint8)), tmp_path / "labelsTr" / f"{case}.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    cases = find_cases(tmp_path, require_labels=True)
    assert [c.name for c in cases] == ["liver_0", "liver_1"]
    assert cases[0].label_names == {1: "liver"}


def test_bad_label_name_map(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text("{not json")
    with pytest.raises(DatasetError, match="labels.json"):
        read_label_names(tmp_path / "labels.json")
