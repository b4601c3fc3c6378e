"""Batch segmentation on a Dask cluster (loopback only): the same masks as one process, byte for byte; a worker
killed mid-run costs nothing but time; a scheduler reached by address, a wrong one said in one line; resumable."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.project.pipeline import RESULTS_NAME

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> tuple[Path, Path]:
    """Four small phantoms and a template made from the first (its mask fused by the atlas on the others)."""
    from medlsam_training.volumes.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("cluster") / "data"
    write_phantom_dataset(root, n=4, size=(160, 128, 20), spacing=(2.0, 2.0, 6.0))
    template = root.parent / "liver.json"
    r = runner.invoke(app, ["extreme-points", str(root / "phantom_000" / "image.nii.gz"),
                            str(root / "phantom_000" / "label.nii.gz"), "--target", "liver", "--out", str(template)])
    assert r.exit_code == 0, r.output
    return root, template


@pytest.fixture(scope="module")
def serial(phantoms, tmp_path_factory) -> Path:
    """The phantoms segmented in this one process (what every cluster run must equal)."""
    root, template = phantoms
    out = tmp_path_factory.mktemp("serial") / "masks"
    r = segment(template, [root], out)
    assert r.exit_code == 0, r.output
    return out


def segment(template: Path, queries: list[Path], out: Path, *extra: str):
    return runner.invoke(app, ["segment", "-t", str(template), *sum((["-q", str(q)] for q in queries), []),
                               "--out", str(out), "--device", "cpu", *extra])


def summary_without_timings(out: Path) -> dict:
    data = json.loads((out / RESULTS_NAME).read_text())
    for record in data.values():
        record.pop("seconds")
        record["output"] = Path(record["output"]).name if record["output"] else None
        for t in record["targets"].values():
            t.pop("seconds")
    return data


def masks(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.nii.gz"))}


def leftovers(out: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes."""
    return [p for p in out.rglob(".*") if ".tmp" in p.name]


def test_two_local_workers_write_the_serial_runs_masks_byte_for_byte(phantoms, serial, tmp_path: Path) -> None:
    root, template = phantoms
    r = segment(template, [root], tmp_path / "cluster", "--workers", "2")
    assert r.exit_code == 0, r.output
    assert "Dask cluster of 2 workers" in r.output
    assert masks(tmp_path / "cluster") == masks(serial) and len(masks(serial)) == 4
    assert summary_without_timings(tmp_path / "cluster") == summary_without_timings(serial)
    # resumable as ever: a second run with the same folder writes nothing new
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "cluster").glob("*.nii.gz")}
    r = segment(template, [root], tmp_path / "cluster", "--workers", "2")
    assert r.exit_code == 0, r.output
    assert r.output.count(": skipped") == 4
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cluster").glob("*.nii.gz")} == before


def test_two_workers_on_head_and_neck_patients_match_the_serial_run(openkbp: Path, tmp_path: Path) -> None:
    """Two recommended validation-pats patients, brainstem and mandible templates from two train-pats."""
    files = []
    for pt in ("pt_1", "pt_2"):
        for name, value in (("brainstem", 1), ("mandible", 7)):
            files.append(tmp_path / f"{pt}_{name}.json")
            r = runner.invoke(app, ["extreme-points", str(openkbp / "imagesTr" / f"{pt}_0000.nii.gz"),
                                    str(openkbp / "labelsTr" / f"{pt}.nii.gz"), "--target", name,
                                    "--value", str(value), "--out", str(files[-1])])
            assert r.exit_code == 0, r.output
    queries = [openkbp / "imagesTr" / f"{pt}_0000.nii.gz" for pt in ("pt_201", "pt_202")]
    outs = {}
    for how, extra in (("serial", ()), ("cluster", ("--workers", "2"))):
        outs[how] = tmp_path / how
        r = runner.invoke(app, ["segment", *sum((["-t", str(f)] for f in files), []),
                                *sum((["-q", str(q)] for q in queries), []), "--out", str(outs[how]),
                                "--device", "cpu", *extra])
        assert r.exit_code == 0, r.output
    assert masks(outs["cluster"]) == masks(outs["serial"]) and len(masks(outs["serial"])) == 2
    assert summary_without_timings(outs["cluster"]) == summary_without_timings(outs["serial"])
    votes = sorted(p.name for p in (outs["cluster"] / ".votes").iterdir())
    assert votes == ["pt_201_0000.npz", "pt_202_0000.npz"]  # written by the workers, for corrections


def test_a_worker_killed_mid_run_costs_nothing_but_time(phantoms, serial, tmp_path: Path) -> None:
    from medlsam_training.cluster import open_engine
    from medlsam_training.localization.localize import load_templates, make_localizer
    from medlsam_training.project.pipeline import query_cases, run_queries
    from medlsam_training.segmentation.segmenters import load_segmenter

    root, template = phantoms
    cases = query_cases([root])
    out = tmp_path / "cluster"
    results = []
    with open_engine(2, None, "atlas", "litemedsam", "cpu") as engine:
        pids = engine.client.run(os.getpid)  # worker address -> its process
        for result in run_queries(cases, load_templates([template]), make_localizer("atlas"),
                                  load_segmenter("litemedsam", device="cpu"), out, engine=engine):
            results.append(result)
            if len(results) == 1:  # the others are running or queued: end one worker's process
                os.kill(next(iter(pids.values())), signal.SIGKILL)
    assert sorted(r.name for r in results) == sorted(c.name for c in cases)  # each volume once
    assert all(r.status == "done" for r in results), [(r.name, r.error) for r in results]
    assert masks(out) == masks(serial)
    assert not leftovers(out)


