"""The one thread policy (issue 42, item 1): a process takes the free cores, not every core; the CLI, a dock's job
and a Dask worker all set it, for torch, SimpleITK and ITK alike."""

from __future__ import annotations

import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from medlsam_training.cli import app
from medlsam_training.threads import apply_thread_policy, choose_threads, free_cores


def test_the_free_cores_are_the_machines_less_the_load() -> None:
    assert free_cores(cores=2, load=3.4) == 1  # busy beside other processes: one thread, not two waiting
    assert free_cores(cores=2, load=0.2) == 2
    assert free_cores(cores=16, load=5.6) == 10
    assert free_cores(cores=1, load=0.0) == 1


def test_an_explicit_number_wins_and_processes_share_the_free_cores(monkeypatch) -> None:
    monkeypatch.setenv("MEDLSAM_THREADS", "3")
    assert choose_threads() == 3 and choose_threads(processes=2) == 3
    monkeypatch.delenv("MEDLSAM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("medlsam_training.threads.free_cores", lambda: 4)
    assert choose_threads() == 4 and choose_threads(processes=2) == 2 and choose_threads(processes=8) == 1


def test_every_medlsam_command_sets_torch_and_itk_threads_by_the_policy(monkeypatch, tmp_path) -> None:
    torch_before, sitk_before = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    monkeypatch.setenv("MEDLSAM_THREADS", "1")
    monkeypatch.delenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", raising=False)
    try:
        torch.set_num_threads(2)
        r = CliRunner().invoke(app, ["info", str(tmp_path / "none.nii.gz")])
        assert "none.nii.gz" in r.output  # the command ran (and failed on its missing file, as it should)
        assert torch.get_num_threads() == 1 and sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1
        import os

        assert os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "1"  # ITK's wrapping, when it loads
    finally:
        torch.set_num_threads(torch_before)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(sitk_before)


def test_a_dask_worker_runs_torch_sitk_and_itk_on_one_thread() -> None:
    from medlsam_training.cluster import open_engine
    from medlsam_training.cluster.worker import _one_thread_each

    def threads() -> tuple[int, int]:
        _one_thread_each()
        return torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()

    with open_engine(1, None) as engine:
        assert engine.client.submit(threads, pure=False).result() == (1, 1)


def test_apply_returns_what_it_set() -> None:
    before = torch.get_num_threads()
    try:
        assert apply_thread_policy(1) == 1 and torch.get_num_threads() == 1
    finally:
        apply_thread_policy(before)
