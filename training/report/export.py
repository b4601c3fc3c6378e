"""Writing a report: the Markdown draft and the JSON of every measurement (the DICOM SR is in ``dicom_sr``).

A report already at the target (perhaps edited by hand) is copied to ``.previous/`` first, never lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..volumes.atomic import atomic_path, keep_previous, write_json_atomic
from .draft import Report


def write_text_atomic(text: str, target: str | os.PathLike[str]) -> Path:
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def write_report(report: Report, out: str | os.PathLike[str], *, text: str | None = None) -> list[Path]:
    """Write ``out`` as .md (``text`` if given, else the draft) and .json (every measurement); returns the paths."""
    out = Path(out)
    md, js = out.with_suffix(".md"), out.with_suffix(".json")
    for p in (md, js):
        keep_previous(p)
    written = [write_text_atomic(text if text is not None else report.to_markdown(), md)]
    data = report.to_dict()
    if text is not None:
        data["edited_text"] = text
    written.append(write_json_atomic(json.loads(json.dumps(data, default=float)), js))
    return written
