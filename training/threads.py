"""The one thread policy of every entry point (the ``medlsam`` commands, the docks' jobs, a Dask worker): how many
threads torch, SimpleITK and ITK may take.

torch's default takes every core the machine has.  Where other processes already keep cores busy, its OpenMP threads
wait on each other at every operation for a core that is not free: 50 training steps took 85 s with torch's default
against 12.6 s with one thread at load 3.4 on two cores (issue 42; ``benchmarks/threads.py``,
docs/benchmarks.md section 12).  So a process takes the cores that are free (its affinity less the cores busy over
the 0.2 s before it starts, at least one), or one each where several processes share the machine (Dask workers).
``MEDLSAM_THREADS`` (or ``OMP_NUM_THREADS``) sets the number explicitly.
"""

from __future__ import annotations

import os
import sys
import time

ENV = "MEDLSAM_THREADS"
_applied: int | None = None


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cores(seconds: float = 0.2) -> float:
    """How many cores other processes keep busy now: the machine's busy share over ``seconds`` (``/proc/stat``),
    else the 1-minute load average (which lags: right after a heavy command it still counts it)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return sum(values), values[3] + (values[4] if len(values) > 4 else 0)  # all, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
        return os.cpu_count() * (1.0 - (idle1 - idle0) / max(total1 - total0, 1))
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """The cores not kept busy by other processes: ``cores`` less ``load`` (default :func:`busy_cores`), rounded,
    at least 1."""
    cores = machine_cores() if cores is None else cores
    load = busy_cores() if load is None else load
    return max(1, min(cores, int(cores - load + 0.5)))


def explicit_threads() -> int | None:
    """The number the user set (``MEDLSAM_THREADS``, else ``OMP_NUM_THREADS``), None when neither is a number > 0."""
    for name in (ENV, "OMP_NUM_THREADS"):
        try:
            value = int(os.environ.get(name, ""))
        except ValueError:
            continue
        if value > 0:
            return value
    return None


def choose_threads(processes: int = 1) -> int:
    """Threads for one of ``processes`` processes sharing this machine: the user's number, else the free cores
    divided among them (at least one)."""
    return explicit_threads() or max(1, free_cores() // max(1, processes))


def apply_thread_policy(threads: int | None = None, processes: int = 1) -> int:
    """Set torch's, SimpleITK's and ITK's thread counts to ``threads`` (default :func:`choose_threads`) and return
    it.  ITK's Python wrapping loads lazily: when it is not loaded yet its environment variable carries the number."""
    global _applied
    n = int(threads) if threads else choose_threads(processes)
    import SimpleITK as sitk
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n)
    if "itk" in sys.modules:
        import itk

        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(n)
    _applied = n
    return n


def applied_threads() -> int | None:
    """What the last :func:`apply_thread_policy` set in this process (None before it ran)."""
    return _applied
