"""Every CUDA path of the project on a GPU against the CPU: seconds, peak GPU memory, agreement with the CPU result.

    .venv/bin/python benchmarks/gpu_check.py                  # on a machine with CUDA (about 5 minutes)
    .venv/bin/python benchmarks/gpu_check.py --device cpu     # the same checks on the CPU twice (checks the script)

Without CUDA (and no ``--device``) it says so in one line and exits 0; CI never runs it.  Data: OpenKBP head-and-neck
CT from ../shared/data (templates and training volumes from ``train-pats``, the query from ``validation-pats``).
Each row runs the path through the function the product calls:

- MedLAM localization: ``make_localizer("medlam")`` on the query with two templates (mandible, brainstem);
  agreement: the largest difference of a box coordinate, voxels.
- LiteMedSAM from the box: ``pipeline.run_queries`` with point-only templates (SAM segments each target from the
  localized box, slice after slice); agreement: Dice of the two masks per target.
- Learning loop, training: ``learning.train.finetune`` for 40 steps on two volumes; agreement: the last loss.
- Learning loop, pre-segmentation: ``SliceNetPredictor`` with the CPU's checkpoint; agreement: Dice per target.
- Volume Fusion pretraining of the slice network: ``learning.train.pretrain_vf`` for 20 steps; the last loss.
- CAM slice classifier: the shipped checkpoint's presence probabilities on the query; the largest difference.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "ct_hn_openkbp"
TEMPLATES, QUERY = ("pt_1", "pt_2"), "pt_201"
TARGETS = {"brainstem": 1, "mandible": 7}


def cuda_device() -> str | None:
    import torch

    return "cuda" if torch.cuda.is_available() else None


def measure(fn: Callable[[str], object], device: str) -> tuple[object, float, float | None]:
    """(result, seconds, peak GPU memory in MB or None on the CPU)."""
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn(device)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return out, seconds, torch.cuda.max_memory_allocated() / 2**20 if cuda else None


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0


class Checks:
    """The inputs every check shares, read once."""

    def __init__(self, work: Path):
        from medlsam_training.localization.extreme_points import extreme_points_from_mask
        from medlsam_training.localization.localize import Template
        from medlsam_training.volumes.datasets import Case
        from medlsam_training.volumes.io import read_label, read_volume

        self.work = work
        self.query = read_volume(DATA / "imagesTr" / f"{QUERY}_0000.nii.gz")
        self.query_case = Case(QUERY, DATA / "imagesTr" / f"{QUERY}_0000.nii.gz")
        self.templates = []
        for name in TEMPLATES:
            image = read_volume(DATA / "imagesTr" / f"{name}_0000.nii.gz")
            label = read_label(DATA / "labelsTr" / f"{name}.nii.gz", image)
            points = [extreme_points_from_mask(t, v, image, label) for t, v in TARGETS.items()]
            self.templates.append(Template(image, points))  # points only: no mask to fuse, SAM from the box
        names = {v: t for t, v in TARGETS.items()}
        self.train_cases = [Case(n, DATA / "imagesTr" / f"{n}_0000.nii.gz", DATA / "labelsTr" / f"{n}.nii.gz", names)
                            for n in TEMPLATES]
        self.runs = 0  # each run its own folder: no embedding cache shared between the two devices
        self.cpu_checkpoint: Path | None = None

    def medlam(self, device: str) -> dict[str, list[int]]:
        from medlsam_training.localization.localize import make_localizer

        located = make_localizer("medlam", device=device).localize(self.query, self.templates)
        return {t.target: t.box.as_list() if t.box else None for t in located}

    def litemedsam(self, device: str) -> dict[str, np.ndarray]:
        from medlsam_training.localization.localize import make_localizer
        from medlsam_training.project.pipeline import run_queries
        from medlsam_training.segmentation.segmenters import load_segmenter
        from medlsam_training.volumes.io import read_label

        self.runs += 1
        out = self.work / f"sam_{self.runs}"
        results = list(run_queries([self.query_case], self.templates, make_localizer("registration"),
                                   load_segmenter("litemedsam", device=device), out,
                                   cache_dir=out / "cache", existing="overwrite"))
        assert results[0].status == "done", results[0].error
        label = read_label(out / f"{QUERY}.nii.gz", self.query, allow_empty=True).array
        return {t: label == v for t, v in TARGETS.items()}

    def slicenet_training(self, device: str) -> float:
        from medlsam_training.coreset.probe import load_slice_case
        from medlsam_training.learning.train import LearnConfig, finetune

        cases = [load_slice_case(c, list(TARGETS)) for c in self.train_cases]
        self.runs += 1
        out = self.work / f"slicenet_{self.runs}.pt"
        result = finetune(cases, list(TARGETS), out, LearnConfig(steps=40), values=list(TARGETS.values()),
                          device=device)
        if self.cpu_checkpoint is None:  # the CPU runs first: its checkpoint is what both devices predict with
            self.cpu_checkpoint = out
        return float(result.last_loss)

    def slicenet_prediction(self, device: str) -> dict[str, np.ndarray]:
        from medlsam_training.learning.train import SliceNetPredictor

        label = SliceNetPredictor(self.cpu_checkpoint, device, every_class=True).predict(self.query)  # 40 steps
        return {t: label == v for t, v in TARGETS.items()}

    def volume_fusion(self, device: str) -> float:
        from medlsam_training.coreset.probe import slice_inputs
        from medlsam_training.learning.train import LearnConfig, pretrain_vf
        from medlsam_training.volumes.io import read_volume

        volumes = [slice_inputs(read_volume(c.image)).images for c in self.train_cases]
        return float(pretrain_vf(volumes, None, LearnConfig(steps=20), device=device).last_loss)

    def cam(self, device: str) -> np.ndarray:
        from medlsam_training.cam.classifier import load_classifier, predict_presence, prepare_slices

        model, _, modality = load_classifier(ROOT / "training" / "cam" / "continue" / "hn_slice_classifier.pt",
                                             device)
        return predict_presence(model, prepare_slices(self.query, modality))


def agreement(name: str, a, b) -> str:
    if isinstance(a, dict) and a and isinstance(next(iter(a.values())), np.ndarray):
        return ", ".join(f"Dice {t} {dice(a[t], b[t]):.3f}" for t in a)
    if isinstance(a, dict):
        diffs = [max(abs(x - y) for x, y in zip(a[t], b[t])) for t in a if a[t] and b[t]]
        missing = [t for t in a if (a[t] is None) != (b[t] is None)]
        return (f"box coordinates differ by at most {max(diffs, default=0)} voxels"
                + (f"; found on one device only: {', '.join(missing)}" if missing else ""))
    if isinstance(a, np.ndarray):
        return f"largest probability difference {float(np.abs(a - b).max()):.2e}"
    return f"last loss {a:.4f} (CPU) / {b:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="the device to check against the CPU (default: cuda)")
    args = parser.parse_args()
    device = args.device or cuda_device()
    if device is None:
        print("gpu_check: no CUDA device found (torch.cuda.is_available() is False): nothing to check")
        return
    import torch

    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "CPU"
    with tempfile.TemporaryDirectory(prefix="medlsam-gpu-check-") as tmp:
        checks = Checks(Path(tmp))
        rows = []
        for label, fn in (("MedLAM localization", checks.medlam), ("LiteMedSAM from the box", checks.litemedsam),
                          ("learning loop: training, 40 steps", checks.slicenet_training),
                          ("learning loop: pre-segmentation", checks.slicenet_prediction),
                          ("Volume Fusion pretraining, 20 steps", checks.volume_fusion),
                          ("CAM slice classifier", checks.cam)):
            try:
                cpu, cpu_s, _ = measure(fn, "cpu")
                dev, dev_s, peak = measure(fn, device)
                rows.append((label, cpu_s, dev_s, peak, agreement(label, cpu, dev)))
            except Exception as exc:  # one failing path must not hide the others
                rows.append((label, None, None, None, f"FAILED: {type(exc).__name__}: {exc}"))
            print(f"{label}: done", file=sys.stderr, flush=True)
    print(f"\n#### CUDA paths on {name} against the CPU ({os.cpu_count()} cores)\n")
    print(f"| path | CPU s | {device} s | speed-up | peak GPU memory MB | agreement with the CPU |")
    print("|---|---|---|---|---|---|")
    for label, cpu_s, dev_s, peak, agree in rows:
        if cpu_s is None:
            print(f"| {label} | - | - | - | - | {agree} |")
            continue
        print(f"| {label} | {cpu_s:.1f} | {dev_s:.1f} | {cpu_s / dev_s:.1f}× | "
              f"{'-' if peak is None else f'{peak:.0f}'} | {agree} |")
    print(f"\ntorch {torch.__version__}, load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
