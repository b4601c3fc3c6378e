"""SAM propagation with the embedded LiteMedSAM weights: accuracy, caching, geometry, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.boxes import Box3D
from training.embedding_cache import content_key
from training.errors import DimensionError
from training.io import read_image_label
from training.metrics import binary_metrics
from training.propagate import PropagationConfig, VolumeSegmenter
from training.segmenters import CheckpointError, load_segmenter
from training.volume import Volume


@pytest.fixture(scope="module")
def lite():
    return load_segmenter("litemedsam", device="cpu")


@pytest.fixture(scope="module")
def dicom_ct(ct_dicom: Path):
    return read_image_label(ct_dicom / "dicom", ct_dicom / "label.nii.gz")


def test_litemedsam_segments_liver_from_oracle_box_and_cache_skips_encoder(lite, dicom_ct, tmp_path: Path) -> None:
    image, label = dicom_ct
    liver = label.array == 5
    box = Box3D.from_mask(liver)
    vs = VolumeSegmenter(image, lite, cache_dir=tmp_path)
    calls = lite.encoder_calls
    mask = vs.propagate([box], PropagationConfig(mode="wpl"))
    assert mask.shape == liver.shape
    assert binary_metrics(mask, liver, image.spacing_zyx)["dice"] > 0.8
    assert lite.encoder_calls - calls == box.shape[2]  # only the slices inside the box were encoded

    # A new session on the same volume reads every embedding from disk: the encoder never runs.
    again = VolumeSegmenter(image, lite, cache_dir=tmp_path)
    calls = lite.encoder_calls
    mask2 = again.propagate([box], PropagationConfig(mode="mask"))
    assert lite.encoder_calls == calls
    assert binary_metrics(mask2, liver, image.spacing_zyx)["dice"] > 0.8


def test_cache_key_changes_with_content_and_backend(lite) -> None:
    unit = np.random.default_rng(0).random((3, 16, 16), dtype=np.float32)
    key = content_key(unit, lite)
    edited = unit.copy()
    edited[1, 2, 3] += 0.01
    assert content_key(edited, lite) != key

    class Other:
        cache_id = "sam-vit_b-deadbeef"

    assert content_key(unit, Other()) != key


def test_sam_vit_checkpoint_type_is_read_from_its_shapes(tmp_path: Path) -> None:
    from segment_anything import sam_model_registry

    path = tmp_path / "sam_vit_b_random.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    seg = load_segmenter(path, device="cpu")
    assert seg.name == "sam-vit_b" and seg.input_size == 1024
    medsam = tmp_path / "medsam_vit_b.pth"
    path.rename(medsam)
    assert load_segmenter(medsam, device="cpu").name == "medsam-vit_b"


def test_bad_checkpoints_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_segmenter(tmp_path / "absent.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x04garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        load_segmenter(corrupt)
    unknown = tmp_path / "unknown.pth"
    torch.save({"layer.weight": torch.zeros(3, 3)}, unknown)
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_segmenter(unknown)


def test_bad_boxes_and_2d_input(lite, dicom_ct) -> None:
    image, _ = dicom_ct
    vs = VolumeSegmenter(image, lite)
    with pytest.raises(ValueError, match="outside"):
        vs.propagate([Box3D((600, 600, 30), (700, 700, 40))])
    with pytest.raises(ValueError, match="empty box"):
        Box3D((10, 10, 10), (5, 20, 20))
    with pytest.raises(ValueError, match="no box"):
        vs.propagate([])
    with pytest.raises(DimensionError, match="3D"):
        Volume(np.zeros((64, 64)))


def test_onnx_runtime_encoder_matches_pytorch(lite) -> None:
    x = torch.rand(2, 3, 256, 256)
    fast = lite.encode(x)  # ONNX Runtime on CPU (exported once into the cache)
    assert lite._onnx_encoder() is not None
    with torch.inference_mode():
        ref = lite.model.image_encoder(x)
    assert torch.allclose(fast, ref, atol=1e-4)
