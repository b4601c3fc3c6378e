"""Batch work over volumes on a Dask cluster (``--workers N`` on this machine, ``--scheduler ADDRESS`` for one that
exists): one volume is one task, written by its worker; the client keeps the run summary."""

from .engine import ClusterEngine, ClusterError, open_engine

__all__ = ["ClusterEngine", "ClusterError", "open_engine"]
