"""'Localize & segment all': MedLAM/registration + SAM over every query, in a worker, with progress and cancel."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from medlsam_training.project.run import build_templates, run_project, untemplated_targets

from ..dock_job import DockJob
from ..jobs import load_models
from ..progress import ProgressBridge
from ..state import AnnotatorState
from ._messages import show_error, show_info
from .volumes import wrappable


class _RunBridge(ProgressBridge):
    """Slice progress (also in napari's activity panel) and each finished volume, from the worker thread."""

    volume_done = Signal(object)


class RunPanel(QWidget):
    @property
    def worker(self):
        """The running job's worker (None when idle)."""
        return self.job.worker

    def __init__(self, state: AnnotatorState):
        super().__init__()
        self.state = state
        self.run_btn, self.cancel_btn = QPushButton("Localize && segment all"), QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.run_btn.clicked.connect(self.start)
        self.cancel_btn.clicked.connect(self.cancel)
        self.volumes_bar, self.slices_bar = QProgressBar(), QProgressBar()
        self.volumes_bar.setFormat("volumes %v/%m")
        self.slices_bar.setFormat("%p%")
        self.status = QLabel()
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.run_btn)
        row.addWidget(self.cancel_btn)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        for w in (self.volumes_bar, self.slices_bar, self.status):
            layout.addWidget(w)
        self.bridge = _RunBridge("MedLSAM")
        self.bridge.volume_done.connect(self._on_volume)
        self.job = DockJob("MedLSAM", bridge=self.bridge, status=self.status, buttons=(self.run_btn,),
                           on_progress=self._on_slices)
        self.results: list = []
        self.untemplated: list[str] = []  # the project's targets no template holds (the last run's)

    def start(self) -> None:
        p = self.state.project
        if p is None:
            return show_error(self, "No project", "open a project folder first")
        if not p.targets or not (p.ready_templates() or any(p.locked_targets(v.name) for v in p.volumes)):
            try:  # says what is missing, before any work
                build_templates(p, pool=False)
            except Exception as exc:
                return show_error(self, "Cannot run", exc)
        queries = p.to_segment  # the templates too: their own targets from their clicked points
        if not p.queries:
            return show_error(self, "Cannot run", "no query volume: every volume is a template or missing")
        self.results = []
        self.volumes_bar.setRange(0, len(queries))
        self.volumes_bar.setValue(0)
        self.status.setText(f"loading models ({p.localizer} + {p.segmenter})…")
        bridge, cancelled = self.bridge, self.job.cancelled

        def work():
            # the clicked templates and every reviewed volume (the pool): read off the GUI thread
            templates = build_templates(p)
            self.untemplated = untemplated_targets(p, templates)
            if p.scheduler:  # the settings' cluster: its workers build their own models, one volume per task
                from medlsam_training.cluster import open_engine

                device = None if p.device == "auto" else p.device
                with open_engine(None, p.scheduler, p.localizer, p.segmenter, device) as engine:
                    bridge.progress.emit(0, len(queries), f"on the cluster at {p.scheduler} "
                                                          f"({engine.workers} workers): volumes")
                    return run_project(p, templates, queries, None, None, on_result=bridge.volume_done.emit,
                                       cancelled=cancelled, engine=engine)
            localizer, segmenter = load_models(p, self.state.segmenter_cache)
            # progress does not raise on cancel: run_project stops after the current slice and sums up
            return run_project(p, templates, queries, localizer, segmenter,
                               progress=lambda d, n, m: bridge.progress.emit(d, n, m),
                               on_result=bridge.volume_done.emit, cancelled=cancelled)

        self.job.start(work, self._on_finished, on_error=lambda exc: self._on_finished(None, exc))
        self.cancel_btn.setEnabled(True)

    def cancel(self) -> None:
        self.job.cancel()
        self.status.setText("cancelling after the current slice…")

    def _on_slices(self, done: int, total: int, message: str) -> None:
        self.slices_bar.setRange(0, max(total, 1))
        self.slices_bar.setValue(done)
        self.slices_bar.setFormat(f"{message} %v/%m")
        if not self.job.cancelled():  # the models are loaded once work arrives: the text line follows the bar
            self.status.setText(f"running: {message}")

    def _on_volume(self, result) -> None:
        self.results.append(result)
        self.volumes_bar.setValue(len(self.results))
        doubtful = [f"{t.target} {t.status}" for t in result.targets if t.status != "found"]
        doubtful += [f"{t.target}: {t.fallback}" for t in result.targets if t.fallback]
        self.status.setText(wrappable(f"{result.name}{' (template)' if result.template else ''}: {result.status}"
                                      + (f" ({result.error})" if result.error else "")
                                      + (f"; {', '.join(doubtful)}" if doubtful else "")))
        if result.name == self.state.volume_name and result.status == "done":
            self.state.reload_mask()  # the open volume's new mask appears at once, as one undo step
        self.state.changed("status")

    def _on_finished(self, summary, error: BaseException | None = None) -> None:
        self.cancel_btn.setEnabled(False)  # the job re-enables 'run' when its worker finishes
        if error is not None:
            show_error(self, "Run failed", error)
        elif self.job.cancelled():
            self.status.setText(f"cancelled after {len(self.results)} volume(s)")
        else:
            failed = [r.name for r in self.results if r.status == "failed"]
            text = f"done: {len(self.results) - len(failed)} segmented" + (
                f", failed: {', '.join(failed)}" if failed else "") + (
                f"; no template for {', '.join(self.untemplated)}: not segmented" if self.untemplated else "")
            self.status.setText(text)
            show_info(text)
        self.state.changed("status")
