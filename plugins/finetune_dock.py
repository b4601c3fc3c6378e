"""napari dock "Learn from reviewed volumes": the learning loop.  "Train from reviewed" fine-tunes the slice network
(from scratch, or from a Volume Fusion checkpoint) on the project's reviewed volumes and locked targets in a worker with
progress, a live loss curve and Cancel; "Pre-segment pending" writes its predictions into the volumes not reviewed,
merged by the label-map policy, never over a locked target, the previous mask kept as a copy."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QPointF, Qt, QTimer
from qtpy.QtGui import QPainter, QPen
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from medlsam_napari.dock_job import DockJob
from medlsam_napari.docking import dock_as_tab
from medlsam_napari.state import state_for
from medlsam_training.learning.combination import summary as mix_summary
from medlsam_training.learning.project_loop import (
    finetune_project,
    pending_volumes,
    presegment_volume,
    project_predictor,
    trained_model,
    training_set,
    training_volumes,
    write_presegmentation,
)
from medlsam_training.learning.train import LearnConfig, fit_summary
from medlsam_training.options import POLICY_HELP, LabelPolicy
from medlsam_training.project.folder import Project
from medlsam_training.volumes.io import read_volume


class LossCurve(QWidget):
    """A small live plot of the training loss."""

    def __init__(self):
        super().__init__()
        self.values: list[float] = []
        self.setMinimumHeight(90)

    def add(self, value: float) -> None:
        self.values.append(value)
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.black)
        if len(self.values) < 2:
            return
        lo, hi = min(self.values), max(self.values)
        w, h = self.width() - 4, self.height() - 4
        pts = [QPointF(2 + w * i / (len(self.values) - 1), 2 + h * (1 - (v - lo) / max(hi - lo, 1e-9)))
               for i, v in enumerate(self.values)]
        painter.setPen(QPen(Qt.green, 1.5))
        painter.drawPolyline(pts)
        painter.setPen(Qt.white)
        painter.drawText(6, 14, f"loss {self.values[-1]:.3f} (from {self.values[0]:.3f})")


class FinetuneWidget(QWidget):
    @property
    def worker(self):
        """The running job's worker (None when idle)."""
        return self.job.worker

    def __init__(self, napari_viewer, project_dir: str | Path | None = None):
        super().__init__()
        dock_as_tab(self)  # beside the other MedLSAM docks, never squeezing them
        self.viewer = napari_viewer
        self.state = state_for(napari_viewer)  # the project is shared with the annotator on this viewer
        # the one project state: read whenever the dock opens, followed as volumes are reviewed or targets change
        self.state.on_change(lambda what: self.refresh()
                             if what in ("project", "status", "targets") and self.project else None)
        open_btn = QPushButton("Open project folder…")
        open_btn.clicked.connect(self._choose)
        self.train_list, self.target_list, self.predict_list = QListWidget(), QListWidget(), QListWidget()
        self.init = QLineEdit(placeholderText="optional: start from a Volume Fusion checkpoint (.pt)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.steps = QSpinBox(minimum=1, maximum=100000)
        self.steps.setValue(LearnConfig().steps)
        self.train_btn, self.cancel_btn, self.predict_btn = (QPushButton("Train from reviewed"), QPushButton("Cancel"),
                                                             QPushButton("Pre-segment pending"))
        self.train_btn.clicked.connect(self.start_training)
        self.predict_btn.clicked.connect(self.start_prediction)
        self.policy = QComboBox()  # how predictions enter a label map (one home: training/options.py)
        for p in LabelPolicy:
            self.policy.addItem(POLICY_HELP[p], p.value)
        self.policy.setCurrentIndex(list(LabelPolicy).index(LabelPolicy.EMPTY))
        self.policy.setToolTip("Locked (reviewed) targets are never changed; the previous mask is kept in "
                               "masks/.previous/.")
        self.bar, self.curve, self.status = QProgressBar(), LossCurve(), QLabel()
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(open_btn)
        for title, w in (("Reviewed volumes to learn from (locked targets)", self.train_list),
                         ("Targets to learn", self.target_list)):
            heading = QLabel(title)
            heading.setWordWrap(True)  # a narrow dock column wraps it rather than widening the column
            layout.addWidget(heading)
            layout.addWidget(w)
        row = QHBoxLayout()
        row.addWidget(self.init)
        row.addWidget(browse)
        layout.addLayout(row)
        row = QHBoxLayout()  # two rows: side by side they widened the dock column past the canvas (PyQt5)
        row.addWidget(QLabel("steps"))
        row.addWidget(self.steps)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.train_btn)
        row.addWidget(self.cancel_btn)
        layout.addLayout(row)
        for w in (self.bar, self.curve, QLabel("Volumes to pre-segment (not reviewed)"), self.predict_list,
                  self.policy, self.predict_btn, self.status):
            layout.addWidget(w)
        self.job = DockJob("learning", status=self.status, bar=self.bar,
                           buttons=(self.train_btn, self.predict_btn), on_progress=self._on_progress)
        self.cancel_btn.clicked.connect(self.job.cancel)
        # no buttons: the dock stays usable while it reads
        self.scan, self._rescan = DockJob("reading the reviewed masks", on_idle=self._scanned), False
        if project_dir is not None:
            self.open_project(project_dir)
        elif self.project is not None:  # opened from Plugins after the annotator opened a project
            self.refresh()

    # --- project ---------------------------------------------------------------------------
    def _choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Project folder")
        if folder:
            self.open_project(folder)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Volume Fusion checkpoint", "", "Checkpoints (*.pt)")
        if path:
            self.init.setText(path)

    @property
    def project(self) -> Project | None:
        return self.state.project

    def open_project(self, folder: str | Path) -> None:
        self.state.open_project(folder)
        self.refresh()

    def refresh(self) -> None:
        p = self.project
        for lst in (self.train_list, self.target_list, self.predict_list):
            lst.clear()
        for tv in training_volumes(p):
            self._add(self.train_list, f"{tv.name} ({', '.join(tv.targets)})", tv.name)
        for name in pending_volumes(p):
            self._add(self.predict_list, f"{name} [{p.entry(name).status}]", name)
        for t in p.targets:
            self._add(self.target_list, f"{t.name} ({t.label})", t.name)
        self._scan()

    def _scan(self) -> None:
        """Which targets the reviewed masks hold: read off the GUI thread (a mask each), then marked in the list; a
        change while a read runs reads again once it ends."""
        p = self.project
        self._rescan = not self.scan.start(lambda: training_set(p), lambda found: self._mark_held(p, found))

    def _scanned(self) -> None:
        if self._rescan and self.project is not None:
            QTimer.singleShot(0, self._scan)  # after the finished job has let go of its worker

    def _mark_held(self, p: Project, found) -> None:
        """A target no reviewed volume holds cannot be learned: listed, unchecked, not offered."""
        if p is not self.project or self._rescan:
            return
        for i in range(self.target_list.count()):
            item = self.target_list.item(i)
            name = item.data(Qt.UserRole)
            if name in found.untrained and item.flags() & Qt.ItemIsEnabled:
                item.setText(f"{item.text()} — no reviewed volume holds it")
                item.setCheckState(Qt.Unchecked)
                item.setFlags(item.flags() & ~Qt.ItemIsEnabled)

    @property
    def checkpoint(self) -> Path | None:
        """The open project's finished network (never another project's): what *Pre-segment pending* uses."""
        return trained_model(self.project) if self.project is not None else None

    @staticmethod
    def _add(lst: QListWidget, text: str, name: str) -> QListWidgetItem:
        item = QListWidgetItem(text)
        item.setData(Qt.UserRole, name)
        item.setCheckState(Qt.Checked)
        lst.addItem(item)
        return item

    @staticmethod
    def _checked(lst: QListWidget) -> list[str]:
        return [lst.item(i).data(Qt.UserRole) for i in range(lst.count()) if lst.item(i).checkState() == Qt.Checked]

    # --- training ----------------------------------------------------------------------------
    def start_training(self) -> None:
        p = self.project
        if p is None or self.job.busy:
            return
        targets, volumes = self._checked(self.target_list), self._checked(self.train_list)
        if not volumes or not targets:
            self.status.setText("Review some volumes first, and pick at least one target.")
            return
        cfg = LearnConfig(steps=self.steps.value())
        init = self.init.text().strip() or None
        self.curve.values.clear()
        progress = self.job.reporter("training cancelled; the last checkpoint is kept and resumes on the next run")
        self.job.start(lambda: finetune_project(p, targets=targets, volumes=volumes, cfg=cfg, init=init,
                                                progress=progress, cancelled=self.job.cancelled), self._trained,
                       message=f"training on {len(volumes)} reviewed volume(s), {len(targets)} target(s)…",
                       on_error=lambda exc: self.status.setText(f"Training stopped: {exc}"))

    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.bar.setRange(0, total)
        self.bar.setValue(done)
        if message.startswith("loss "):
            self.curve.add(float(message.split()[1]))

    def _trained(self, result) -> None:
        start = self.init.text().strip() or "scratch"
        left = "".join(f" {name} left out: {why}." for name, why in result.left_out.items())
        self.status.setText(f"trained: {result.path.name} on {len(result.volumes)} volume(s) ({result.steps} steps, "
                            f"{result.cpu_seconds / 60:.1f} CPU-min, from {start}). "
                            f"{fit_summary(result.scores, result.untrained)}.{left} "
                            + (f"{mix_summary(result.combination)}. " if result.combination else "")
                            + "Pre-segment the pending volumes next")

    # --- pre-segmentation ---------------------------------------------------------------------
    def start_prediction(self) -> None:
        if self.checkpoint is None or self.job.busy:
            self.status.setText("Train from reviewed volumes first (or wait for the running job).")
            return
        p, names, ckpt, policy = self.project, self._checked(self.predict_list), self.checkpoint, \
            self.policy.currentData()

        def work():
            predictor = project_predictor(p, ckpt)  # its learned targets, by the project's names
            if not predictor.targets:
                raise ValueError(predictor.note or "the network learned none of the project's targets")
            for name in names:
                if self.job.cancelled():
                    return
                volume = read_volume(p.volume_path(name))
                yield name, volume, presegment_volume(p, name, volume, predictor, policy)

        self._lines: list[str] = []  # one per volume: the whole run stays readable, not only its last volume
        self.job.start(work, on_yield=self._write, on_done=lambda _: self.refresh(),
                       message=f"pre-segmenting {len(names)} volume(s)…",
                       on_error=lambda exc: self.status.setText("\n".join([*self._lines,
                                                                            f"Pre-segmentation failed: {exc}"])))

    def _write(self, item) -> None:
        name, volume, merged = item
        p = self.project
        if merged is None:
            self._lines.append(f"{name}: every target the network learned is locked; nothing written")
        else:
            backup = write_presegmentation(p, name, volume, merged)
            note = f"; the previous mask is in {backup.parent.name}/" if backup else ""
            if name == self.state.volume_name:  # open in the annotator: replaced there as one undo step
                self.state.reload_mask()
                note += "; Ctrl+Z on its mask layer undoes it"
            self._lines.append(f"{name}: pre-segmented by {POLICY_HELP[LabelPolicy(self.policy.currentData())]}"
                               f"{note}")
        self.status.setText("\n".join(self._lines))

