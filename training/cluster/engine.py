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
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MedLSAMError
from ..options import LocalizerName, SegmenterName
from ..volumes.datasets import Case

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
        from ..project.pipeline import QueryResult
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
        for case, value, error in self._finished(futures, cancelled,
                                                 lambda c: remove_partial_writes(out_dir, c.name)):
            if error is None:
                result, had_mask = value
            else:
                result, had_mask = QueryResult(case.name, case.image, None, status="failed", error=error), False
            if result.output is not None:
                result.output = given / result.output.name  # as a run in one process names it
            yield result, had_mask

    def localize(self, cases: list[Case], templates, cancelled: Callable[[], bool] | None = None
                 ) -> Iterator[tuple[Case, dict]]:
        """Each case's ``medlsam localize`` record (target -> box ..., or {"error": ...}) as tasks finish."""
        from .worker import localize_task

        shared = self.client.scatter(templates, broadcast=True, hash=False)
        here = Path.cwd()
        futures = {self.client.submit(localize_task, case, here, shared, self.localizer, self.device, self.threads,
                                      retries=self.retries, pure=False,
                                      key=f"medlsam-localize-{case.name}-{id(cases)}"): case for case in cases}
        for case, record, error in self._finished(futures, cancelled):
            yield case, record if error is None else {"error": error}

    def presegment(self, jobs: list, state: dict, tag: str, policy: str, device: str | None,
                   cancelled: Callable[[], bool] | None = None) -> Iterator[tuple[Any, tuple[str | None, float]]]:
        """The learning loop's pre-segmentation (``learning.project_loop.PresegmentJob`` each), one volume per
        task: the network's weights (``state``, version ``tag``) sent to every worker once; (job, (mask written or
        None, CPU s)) as tasks finish.  A volume that fails stops the rest as the serial run stops: tasks not yet
        started return without writing, those running finish and are yielded (their masks are on disk, so their
        statuses must be kept), then it raises.  An error is not retried (it would fail again); a worker lost
        mid-task is, by the scheduler."""
        from distributed import Event

        from .worker import STOPPED, presegment_task

        shared = self.client.scatter(state, broadcast=True, hash=False)
        stop = Event(f"medlsam-presegment-stop-{uuid.uuid4().hex}", client=self.client)
        futures = {self.client.submit(presegment_task, job, shared, tag, policy, device, stop.name, retries=0,
                                      pure=False, key=f"medlsam-presegment-{job.name}-{id(jobs)}"): job
                   for job in jobs}
        failed: list[str] = []
        for job, value, error in self._finished(futures, cancelled,
                                                lambda j: remove_partial_writes(Path(j.mask).parent, j.name)):
            if error is not None:
                stop.set()
                failed.append(f"{job.name}: {error.removesuffix(' (every try failed)')}")
            elif value[0] != STOPPED:
                yield job, value
        if failed:
            raise MedLSAMError(f"pre-segmentation failed on the cluster: {failed[0]}"
                               + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))

    def each(self, fn: Callable, jobs: list[tuple]) -> list:
        """``[fn(*job) for job in jobs]``, one task per job (a volume), results in the jobs' order; a job whose
        every try failed raises its error (light work needs no shared state: nothing is scattered)."""
        futures = self.client.map(lambda job: fn(*job), jobs, retries=self.retries, pure=False)
        try:
            return self.client.gather(futures)
        except KeyboardInterrupt:
            self.client.cancel(futures)
            raise

    def _finished(self, futures: dict, cancelled: Callable[[], bool] | None,
                  cleanup: Callable[[Case], None] | None = None) -> Iterator[tuple[Case, Any, str | None]]:
        """(case, the task's value, None) or (case, None, why every try failed) as tasks finish; on Ctrl-C or
        ``cancelled()`` the other tasks are cancelled (``cleanup`` then runs for every case) and it raises."""
        from distributed import as_completed

        try:
            for future in as_completed(futures):
                case = futures[future]
                try:
                    value, error = future.result(), None
                except Exception as exc:  # every try failed (a worker lost each time, or an unexpected error)
                    value, error = None, f"{type(exc).__name__}: {exc} (every try failed)"
                if cleanup is not None:
                    cleanup(case)
                yield case, value, error
                if cancelled and cancelled():
                    raise InterruptedError("cancelled")
        except (KeyboardInterrupt, InterruptedError):
            self.client.cancel(list(futures))
            for case in futures.values():
                if cleanup is not None:
                    cleanup(case)
            raise


def remove_partial_writes(out_dir: Path, name: str) -> None:
    """The temporary files of an interrupted atomic write of this case (a worker killed while writing)."""
    for folder, stem in ((out_dir, f"{name}.nii.gz"), (out_dir / ".votes", f"{name}.npz")):
        for tmp in folder.glob(f".{stem}.*.tmp*"):
            tmp.unlink(missing_ok=True)


@contextmanager
def open_engine(workers: int | None, scheduler: str | None, localizer: str = LocalizerName.ATLAS.value,
                segmenter: str = SegmenterName.LITEMEDSAM.value, device: str | None = None
                ) -> Iterator[ClusterEngine | None]:
    """``--workers N``: a local cluster of N worker processes (one thread each); ``--scheduler ADDRESS``: the
    cluster behind it; neither: None (this process does the work, as always).  ``localizer`` and ``segmenter``
    name the models a worker builds for ``segment`` and ``localize`` (the product's defaults unless given)."""
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
            import dask

            # Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in their workers (memory back to the system at once):
            # a volume's large arrays then cost page faults again and again, 12 % of a head-and-neck volume's time
            # on 1 worker (docs/benchmarks.md, section 10); glibc's own adaptive threshold instead
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
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
