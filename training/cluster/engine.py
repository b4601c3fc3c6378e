"""One volume, one task on a Dask distributed cluster.

The client scatters what every task needs once to every worker (the templates with their volumes and masks, the
project's network), so a worker reads them once, not once per volume; each worker builds the localizer and the
segmenter once (:mod:`.worker`).  A worker writes its volume's mask atomically into the output folder (on a
cluster a shared filesystem), and the client merges each result into the run summary as it comes back
(``as_completed``).  A worker that dies mid-task: the scheduler runs the task again elsewhere (and a task that
raised is retried ``retries`` times); a volume is recorded as failed only when every try failed.  Ctrl-C cancels the
futures.  Temporary files of a killed worker's interrupted write are removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..datasets import Case
from ..errors import MedLSAMError

log = logging.getLogger(__name__)
#: seconds to wait for a scheduler given by address
CONNECT_TIMEOUT_S = 10


class ClusterError(MedLSAMError, ValueError):
    """The cluster cannot be used (unreachable scheduler, bad address, both options given)."""


@dataclass
class ClusterEngine:
    """A connected Dask client and what a worker needs to rebuild the models by name."""

    client: Any
    localizer: str
    segmenter: str
    device: str | None = None
    threads: int = 1  # per worker: the atlas's parallel registrations (torch too, unless OMP_NUM_THREADS is set)
    retries: int = 2

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info()["workers"])

    def run(self, cases: list[Case], templates, out_dir: Path, config, cache_dir: Path | None, existing: str,
            locked: Mapping[str, Collection[str]], network, corrected: Mapping[str, Collection[int]],
            cancelled: Callable[[], bool] | None = None) -> Iterator[tuple[Any, bool]]:
        """Each case as a task; yields (result, had a mask before) as tasks finish."""
        from distributed import as_completed

        from ..pipeline import QueryResult
        from .worker import segment_task

        shared = self.client.scatter({"templates": templates, "network": network}, broadcast=True, hash=False)
        here = Path.cwd()  # a relative query path means the same file on a worker (a shared filesystem)
        given, out_dir = Path(out_dir), Path(out_dir).resolve()
        futures = {}
        for case in cases:
            future = self.client.submit(
                segment_task, case, here, shared["templates"], shared["network"], self.localizer, self.segmenter,
                self.device, self.threads, out_dir, config, cache_dir, existing,
                sorted(locked.get(case.name, ())), sorted(corrected.get(case.name, ())), retries=self.retries,
                pure=False,
                key=f"medlsam-segment-{case.name}-{id(futures)}")
            futures[future] = case
        try:
            for future in as_completed(futures):
                case = futures[future]
                try:
                    result, had_mask = future.result()
                except Exception as exc:  # every try failed (a worker lost each time, or an unexpected error)
                    result = QueryResult(case.name, case.image, None, status="failed",
                                         error=f"{type(exc).__name__}: {exc} (every try failed)")
                    had_mask = False
                remove_partial_writes(out_dir, case.name)
                if result.output is not None:
                    result.output = given / result.output.name  # as a run in one process names it
                yield result, had_mask
                if cancelled and cancelled():
                    raise InterruptedError("cancelled")
        except (KeyboardInterrupt, InterruptedError):
            self.client.cancel(list(futures))
            for case in cases:
                remove_partial_writes(out_dir, case.name)
            raise


def remove_partial_writes(out_dir: Path, name: str) -> None:
    """The temporary files of an interrupted atomic write of this case (a worker killed while writing)."""
    for folder, stem in ((out_dir, f"{name}.nii.gz"), (out_dir / ".votes", f"{name}.npz")):
        for tmp in folder.glob(f".{stem}.*.tmp*"):
            tmp.unlink(missing_ok=True)


@contextmanager
def open_engine(workers: int | None, scheduler: str | None, localizer: str, segmenter: str,
                device: str | None = None) -> Iterator[ClusterEngine | None]:
    """``--workers N``: a local cluster of N worker processes (one thread each); ``--scheduler ADDRESS``: the
    cluster behind it; neither: None (this process does the work, as always)."""
    if workers and scheduler:
        raise ClusterError("give --workers (a cluster on this machine) or --scheduler (an existing one), not both")
    if not workers and not scheduler:
        yield None
        return
    if workers is not None and workers < 1:
        raise ClusterError(f"--workers {workers}: at least 1 worker is needed")
    from distributed import Client, LocalCluster

    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.ERROR)
            client = Client(cluster)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        raise ClusterError(f"cannot reach a Dask scheduler at {scheduler}: {str(exc).splitlines()[0][:200]}") \
            from None
    try:
        yield ClusterEngine(client, str(localizer), str(segmenter), device)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
