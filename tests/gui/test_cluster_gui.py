"""The annotator's "Localize & segment all" on a Dask scheduler named in its settings (loopback only): the tasks run
on the cluster's worker, the masks are those of the run in the annotator's own process, byte for byte."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("qtpy")
if not os.environ.get("DISPLAY"):
    pytest.skip("napari layers need a GL context: run the tests under xvfb-run (see README)",
                allow_module_level=True)

from medlsam_napari.annotator import AnnotatorWidget  # noqa: E402
from medlsam_training.project.folder import Project  # noqa: E402

pytestmark = pytest.mark.slow


def run_all(viewer, folder: Path, qtbot, scheduler: str = "") -> AnnotatorWidget:
    widget = AnnotatorWidget(viewer, folder)
    widget.settings.existing.setCurrentIndex(widget.settings.existing.findData("overwrite"))
    widget.settings.scheduler.setText(scheduler)
    widget.settings.scheduler.editingFinished.emit()  # what leaving the field does
    assert Project.open(folder).scheduler == scheduler  # kept in the session
    widget.run.start()
    qtbot.waitUntil(lambda: widget.run.worker is None, timeout=300_000)
    return widget


def models_built_on_workers(client) -> list:
    from medlsam_training.cluster import worker

    return sum(client.run(lambda: list(worker._MODELS)).values(), [])


def test_a_run_on_the_scheduler_in_the_settings_writes_the_masks_of_a_run_here(make_napari_viewer, qtbot,
                                                                              cli_project: Path,
                                                                              tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    here = shutil.copytree(cli_project, tmp_path / "here")
    there = shutil.copytree(cli_project, tmp_path / "there")
    widget = run_all(make_napari_viewer(), here, qtbot)
    assert widget.run.status.text().startswith("done: 3 segmented"), widget.run.status.text()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        assert models_built_on_workers(client) == []
        widget = run_all(make_napari_viewer(), there, qtbot, cluster.scheduler_address)
        assert widget.run.status.text().startswith("done: 3 segmented"), widget.run.status.text()
        built = sorted(key[0] for key in models_built_on_workers(client))
        assert built == ["localizer", "segmenter"]  # the worker made the masks, not the annotator's process
    for name in ("phantom_000", "phantom_001", "phantom_002"):
        assert (there / "masks" / f"{name}.nii.gz").read_bytes() == (here / "masks" / f"{name}.nii.gz").read_bytes()
    assert Project.open(there).entry("phantom_001").status == "segmented"


def test_a_wrong_scheduler_address_is_said_and_nothing_is_written(make_napari_viewer, qtbot, cli_project: Path,
                                                                 tmp_path: Path, monkeypatch) -> None:
    folder = shutil.copytree(cli_project, tmp_path / "p")
    before = {p.name: p.read_bytes() for p in (folder / "masks").glob("*.nii.gz")}
    errors = []
    monkeypatch.setattr("medlsam_napari.panels.run.show_error", lambda _w, title, exc: errors.append(f"{title}: {exc}"))
    run_all(make_napari_viewer(), folder, qtbot, "tcp://127.0.0.1:9")
    assert len(errors) == 1 and "tcp://127.0.0.1:9" in errors[0], errors
    assert {p.name: p.read_bytes() for p in (folder / "masks").glob("*.nii.gz")} == before
