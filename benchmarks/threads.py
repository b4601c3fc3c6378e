"""Training beside busy processes: the thread policy (training/threads.py) against torch's default of every core.

What a user runs, ``medlsam finetune --project P --steps 50 --no-presegment``, as its own process on a small real
project (three OpenKBP train-pats reviewed, four organs; linked, never copied), in two arms:

* ``policy``: the product as it is (the free cores: the machine's less the 1-minute load average, at least one);
* ``every core``: ``MEDLSAM_THREADS`` set to the machine's cores, what torch's default did before the policy.

Each arm runs on the idle machine and beside ``--busy N`` processes that keep a core each busy (a pure-Python loop,
started a minute ahead so that the load average has seen them).  Printed per run: wall and CPU seconds, the load
average when it started, the threads it took.  With ``--templates DIR`` (the K = 5 templates of
``benchmarks/session.py --part templates``) the run is measured the same way: ``medlsam segment`` of one
``validation-pats`` patient (``--query``).

    .venv/bin/python benchmarks/threads.py                    # ~5 min on 2 cores
    .venv/bin/python benchmarks/threads.py --templates results/session/templates_k5/templates   # + the run, ~12 min
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HN_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct_hn_openkbp"
ORGANS = {"brainstem": 1, "parotid_right": 3, "parotid_left": 4, "mandible": 7}
REVIEWED = ("pt_1", "pt_2", "pt_4")  # train-pats with the four organs contoured
MEDLSAM = Path(sys.executable).with_name("medlsam")


def make_project(folder: Path, data: Path) -> Path:
    import numpy as np

    from medlsam_training.project.folder import Project
    from medlsam_training.volumes.io import read_label, read_volume, write_mask

    folder.mkdir(parents=True, exist_ok=True)
    for name in REVIEWED:
        link = folder / f"{name}.nii.gz"
        if not link.exists():
            link.symlink_to(data / "imagesTr" / f"{name}_0000.nii.gz")
    project = Project.open(folder)
    for t, v in ORGANS.items():
        if all(x.name != t for x in project.targets):
            project.add_target(t, v)
    for name in REVIEWED:
        image = read_volume(project.volume_path(name))
        lab = read_label(data / "labelsTr" / f"{name}.nii.gz", image).array
        mask = np.where(np.isin(lab, list(ORGANS.values())), lab, 0).astype(np.uint8)
        project.set_status(name, "segmented", write_mask(mask, image, project.mask_path(name)))
        project.mark_reviewed(name)
    return folder


def _spin() -> None:
    while True:
        pass


def run_once(command: list[str], env_threads: int | None) -> dict:
    """One ``medlsam`` command as its own process: wall and CPU seconds, the load average when it started."""
    env = dict(os.environ)
    env.pop("MEDLSAM_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)
    if env_threads:
        env["MEDLSAM_THREADS"] = str(env_threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run([str(MEDLSAM), *command], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {out.stderr or out.stdout}")
    return {"wall_s": round(wall, 1), "cpu_s": round((after.ru_utime - before.ru_utime)
                                                     + (after.ru_stime - before.ru_stime), 1),
            "load_at_start": round(load, 2)}


def main() -> None:
    from medlsam_training.threads import choose_threads, machine_cores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HN_DATA)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the loaded runs")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds the busy processes run first")
    parser.add_argument("--templates", type=Path, default=None, help="extreme-points files: also time the run")
    parser.add_argument("--query", default="pt_201", help="the validation-pats patient the run segments")
    args = parser.parse_args()
    cores = machine_cores()
    work = Path(tempfile.mkdtemp(prefix="threads-"))
    project = make_project(work / "project", args.data)

    def train() -> list[str]:
        (project / "models" / "slicenet.pt").unlink(missing_ok=True)  # each run starts afresh, never resumed
        return ["finetune", "--project", str(project), "--steps", str(args.steps), "--no-presegment", "--device",
                "cpu"]

    def segment() -> list[str]:
        shutil.rmtree(work / "masks", ignore_errors=True)
        return ["segment", "-t", *map(str, sorted(args.templates.glob("*.json"))), "-q",
                str(args.data / "imagesTr" / f"{args.query}_0000.nii.gz"), "--out", str(work / "masks"),
                "--device", "cpu"]

    commands = [("finetune", train)] + ([("segment", segment)] if args.templates else [])
    rows = []
    for condition in ("idle", "loaded"):
        spinners = []
        if condition == "loaded":
            spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
            for p in spinners:
                p.start()
            time.sleep(args.warmup)
        try:
            for _ in range(args.repeats):
                for what, command in commands:
                    for arm, threads in (("policy", None), ("every core", cores)):
                        chosen = threads or choose_threads()
                        row = {"command": what, "condition": condition, "arm": arm, "threads": chosen,
                               **run_once(command(), threads)}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
        finally:
            for p in spinners:
                p.terminate()
            for p in spinners:
                p.join()
    print(f"device: CPU ({platform.processor() or platform.machine()}, {cores} cores), {args.steps} steps, "
          f"busy processes when loaded: {args.busy}")
    print("| command | condition | arm | threads | wall s | CPU s | load at start |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['command']} | {r['condition']} | {r['arm']} | {r['threads']} | {r['wall_s']} | {r['cpu_s']} | "
              f"{r['load_at_start']} |")


if __name__ == "__main__":
    main()
