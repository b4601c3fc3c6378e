"""The ``medlsam`` app and what its command modules share: console, one-line errors, progress bars, devices."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import MedLSAMError
from ..options import LOCALIZER_HELP, MODE_HELP, LocalizerName, PropagationMode
from ..volumes.datasets import read_label_names

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="MedLSAM annotation tools: volume I/O, localization, SAM segmentation, training.")


console = Console()


@app.callback()
def _thread_policy() -> None:
    """MedLSAM annotation tools: volume I/O, localization, SAM segmentation, training."""
    from ..threads import apply_thread_policy

    apply_thread_policy()  # torch, SimpleITK and ITK take the free cores, not every core (training/threads.py)


err_console = Console(stderr=True)


def _error_line(exc: Exception) -> None:
    # one line on stderr, never wrapped: scripts grep it, and a wrapped path is a broken path
    err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)


_LOCALIZER_HELP = "; ".join(f"{n} ({h})" for n, h in LOCALIZER_HELP.items()) + f". Default {LocalizerName.ATLAS}."


_MODE_HELP = "; ".join(f"{n} ({h})" for n, h in MODE_HELP.items()) + f". Default {PropagationMode.ATLAS}."

_WORKERS_HELP = "Run on a local Dask cluster of N worker processes (one volume per task, one thread each)."
_SCHEDULER_HELP = ("Run on an existing Dask cluster, e.g. tcp://host:8786 (the volumes and the output must be on a "
                   "filesystem its workers share).")


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 volume', '2 volumes' (``many`` for irregular plurals)."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def _fail(exc: Exception) -> None:
    _error_line(exc)
    raise typer.Exit(code=2)


class _RichProgress:
    """A rich progress bar driven by (done, total, message) callbacks."""

    def __init__(self, description: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        # no live bar when the output is a file or a pipe: the commands print a line per volume instead
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                                 disable=not console.is_terminal)
        self.task = self.progress.add_task(description, total=None, info="")

    def __enter__(self) -> "_RichProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, done: int, total: int, message: str = "") -> None:
        self.progress.update(self.task, completed=done, total=total, info=message)


def _parse_device(device: Optional[str]):
    import torch

    if device in (None, "auto"):
        return None
    if device.startswith("cuda") and not torch.cuda.is_available():
        _fail(ValueError(f"device {device!r} asked for but CUDA is not available"))
    return torch.device(device)


def _segmenter(segmenter: str, device: Optional[str]):
    from ..segmentation.segmenters import load_segmenter

    return load_segmenter(segmenter, device=_parse_device(device))


def _names_option(text: str) -> dict[int, str]:
    """A names file, or inline '1=tumour,2=oedema'."""
    if Path(text).is_file():
        return read_label_names(Path(text))
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip().isdigit() or not p[1].strip() for p in pairs):
        raise MedLSAMError(f"--names {text}: neither a file nor 'value=name' pairs such as '1=tumour,2=oedema'")
    return {int(v): n.strip() for v, n in pairs}


LIST_OPTIONS = frozenset({"-t", "--templates", "-q", "--queries", "--data"})


def expand_list_options(argv: list[str]) -> list[str]:
    """Repeat a list option's flag before each further value given after it."""
    out: list[str] = []
    current = None
    for tok in argv:
        if tok.startswith("-") and tok != "-":
            current = tok if tok in LIST_OPTIONS else None
        elif current is not None and out[-1] != current:
            out.append(current)
        out.append(tok)
    return out


def _targets_arg(targets: str) -> list[str]:
    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names:
        raise MedLSAMError(f"--targets {targets!r}: give target names separated by commas")
    return names
