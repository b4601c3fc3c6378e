"""Coreset: value (label valuation, suspicious labels) and suggest (what to annotate next)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import MedLSAMError
from ._app import _fail, _RichProgress, _targets_arg, app, console, plural


@app.command()
def value(
    data: Path = typer.Option(..., "--data", help="Labelled dataset folder (the volumes to value)."),
    targets: str = typer.Option(..., "--targets", help="Structures the probe segments, e.g. liver,spleen."),
    out: Path = typer.Option(..., "--out", help="Folder for values.csv, selection.json, values.png, probe.pt."),
    budget: float = typer.Option(0.3, help="Coreset size: a fraction in (0, 1) or a number of volumes."),
    split: Optional[str] = typer.Option(None, help="Only cases of this split (manifest.json)."),
    steps: int = typer.Option(2000, min=1, help="Probe training steps (batch 16 crops of 64 x 64; about 0.05 "
                              "CPU-s each on one core)."),
    value_every: int = typer.Option(100, min=1, help="Value every volume every this many steps."),
    seed: int = typer.Option(0),
    workers: Optional[int] = typer.Option(None, "--workers", help="Read and crop the volumes on a local Dask "
                                          "cluster of N worker processes (the probe trains here)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Read and crop the volumes on an existing "
                                            "Dask cluster, e.g. tcp://host:8786 (the data shared with it)."),
) -> None:
    """'Train on less' and suspicious labels: a CPU probe trains on the volumes while each one is valued (loss per
    target, Dice with its own label, GradNorm, Data-SI); coresets by each rule and a ranking of labels that look
    wrong, with the reason."""
    from ..cluster import open_engine
    from ..coreset.run import SUSPICIOUS_CSV, value_dataset

    try:
        with open_engine(workers, scheduler) as engine, _RichProgress("valuing") as bar:
            if engine is not None:
                console.print(f"reading the volumes on a Dask cluster of {plural(engine.workers, 'worker')}",
                              soft_wrap=True, highlight=False)
            v = value_dataset(data, _targets_arg(targets), out, budget=budget, split=split, steps=steps,
                              value_every=value_every, seed=seed, progress=bar, engine=engine)
    except MedLSAMError as exc:
        _fail(exc)
    for rule, names in v.selections.items():
        console.print(f"{rule}: {len(names)} of {len(v.cases)} volumes")
    for s in v.suspects[:len(v.flagged)]:
        console.print(f"suspicious #{s.rank} {s.case} (z {s.worst_z_mm:.1f} mm): {s.reason}", soft_wrap=True,
                      highlight=False)
    console.print(f"wrote {out / SUSPICIOUS_CSV}, {out / 'values.csv'}, {out / 'selection.json'}, "
                  f"{out / 'values.png'}")


@app.command()
def suggest(
    pool: Path = typer.Option(..., "--pool", help="Folder of volumes not yet annotated."),
    budget: float = typer.Option(..., "--budget", help="How many to annotate next: a fraction or a number."),
    out: Path = typer.Option(..., "--out", help="Ranked list (CSV)."),
    labelled_data: Optional[Path] = typer.Option(None, "--labelled", help="Volumes already annotated: the "
                                                 "suggestions stay away from them."),
    probe: Optional[Path] = typer.Option(None, help="probe.pt from 'medlsam value' for the uncertainty term."),
    targets: Optional[str] = typer.Option(None, help="The probe's targets (with --probe)."),
) -> None:
    """'Annotate next': k-center greedy on MedLAM embeddings, with the probe's uncertainty when given."""
    from ..coreset.run import suggest as rank
    from ..coreset.run import write_suggestions

    try:
        if probe and not targets:
            raise MedLSAMError("--probe needs --targets (the structures it was trained on)")
        with _RichProgress("embedding") as bar:
            items = rank(pool, budget, labelled_data=labelled_data, probe=probe,
                         targets=_targets_arg(targets) if targets else None, progress=bar)
        path = write_suggestions(items, out)
    except MedLSAMError as exc:
        _fail(exc)
    for s in items:
        console.print(f"{s.rank:3d}  {s.case}  ({s.reason})", highlight=False)
    console.print(f"wrote {path}")


#: the formats ``seg export`` writes
