"""SAM propagation with the embedded LiteMedSAM weights: accuracy, caching, geometry, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medlsam_training.errors import DimensionError
from medlsam_training.metrics import binary_metrics
from medlsam_training.segmentation.embedding_cache import content_key
from medlsam_training.segmentation.propagate import PropagationConfig, VolumeSegmenter
from medlsam_training.segmentation.segmenters import CheckpointError, load_segmenter
from medlsam_training.volumes.boxes import Box3D
from medlsam_training.volumes.io import read_image_label
from medlsam_training.volumes.volume import Volume


@pytest.fixture(scope="module")
def lite():
    return load_segmenter("litemedsam", device="cpu")


@pytest.fixture(scope="module")
def dicom_ct(ct_dicom: Path):
    return read_image_label(ct_dicom / "dicom", ct_dicom / "label.nii.gz")


@pytest.mark.slow
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


@pytest.mark.slow
def test_onnx_runtime_encoder_matches_pytorch(lite) -> None:
    x = torch.rand(2, 3, 256, 256)
    fast = lite.encode(x)  # ONNX Runtime on CPU (exported once into the cache)
    assert lite._onnx_encoder() is not None
    with torch.inference_mode():
        ref = lite.model.image_encoder(x)
    assert torch.allclose(fast, ref, atol=1e-4)


def test_review_prompts_past_the_slice_edge_are_clipped_not_wrapped(lite, dicom_ct) -> None:
    image, label = dicom_ct
    vs = VolumeSegmenter(image, lite)
    z = image.array.shape[0] // 2
    liver = label.array[z] == 5
    ys, xs = np.nonzero(liver)
    inside = np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)
    past_left = inside.copy()
    past_left[0] = -40.0  # dragged past the left edge: must mean "from column 0", not wrap to the right side
    clipped = inside.copy()
    clipped[0] = 0.0
    np.testing.assert_array_equal(vs.segment_volume_slice(z, past_left), vs.segment_volume_slice(z, clipped))
    w, h = image.array.shape[2], image.array.shape[1]
    past_right = np.array([inside[0], inside[1], w + 30.0, h + 30.0])  # used to raise IndexError
    assert vs.segment_volume_slice(z, past_right).shape == liver.shape
    with pytest.raises(ValueError, match="outside"):
        vs.segment_volume_slice(z, np.array([-50.0, -50.0, -10.0, -10.0]))
    # a point outside the slice is ignored, the ones inside are used
    pts = np.array([[xs.mean(), ys.mean()], [-5.0, 10.0]])
    np.testing.assert_array_equal(vs.segment_volume_slice(z, inside, pts, np.array([1, 1])),
                                  vs.segment_volume_slice(z, inside, pts[:1], np.array([1])))
