"""Throughput of batch segmentation on a Dask cluster against one process, on head-and-neck CT.

K = 5 templates per organ from ``train-pats`` (those of ``benchmarks/session.py``), the first ``--volumes``
recommended ``validation-pats`` patients, the product's defaults (atlas, fused masks).  Runs, each into a fresh
folder: one process with one thread (for the registrations and the network), one process with the default threads
(the CLI's serial run), and local clusters of 1 and 2 (or ``--workers``) worker processes of one thread each.  Every
run goes through ``pipeline.run_queries``, the function ``medlsam segment`` calls, and must write the same masks
byte for byte.

    .venv/bin/python benchmarks/scale.py --volumes 10          # ~25 min on 2 cores

Prints volumes per minute, the speed-up against the one-thread process, the peak resident memory of each worker
process (from the operating system), and the cluster's overhead on one worker.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from session import HN_DATA, make_templates, split  # noqa: E402

from medlsam_training.cluster import open_engine  # noqa: E402
from medlsam_training.localization.localize import load_templates, make_localizer  # noqa: E402
from medlsam_training.project.pipeline import run_queries  # noqa: E402
from medlsam_training.segmentation.segmenters import load_segmenter  # noqa: E402
from medlsam_training.volumes.datasets import Case  # noqa: E402


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (its own address space's; ru_maxrss would carry the parent's
    peak into a spawned worker)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(name: str, cases, templates, out: Path, threads: int | None, workers: int | None) -> dict:
    import torch

    shutil.rmtree(out, ignore_errors=True)
    segmenter = load_segmenter("litemedsam", device="cpu")
    localizer = make_localizer("atlas", **({"workers": threads} if threads else {}))
    torch_threads = torch.get_num_threads()
    if threads and not workers:  # one thread means one for the network too, as each worker has
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with open_engine(workers, None, "atlas", "litemedsam", "cpu") as engine:
        results = list(run_queries(cases, templates, localizer, segmenter, out, engine=engine))
        memory = sorted(engine.client.run(peak_rss_mb).values()) if engine is not None else [peak_rss_mb()]
    wall = time.perf_counter() - t0
    torch.set_num_threads(torch_threads)
    assert all(r.status == "done" for r in results), [(r.name, r.error) for r in results]
    masks = {p.name: p.read_bytes() for p in out.glob("*.nii.gz")}
    print(f"{name}: {wall:.0f} s", flush=True)
    return {"name": name, "wall": wall, "memory": memory, "masks": masks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=HN_DATA)
    parser.add_argument("--templates", type=Path, default=Path("results/session/templates_k5/templates"))
    parser.add_argument("--out", type=Path, default=Path("results/scale"))
    args = parser.parse_args()
    files = make_templates(args.data, 5, args.templates.resolve())
    templates = load_templates(files)
    cases = [Case(f"{q}_0000", args.data / "imagesTr" / f"{q}_0000.nii.gz")
             for q in split(args.data, "validation-pats")[: args.volumes]]
    runs = [run("one process, 1 thread", cases, templates, args.out / "serial1", 1, None),
            run(f"one process, {min(4, os.cpu_count() or 1)} threads (the CLI's serial run)", cases, templates,
                args.out / "serial", None, None),
            run("Dask, 1 worker x 1 thread", cases, templates, args.out / "w1", 1, 1),
            run(f"Dask, {args.workers} workers x 1 thread", cases, templates, args.out / f"w{args.workers}", 1,
                args.workers)]
    base = runs[0]
    print(f"\n#### {len(cases)} head-and-neck volumes, K = 5 templates per organ, atlas defaults\n")
    print("| run | wall s | volumes / min | speed-up vs 1 thread | peak memory per process (MB) | same masks |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['name']} | {r['wall']:.0f} | {60 * len(cases) / r['wall']:.2f} | {base['wall'] / r['wall']:.2f}"
              f" | {', '.join(f'{m:.0f}' for m in r['memory'])} | {r['masks'] == base['masks']} |")
    print(f"\ncluster overhead on 1 worker: {100 * (runs[2]['wall'] / base['wall'] - 1):+.1f} % against one process "
          "with one thread")
    print(f"device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
          f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
