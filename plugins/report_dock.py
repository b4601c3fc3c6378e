"""napari dock "Findings report": measure an image's label layer in a worker, show the numbers beside an
editable draft, go to each structure, re-measure after mask edits, and save the draft (Markdown, JSON, and a
DICOM SR when the image came from a DICOM series)."""

from __future__ import annotations

import weakref
from pathlib import Path

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from medlsam_napari.dock_job import DockJob
from medlsam_napari.docking import dock_as_tab
from medlsam_napari.layer_geometry import volume_from_layer
from medlsam_napari.state import state_for
from medlsam_training.errors import MedLSAMError
from medlsam_training.report import Patient, Report, build_report
from medlsam_training.report.export import write_report
from medlsam_training.volumes.datasets import read_label_names
from medlsam_training.volumes.io import is_volume_path

COLUMNS = ("structure", "mL", "max Ø mm", "cranio-caudal mm", "mean ± SD", "complete", "verdict", "")
#: Header values kept in layer metadata by the reader, which the report uses (modality, patient, contrast).
_META_KEYS = ("modality", "patient_sex", "patient_age", "contrast_agent", "series_uid")


def label_names_for(layer, viewer) -> dict[int, str]:
    """Names of a Labels layer's values: its metadata, a labels.json beside its file, else the project's targets."""
    names = layer.metadata.get("label_names")
    if names:
        return {int(k): str(v) for k, v in names.items()}
    source = layer.metadata.get("source_path")
    if source and (Path(source).parent / "labels.json").is_file():
        return read_label_names(Path(source).parent / "labels.json")
    project = state_for(viewer).project
    return {t.label: t.name for t in project.targets} if project else {}


class _UnsavedDraftGuard(QObject):
    """Watches napari's main window: closing it (Ctrl+Q, the close button) with an edited, unsaved draft asks
    first, and 'Cancel' keeps the window and the draft."""

    def __init__(self, dock: "ReportWidget"):
        super().__init__(dock)
        self._dock = weakref.ref(dock)  # weak: the guard must not keep a closed viewer alive
        self._watched: int | None = None

    def watch(self) -> None:
        dock = self._dock()
        window = dock.window() if dock is not None else None
        if window is not None and window is not dock and id(window) != self._watched:
            window.installEventFilter(self)
            self._watched = id(window)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        dock = self._dock()
        if event.type() != QEvent.Type.Close or dock is None or not dock.has_unsaved_edits():
            return False
        answer = dock.ask_unsaved()
        if answer == "save":
            dock._choose_save()
        if answer == "cancel" or (answer == "save" and dock.has_unsaved_edits()):
            event.ignore()
            return True  # napari's closeEvent never runs: nothing is torn down
        return False


