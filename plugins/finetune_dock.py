"""napari dock "Fine-tune from annotations": train PCT-Net on the reviewed masks of a project (optionally
from a Volume Fusion checkpoint) in a worker with progress and a live loss curve, then pre-segment
other volumes into Labels layers for review."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QPointF, Qt
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
from medlsam_napari.layer_geometry import layer_kwargs
from medlsam_napari.state import state_for
from medlsam_training.atomic import keep_previous
from medlsam_training.datasets import Case
from medlsam_training.io import read_volume, write_mask
from medlsam_training.project import Project
from medlsam_training.vf.train import DEFAULT_CONFIG, PCTPredictor, VFConfig, finetune

KEEP = "Keep existing masks (write only where none)"
REPLACE = "Replace existing masks (previous copy kept)"


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

    def __init__(self, napari_viewer, project_dir: str | Path | None = None, config: str | Path | None = None):
        super().__init__()
        dock_as_tab(self)  # beside the other MedLSAM docks, never squeezing them
        self.viewer = napari_viewer
        self.state = state_for(napari_viewer)  # the project is shared with the annotator on this viewer
        self.state.on_change(lambda what: self.refresh() if what == "project" and self.project else None)
        self.config_path = Path(config) if config else DEFAULT_CONFIG
        self.checkpoint: Path | None = None
        open_btn = QPushButton("Open project folder…")
        open_btn.clicked.connect(self._choose)
        self.train_list, self.target_list, self.predict_list = QListWidget(), QListWidget(), QListWidget()
        self.init = QLineEdit(placeholderText="optional Volume Fusion checkpoint (.pt)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.steps = QSpinBox(minimum=1, maximum=100000)
        self.steps.setValue(VFConfig.load(self.config_path).steps)
        self.train_btn, self.cancel_btn, self.predict_btn = (QPushButton("Fine-tune"), QPushButton("Cancel"),
                                                             QPushButton("Pre-segment selected"))
        self.train_btn.clicked.connect(self.start_training)
        self.predict_btn.clicked.connect(self.start_prediction)
        self.existing = QComboBox()
        self.existing.addItems([KEEP, REPLACE])  # what pre-segmentation does with masks already there
        self.bar, self.curve, self.status = QProgressBar(), LossCurve(), QLabel()
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(open_btn)
        for title, w in (("Reviewed volumes to learn from", self.train_list), ("Targets to learn", self.target_list)):
            layout.addWidget(QLabel(title))
            layout.addWidget(w)
        row = QHBoxLayout()
        row.addWidget(self.init)
        row.addWidget(browse)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("steps"))
        row.addWidget(self.steps)
        row.addWidget(self.train_btn)
        row.addWidget(self.cancel_btn)
        layout.addLayout(row)
        for w in (self.bar, self.curve, QLabel("Volumes to pre-segment"), self.predict_list, self.existing,
                  self.predict_btn, self.status):
            layout.addWidget(w)
        self.job = DockJob("fine-tuning", status=self.status, bar=self.bar,
                           buttons=(self.train_btn, self.predict_btn), on_progress=self._on_progress)
        self.cancel_btn.clicked.connect(self.job.cancel)
        if project_dir is not None:
            self.open_project(project_dir)

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
        for v in p.volumes:
            has_mask = p.mask_path(v.name).is_file()
            lst = self.train_list if v.status == "reviewed" and has_mask else self.predict_list
            if v.status == "missing" or (lst is self.predict_list and v.status == "reviewed"):
                continue
            item = QListWidgetItem(f"{v.name} [{v.status}]")
            item.setData(Qt.UserRole, v.name)
            item.setCheckState(Qt.Checked)
            lst.addItem(item)
        for t in p.targets:
            item = QListWidgetItem(f"{t.name} ({t.label})")
            item.setData(Qt.UserRole, t.name)
            item.setCheckState(Qt.Checked)
            self.target_list.addItem(item)

    @staticmethod
    def _checked(lst: QListWidget) -> list[str]:
        return [lst.item(i).data(Qt.UserRole) for i in range(lst.count()) if lst.item(i).checkState() == Qt.Checked]

    # --- training ----------------------------------------------------------------------------
    def start_training(self) -> None:
        p = self.project
        if p is None or self.job.busy:
            return
        names, targets = self._checked(self.train_list), self._checked(self.target_list)
        if not names or not targets:
            self.status.setText("Pick at least one reviewed volume and one target.")
            return
        cases = [Case(n, p.volume_path(n), p.mask_path(n)) for n in names]
        labels = [(p.target(t).label, t) for t in targets]
        cfg = VFConfig.load(self.config_path, steps=self.steps.value())
        init = self.init.text().strip() or None
        out = p.folder / "models" / f"pctnet-{time.strftime('%Y%m%d-%H%M%S')}.pt"
        out.parent.mkdir(exist_ok=True)
        self.curve.values.clear()
        progress = self.job.reporter("fine-tuning cancelled; the last checkpoint is kept and resumable")
        self.job.start(lambda: finetune(cfg, cases, labels, out, init, progress), self._trained,
                       message=f"fine-tuning on {len(cases)} volume(s), {len(labels)} target(s)…",
                       on_error=lambda exc: self.status.setText(f"Fine-tuning stopped: {exc}"))

    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.bar.setRange(0, total)
        self.bar.setValue(done)
        if message.startswith("loss "):
            self.curve.add(float(message.split()[1]))

    def _trained(self, result) -> None:
        path, skipped = result
        self.checkpoint = path
        note = f"; from {self.init.text()}: {len(skipped)} tensors not loaded" if self.init.text().strip() else ""
        self.status.setText(f"fine-tuned: {path.name}{note}")

    # --- pre-segmentation ---------------------------------------------------------------------
    def start_prediction(self) -> None:
        if self.checkpoint is None or self.job.busy:
            self.status.setText("Fine-tune first (or wait for the running job).")
            return
        p, names, ckpt = self.project, self._checked(self.predict_list), self.checkpoint
        def work():
            predictor = PCTPredictor(ckpt)
            for name in names:
                volume = read_volume(p.volume_path(name))
                yield name, volume, predictor.predict(volume)

        self.job.start(work, on_yield=self._show_prediction,
                       on_error=lambda exc: self.status.setText(f"Pre-segmentation failed: {exc}"))

    def _show_prediction(self, item) -> None:
        name, volume, labels = item
        self.viewer.add_labels(labels, **layer_kwargs(volume.with_array(labels), f"{name} PCT-Net", labels=True))
        p = self.project
        entry, target = p.entry(name), p.mask_path(name)
        if entry.status == "reviewed":  # never overwrite reviewed work
            note = "reviewed: its mask is kept; the prediction is only a layer"
        elif target.is_file() and self.existing.currentText() == KEEP:
            note = "it already has a mask (maybe painted by hand): kept; the prediction is only a layer"
        else:
            backup = keep_previous(target)
            p.set_status(name, "segmented", write_mask(labels, volume, target))
            note = f"saved{f'; the previous mask is in {backup.parent.name}/' if backup else ''}"
            if name == self.state.volume_name:  # open in the annotator: replaced there as one undo step
                self.state.reload_mask()
                note += "; Ctrl+Z on its mask layer undoes the replacement"
        self.status.setText(f"{name}: pre-segmented ({int(np.count_nonzero(labels))} voxels); {note}")
