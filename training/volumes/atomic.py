"""Atomic file replacement: write beside the target, fsync, then rename over it.

An interrupted save (crash, kill, full disk) therefore leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import OutputFolderError


def compound_suffix(path: Path) -> str:
    """'.nii.gz' for 'a.nii.gz', '.nrrd' for 'a.nrrd' (writers choose the format from it)."""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() == ".gz":
        return "".join(suffixes[-2:])
    return path.suffix


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (/proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` with the same extension; on success it replaces target."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f".tmp{compound_suffix(target)}", dir=target.parent
        )
    except OSError as exc:  # the folder, not our hidden temporary name, is what the user can act on
        raise OutputFolderError(f"{target.parent}: cannot write here ({exc.strerror or exc})") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.filename is not None and Path(exc.filename) == tmp:
                raise OutputFolderError(f"{target}: could not be written ({exc.strerror or exc})") from exc
            raise
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        # mkstemp makes 0600 files; a saved mask or session must get the mode any new file gets (the
        # user's umask), or keep the mode of the file it replaces
        os.chmod(tmp, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~current_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(data: Any, target: str | os.PathLike[str]) -> Path:
    """Write JSON to ``target`` atomically and return its path."""
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return target


def keep_previous(path: str | os.PathLike[str]) -> Path | None:
    """Copy an existing file to ``<folder>/.previous/<stem>-<time><suffix>`` before it is replaced."""
    import shutil
    import time

    path = Path(path)
    if not path.is_file():
        return None
    suffix = compound_suffix(path)
    stem = path.name[: -len(suffix)] if suffix else path.name
    backup = path.parent / ".previous" / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"
    try:
        backup.parent.mkdir(exist_ok=True)
        shutil.copy2(path, backup)
    except OSError as exc:  # no copy, no replacement: the caller must not go on to overwrite the file
        raise OutputFolderError(f"{backup.parent}: cannot keep a copy of {path.name} here "
                                f"({exc.strerror or exc})") from exc
    return backup
