"""The ``medlsam`` command line: headless versions of what the napari plugin does by hand. One module per command
group; importing them registers their commands on ``app``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from ..errors import MedLSAMError
from ._app import _error_line, app, expand_list_options

#: the command groups, imported in the order ``medlsam --help`` lists their commands
GROUPS = ("volumes", "segmentation", "correction", "models", "report", "seeding", "coreset", "seg")
for _group in GROUPS:
    importlib.import_module(f"{__name__}.{_group}")


def main() -> None:
    try:
        app(args=expand_list_options(sys.argv[1:]), prog_name="medlsam")
    except (MedLSAMError, OSError) as exc:  # the commands catch theirs; this is the net under the rest
        name = getattr(exc, "filename", None)
        _error_line(exc if isinstance(exc, MedLSAMError) or not name else
                    OSError(f"{Path(name).parent if Path(name).name.startswith('.') else name}: "
                            f"{exc.strerror or exc}"))
        sys.exit(2)


__all__ = ["GROUPS", "app", "expand_list_options", "main"]