class ReportWidget(QWidget):
    @property
    def worker(self):
        """The running job's worker (None when idle)."""
        return self.job.worker

    def __init__(self, napari_viewer):
        super().__init__()
        dock_as_tab(self)  # beside the other MedLSAM docks, never squeezing them
        self.viewer = napari_viewer
        self.report: Report | None = None
        self._draft_text = ""           # the last generated draft: differs from the box once the user edits
        self._pending_text: str | None = None
        self.image_box, self.labels_box = QComboBox(), QComboBox()
        self.measure_btn, self.cancel_btn = QPushButton("Measure and draft"), QPushButton("Cancel")
        self.regen_btn, self.save_btn = QPushButton("Replace text with the new draft"), QPushButton("Save…")
        self.bar, self.status = QProgressBar(), QLabel()
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSortingEnabled(False)
        # every column as wide as its header and cells; a narrow dock scrolls sideways instead of cutting them
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.table.setToolTip("mL: volume; max Ø: largest 3D diameter; cranio-caudal: extent along the body axis; "
                              "mean ± SD: intensity (HU on CT); complete: the structure does not touch the scan edge")
        self._saved_text: str | None = None  # the text as last saved: quitting with other edits asks first
        self._close_guard = _UnsavedDraftGuard(self)
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("The draft appears here; edit it freely before saving.")
        form = QFormLayout()
        form.addRow("image", self.image_box)
        form.addRow("labels", self.labels_box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        row = QHBoxLayout()
        for w in (self.measure_btn, self.cancel_btn):
            row.addWidget(w)
        layout.addLayout(row)
        for w in (self.bar, self.table, self.text):
            layout.addWidget(w)
        row = QHBoxLayout()
        for w in (self.regen_btn, self.save_btn):
            row.addWidget(w)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.regen_btn.setEnabled(False)
        self.save_btn.setEnabled(False)
        self.measure_btn.clicked.connect(self.start_measuring)
        self.regen_btn.clicked.connect(self.replace_text)
        self.save_btn.clicked.connect(self._choose_save)
        self.job = DockJob("report", status=self.status, bar=self.bar, buttons=(self.measure_btn,),
                           on_progress=self._on_progress, on_idle=lambda: self.measure_btn.setText("Re-measure"))
        self.cancel_btn.clicked.connect(self.job.cancel)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(lambda _e: self.refresh_layers())
        self.refresh_layers()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self._close_guard.watch()  # docked now: its window is napari's

    def has_unsaved_edits(self) -> bool:
        """The draft was edited by hand and that text was never saved."""
        text = self.text.toPlainText()
        return bool(text.strip()) and text != self._draft_text and text != self._saved_text

    def ask_unsaved(self) -> str:
        """'save', 'discard' or 'cancel': what to do with an edited draft when napari closes."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Unsaved report draft",
                          "The findings report draft was edited and not saved.", parent=self)
        save = box.addButton("Save…", QMessageBox.ButtonRole.AcceptRole)
        discard = box.addButton("Discard edits", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Cancel", QMessageBox.ButtonRole.RejectRole)
        box.exec()
        return "save" if box.clickedButton() is save else "discard" if box.clickedButton() is discard else "cancel"

    # --- layers --------------------------------------------------------------------------------
    def refresh_layers(self) -> None:
        from napari.layers import Image, Labels

        for box, kind in ((self.image_box, Image), (self.labels_box, Labels)):
            current = box.currentText()
            box.clear()
            box.addItems([layer.name for layer in self.viewer.layers if isinstance(layer, kind)])
            if current:
                box.setCurrentText(current)

    def _volumes(self):
        layers = self.viewer.layers
        if not self.image_box.currentText() or not self.labels_box.currentText():
            raise MedLSAMError("open an image and a labels layer first")
        image_layer, labels_layer = layers[self.image_box.currentText()], layers[self.labels_box.currentText()]
        image = volume_from_layer(image_layer.data, image_layer.metadata, image_layer.affine.affine_matrix)
        meta = {k: image_layer.metadata[k] for k in _META_KEYS if k in image_layer.metadata}
        image = image.with_array(image.array, meta=meta, path=image_layer.metadata.get("source_path"))
        labels = volume_from_layer(labels_layer.data, labels_layer.metadata, labels_layer.affine.affine_matrix)
        # a copy: the annotator may keep painting while the worker measures
        labels = labels.with_array(labels.array.copy(), path=Path(labels_layer.name))
        return image, labels, label_names_for(labels_layer, self.viewer)

    # --- measuring ------------------------------------------------------------------------------
    def start_measuring(self) -> None:
        if self.job.busy:
            return
        try:
            image, labels, names = self._volumes()
        except (MedLSAMError, ValueError) as exc:
            self.status.setText(str(exc))
            return
        progress, cancelled = self.job.reporter(), self.job.cancelled

        def work() -> Report:
            return build_report(image, labels, names, patient=Patient.from_meta(image.meta), progress=progress,
                                cancelled=cancelled)

        self.job.start(work, self._measured, message="measuring…", on_error=self._failed)

    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(done)
        self.status.setText(f"measuring {message}…" if message != "done" else "drafting…")

    def _failed(self, exc: Exception) -> None:
        self.status.setText("cancelled" if isinstance(exc, InterruptedError) else f"measurement failed: {exc}")

    def _measured(self, report: Report) -> None:
        self.report = report
        self._fill_table(report)
        draft = report.to_markdown()
        edited = self.text.toPlainText() != self._draft_text
        if edited and self.text.toPlainText().strip():
            # never replace what the user wrote: offer the new draft instead
            self._pending_text = draft
            self.regen_btn.setEnabled(True)
            self.status.setText("Measurements updated. The draft text was edited, so it was kept; "
                                "'Replace text with the new draft' discards your edits.")
        else:
            self._set_text(draft)
            self.status.setText(f"{len(report.findings)} structures measured; impression: "
                                f"{len(report.impression)} line(s).")
        self.save_btn.setEnabled(True)

    def _set_text(self, draft: str) -> None:
        self._draft_text = draft
        self._pending_text = None
        self.text.setPlainText(draft)
        self.regen_btn.setEnabled(False)

    def replace_text(self) -> None:
        if self._pending_text is not None:
            self._set_text(self._pending_text)

    def _fill_table(self, report: Report) -> None:
        self.table.setRowCount(len(report.findings))
        for row, f in enumerate(report.findings):
            m = f.measurement
            verdicts = [j.verdict.word for j in f.judgements if j.verdict is not None]
            hu = f"{m.intensity_mean:.0f} ± {m.intensity_sd:.0f}" if m.intensity_mean is not None else ""
            cells = (m.name, f"{m.volume_ml:,.1f}", f"{m.max_diameter_mm:.0f}", f"{m.cc_extent_mm:.0f}", hu,
                     "yes" if m.complete else "no", "; ".join(verdicts))
            for col, text in enumerate(cells):
                self.table.setItem(row, col, QTableWidgetItem(text))
            button = QPushButton("go to")
            button.clicked.connect(lambda _checked=False, r=row: self.go_to(r))
            self.table.setCellWidget(row, len(COLUMNS) - 1, button)
        self.table.resizeColumnsToContents()

    def go_to(self, row: int) -> None:
        """Centre the view on a structure's centroid and show its slice."""
        m = self.report.findings[row].measurement
        world = tuple(m.centroid_mm[::-1])  # layers are placed in LPS (z, y, x) world coordinates
        for axis, value in enumerate(world[-self.viewer.dims.ndim:]):
            self.viewer.dims.set_point(axis, value)
        camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera  # napari >= 0.9
        camera.center = world
        layer = self.viewer.layers[self.labels_box.currentText()] if self.labels_box.currentText() else None
        if layer is not None:
            layer.selected_label = m.value
        self.status.setText(f"{m.name}: centroid {', '.join(f'{v:.0f}' for v in m.centroid_mm)} mm (LPS)")

    # --- saving ----------------------------------------------------------------------------------
    def _choose_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save report draft", "report.md", "Markdown (*.md)")
        if path:
            self.save(path)

    def save(self, path: str | Path) -> list[Path]:
        """Write the text as shown (edits included), the JSON of the measurements, and the SR for DICOM images."""
        if self.report is None:
            raise MedLSAMError("measure first: there is no report to save")
        written = write_report(self.report, path, text=self.text.toPlainText())
        self._saved_text = self.text.toPlainText()
        source = self.viewer.layers[self.image_box.currentText()].metadata.get("source_path")
        if source and Path(source).is_dir() and is_volume_path(source):
            from medlsam_training.report.dicom_sr import write_measurement_report
            from medlsam_training.volumes.dicom_series import series_datasets

            try:
                uid = self.viewer.layers[self.image_box.currentText()].metadata.get("series_uid")
                written.append(write_measurement_report(self.report, series_datasets(source, uid),
                                                        Path(path).with_suffix(".sr.dcm")))
            except MedLSAMError as exc:
                self.status.setText(f"saved {', '.join(p.name for p in written)}; DICOM SR not written: {exc}")
                return written
        self.status.setText(f"saved {', '.join(p.name for p in written)}")
        return written
