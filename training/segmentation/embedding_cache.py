"""Per-slice image embeddings, computed once per (volume content, window, backend) and kept on disk.

Re-prompting a slice then costs only the prompt encoder and mask decoder.  The key hashes the voxel
data itself, so an edited volume or another backend/checkpoint never reuses a stale embedding.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..progress import ProgressFn
from ..volumes.atomic import atomic_path
from .slice_prep import SliceFrame

if TYPE_CHECKING:  # the cache is handed a segmenter; it never builds one (segmenters imports this module)
    from .segmenters import Segmenter


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDLSAM_CACHE", Path.home() / ".cache" / "medlsam-napari")) / "embeddings"


def disk_limit_bytes() -> int:
    """Disk the embedding cache may use (``MEDLSAM_CACHE_GB``, default 5 GB); older volumes go first."""
    return int(float(os.environ.get("MEDLSAM_CACHE_GB", "5")) * 1e9)


def memory_slices() -> int:
    """Slice embeddings kept in RAM per volume (``MEDLSAM_CACHE_SLICES``, default 96: about 0.4 GB for
    LiteMedSAM's 4 MiB embeddings); the rest are read back from disk when needed."""
    return max(8, int(os.environ.get("MEDLSAM_CACHE_SLICES", "96")))


def prune_cache(cache_dir: Path, max_bytes: int, keep: str | None = None) -> list[Path]:
    """Delete whole volumes' embedding folders, least recently used first, until the cache fits ``max_bytes``."""
    if not cache_dir.is_dir():
        return []
    folders = []
    for d in cache_dir.iterdir():
        if d.is_dir():
            files = list(d.glob("*.npy"))
            size = sum(f.stat().st_size for f in files)
            last = max((f.stat().st_mtime for f in files), default=d.stat().st_mtime)
            folders.append((last, size, d))
    total = sum(size for _, size, _ in folders)
    removed = []
    for _, size, d in sorted(folders):
        if total <= max_bytes:
            break
        if d.name == keep:
            continue
        shutil.rmtree(d, ignore_errors=True)
        total -= size
        removed.append(d)
    return removed


#: bumped whenever slice preparation changes, so that embeddings made the old way are never reused
PREPARATION_VERSION = 2  # 2: normalize before padding; MedSAM stretched to S x S


def content_key(unit_volume: np.ndarray, segmenter: Segmenter, extra: str = "") -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str((unit_volume.shape, str(unit_volume.dtype), segmenter.cache_id, extra,
                  PREPARATION_VERSION, getattr(segmenter, "stretch", False))).encode())
    h.update(np.ascontiguousarray(unit_volume).data)
    return h.hexdigest()


class SliceEmbeddings:
    """Embeddings of the axial slices of one prepared volume (values in [0, 1], indexed [z, y, x])."""

    def __init__(self, unit_volume: np.ndarray, segmenter: Segmenter, cache_dir: Path | None = None,
                 batch_size: int = 4, extra_key: str = ""):
        self.unit = unit_volume
        self.segmenter = segmenter
        self.frame: SliceFrame = segmenter.frame(*unit_volume.shape[1:])
        self.key = content_key(unit_volume, segmenter, extra_key)
        self.folder = (Path(cache_dir) / self.key) if cache_dir is not None else None
        self.batch_size = batch_size
        # with no disk cache an evicted embedding would have to be encoded again: keep them all then
        self.memory_slices = memory_slices() if self.folder is not None else 1 << 30
        self._memory: OrderedDict[int, torch.Tensor] = OrderedDict()  # least recently used first
        if cache_dir is not None:
            prune_cache(Path(cache_dir), disk_limit_bytes(), keep=self.key)

    def _remember(self, z: int, emb: torch.Tensor) -> None:
        self._memory[z] = emb
        self._memory.move_to_end(z)
        while len(self._memory) > self.memory_slices:
            self._memory.popitem(last=False)

    def _file(self, z: int) -> Path | None:
        return self.folder / f"slice_{z:04d}.npy" if self.folder is not None else None

    def cached(self, z: int) -> bool:
        f = self._file(z)
        return z in self._memory or (f is not None and f.is_file())

    def get(self, z: int) -> torch.Tensor:
        """The (C, h, w) embedding of slice z, encoding it if no cache holds it."""
        if z not in self._memory:
            self.ensure([z])
        self._memory.move_to_end(z)
        return self._memory[z]

    def ensure(self, zs: Iterable[int], progress: ProgressFn | None = None,
               cancelled: Callable[[], bool] | None = None) -> None:
        """Make sure every slice in ``zs`` is embedded; loads from disk or encodes in batches."""
        zs = sorted({int(z) for z in zs})
        if any(z < 0 or z >= self.unit.shape[0] for z in zs):
            raise IndexError(f"slice indices {zs[0]}..{zs[-1]} outside a volume of {self.unit.shape[0]} slices")
        todo = []
        for z in zs:
            f = self._file(z)
            if z in self._memory:
                continue
            if f is not None and f.is_file():
                try:
                    self._remember(z, torch.from_numpy(np.load(f).astype(np.float32)))
                    continue
                except (OSError, ValueError):
                    f.unlink(missing_ok=True)  # damaged cache entry: recompute
            todo.append(z)
        done = len(zs) - len(todo)
        if progress:
            progress(done, len(zs), "embedding slices")
        for i in range(0, len(todo), self.batch_size):
            if cancelled and cancelled():
                raise InterruptedError("cancelled while embedding slices")
            batch = todo[i:i + self.batch_size]
            images = torch.stack([self.segmenter.prepare(self.frame, self.unit[z]) for z in batch])
            for z, emb in zip(batch, self.segmenter.encode(images)):
                self._remember(z, emb)
                self._store(z, emb)
            done += len(batch)
            if progress:
                progress(done, len(zs), "embedding slices")

    def _store(self, z: int, emb: torch.Tensor) -> None:
        f = self._file(z)
        if f is None:
            return
        f.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(f) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, emb.numpy().astype(np.float16))  # half the disk; decoder runs in fp32
