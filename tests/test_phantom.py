"""The synthetic phantom is deterministic, varies by seed, and looks like CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medlsam_training.volumes.datasets import find_cases
from medlsam_training.volumes.phantom import LABEL_NAMES, make_phantom, write_phantom_dataset


def test_same_seed_same_phantom_other_seed_other_patient() -> None:
    a, b, c = make_phantom(3), make_phantom(3), make_phantom(4)
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.label.array, b.label.array)
    assert not np.array_equal(a.label.array, c.label.array)


def test_phantom_organs_have_ct_intensities() -> None:
    ph = make_phantom(0)
    img, lab = ph.image.array, ph.label.array
    assert img.dtype == np.int16 and lab.dtype == np.uint8
    assert set(np.unique(lab)) == {0, *LABEL_NAMES}
    median = {name: float(np.median(img[lab == v])) for v, name in LABEL_NAMES.items()}
    assert 80 < median["liver"] < 130
    assert 140 < median["kidney_left"] < 200 and 140 < median["aorta"] < 200
    assert median["spine"] > 200
    assert img[:, :8, :8].mean() < -950  # air around the body, in the field-of-view corners
    liver_ml = (lab == 1).sum() * np.prod(ph.image.spacing) / 1000
    assert 800 < liver_ml < 2500


def test_phantom_dataset_is_a_readable_case_folder(tmp_path: Path) -> None:
    write_phantom_dataset(tmp_path, n=2, size=(64, 56, 24))
    cases = find_cases(tmp_path, require_labels=True)
    assert [c.name for c in cases] == ["phantom_000", "phantom_001"]
    image, label = cases[0].load()
    assert image.size == (64, 56, 24) and cases[0].label_value("spleen") == 2
    assert label.geometry.is_close(image.geometry)
