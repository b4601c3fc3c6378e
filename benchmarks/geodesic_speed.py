"""Speed of the 3D geodesic distance (the GSE step of CAM seeding), on random volumes of growing size.

The issue's bound is 2 s for a 128^3 volume on one core.  Timings belong here, never in a test: a test with a
wall-clock bound failed on a loaded machine.

    .venv/bin/python benchmarks/geodesic_speed.py            # prints a table (the geodesic runs on one core)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from medlsam_training.cam.geodesic import geodesic_distance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,96,128", help="edge lengths of the cubic volumes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=1, help="raster-scan passes (seeding uses 2)")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load:.2f}")
    print("| size | iterations | median s | min s |\n|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in (int(v) for v in args.sizes.split(",")):
        image = rng.normal(size=(n, n, n)).astype(np.float32)
        seeds = np.zeros(image.shape, bool)
        seeds[n // 2, n // 2, n // 2] = True
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            geodesic_distance(image, seeds, (2.0, 1.0, 1.0), lam=1.0, iterations=args.iterations)
            times.append(time.perf_counter() - t0)
        print(f"| {n}^3 | {args.iterations} | {np.median(times):.2f} | {min(times):.2f} |")


if __name__ == "__main__":
    main()