def test_an_existing_scheduler_by_address_and_a_wrong_address_in_one_line(phantoms, tmp_path: Path) -> None:
    from distributed import LocalCluster

    root, template = phantoms
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        r = segment(template, [root / "phantom_001" / "image.nii.gz"], tmp_path / "remote", "--scheduler",
                    cluster.scheduler_address)
        assert r.exit_code == 0, r.output
        assert "Dask cluster of 1 worker" in r.output
    assert (tmp_path / "remote" / "image.nii.gz").is_file()
    r = segment(template, [root / "phantom_001" / "image.nii.gz"], tmp_path / "nowhere", "--scheduler",
                "tcp://127.0.0.1:9")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "tcp://127.0.0.1:9" in lines[0] and "scheduler" in lines[0], r.output
    r = segment(template, [root], tmp_path / "both", "--workers", "2", "--scheduler", "tcp://127.0.0.1:9")
    assert r.exit_code == 2 and "not both" in r.output
    assert not list((tmp_path / "nowhere").glob("*.nii.gz"))


def test_localize_on_two_workers_writes_the_serial_boxes(phantoms, tmp_path: Path) -> None:
    """``medlsam localize --workers 2``: the boxes file of a run in one process, but for the timings, in the order
    the queries were given; a volume that cannot be read is its own error on the cluster too."""
    root, template = phantoms
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + bytes(200))

    def boxes(out: Path, *extra: str):
        r = runner.invoke(app, ["localize", "-t", str(template), "-q", str(root), "-q", str(bad), "--out", str(out),
                                "--device", "cpu", *extra])
        assert r.exit_code == 1, r.output  # the broken volume
        data = json.loads(out.read_text())
        for record in data.values():
            for t in record.values():
                if isinstance(t, dict):
                    t.pop("seconds")
        return r, data

    _, serial = boxes(tmp_path / "serial.json")
    r, cluster = boxes(tmp_path / "cluster.json", "--workers", "2")
    assert "Dask cluster of 2 workers" in r.output
    assert list(cluster) == list(serial) and cluster == serial
    assert "error" in cluster[str(bad)] and all("liver" in cluster[k] for k in cluster if k != str(bad))


def test_the_learning_loops_presegmentation_on_two_workers_writes_the_masks_written_here(hn_project,
                                                                                       tmp_path: Path) -> None:
    """``finetune --project --workers 2``'s pre-segmentation: the network's weights sent to each worker once, one
    volume per task; the same label maps as in one process, byte for byte, the locked mandible untouched."""
    import shutil

    import numpy as np

    from medlsam_training.cluster import open_engine
    from medlsam_training.learning.project_loop import finetune_project, presegment_project
    from medlsam_training.learning.train import LearnConfig
    from medlsam_training.project.folder import Project
    from medlsam_training.volumes.io import read_label

    here = Project.open(hn_project.folder)
    checkpoint = finetune_project(here, cfg=LearnConfig(steps=300), device="cpu").path  # learns the mandible
    there_folder = shutil.copytree(hn_project.folder, tmp_path / "there", symlinks=True)
    there = Project.open(there_folder)
    mandible_before = read_label(there.mask_path(hn_project.partly)).array == 7
    serial = presegment_project(here, checkpoint, policy="keep", device="cpu")
    with open_engine(2, None, "atlas", "litemedsam", "cpu") as engine:
        cluster = presegment_project(there, checkpoint, policy="keep", device="cpu", engine=engine)
    assert sorted(cluster.written) == sorted(serial.written) == sorted([hn_project.partly, hn_project.pending])
    for name in serial.written:
        assert there.mask_path(name).read_bytes() == here.mask_path(name).read_bytes(), name
        assert Project.open(there_folder).entry(name).status == "segmented"
    assert np.array_equal(read_label(there.mask_path(hn_project.partly)).array == 7, mandible_before)
    assert not [p for p in there.mask_path(hn_project.pending).parent.glob(".*.tmp*")]
    # a wrong scheduler is said before any training
    r = runner.invoke(app, ["finetune", "--project", str(there_folder), "--steps", "5", "--scheduler",
                            "tcp://127.0.0.1:9"])
    assert r.exit_code == 2 and "tcp://127.0.0.1:9" in r.output and "checkpoint" not in r.output


def test_evaluate_on_two_workers_prints_the_serial_table(phantoms, serial) -> None:
    """``medlsam evaluate --workers 2``: every volume scored as one task, the table of a run in one process (the
    rows in the pairs' order, whichever task finished first)."""
    root, _ = phantoms

    def table(*extra: str) -> list[str]:
        r = runner.invoke(app, ["evaluate", "--pred", str(serial), "--gt", str(root), *extra])
        assert r.exit_code == 0, r.output
        assert ("Dask cluster of 2 workers" in r.output) == bool(extra)  # the path taken
        return [line for line in r.output.splitlines() if "│" in line or "|" in line]

    here = table()
    there = table("--workers", "2")
    assert there == here and any("phantom_001" in line for line in here)


def test_value_reads_the_volumes_on_two_workers_and_values_them_as_here(phantoms, tmp_path: Path) -> None:
    """``medlsam value --workers 2``: each volume read and cropped as one task; the probe trained here on them
    values and selects exactly as when this process read them."""
    root, _ = phantoms

    def value(out: Path, *extra: str) -> dict[str, bytes]:
        r = runner.invoke(app, ["value", "--data", str(root), "--targets", "liver,spleen", "--out", str(out),
                                "--budget", "0.5", "--steps", "8", "--value-every", "4", *extra])
        assert r.exit_code == 0, r.output
        assert ("Dask cluster of 2 workers" in r.output) == bool(extra)  # the path taken
        return {name: (out / name).read_bytes() for name in ("values.csv", "selection.json", "suspicious.csv")}

    assert value(tmp_path / "cluster", "--workers", "2") == value(tmp_path / "here")
