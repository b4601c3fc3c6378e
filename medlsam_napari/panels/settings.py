"""Backend and device: localizer, segmenter (embedded LiteMedSAM or a checkpoint on disk), CPU/CUDA, mode, and what
re-segmenting a target does to the labels already in the volume's label map."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLineEdit, QPushButton, QWidget

from medlsam_training.options import LOCALIZER_HELP, MODE_HELP, POLICY_HELP, LabelPolicy, LocalizerName, PropagationMode

from ..state import AnnotatorState


class SettingsPanel(QWidget):
    def __init__(self, state: AnnotatorState):
        super().__init__()
        self.state = state
        self.localizer = QComboBox()
        self.localizer.addItems(list(LocalizerName))
        self.mode = QComboBox()
        self.mode.addItems(list(PropagationMode))
        self.mode.setToolTip("\n".join(f"{m}: {h}" for m, h in MODE_HELP.items()))
        self.localizer.setToolTip("\n".join(f"{m}: {h}" for m, h in LOCALIZER_HELP.items()))
        self.segmenter = QLineEdit("litemedsam")
        self.segmenter.setToolTip("'litemedsam' (embedded) or the path of a SAM / MedSAM checkpoint")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.device = QComboBox()
        self.device.addItems(self._devices())
        self.existing = QComboBox()
        for policy in LabelPolicy:
            self.existing.addItem(POLICY_HELP[policy], policy.value)
        self.existing.setToolTip("When a target is segmented again (run, re-prompt, re-propagate): what its new "
                                 "voxels may replace. Its own old voxels are replaced unless 'fill empty voxels "
                                 "only'. Locked (reviewed) targets are never changed.")
        self.scheduler = QLineEdit()
        self.scheduler.setPlaceholderText("empty: this computer")
        self.scheduler.setToolTip("A Dask scheduler's address (tcp://host:8786) for 'Localize & segment all': one "
                                  "volume per task on its workers, which must see this project folder at the same "
                                  "path (README, 'On a cluster'). Empty: the run stays on this computer.")
        seg_row = QHBoxLayout()
        seg_row.addWidget(self.segmenter)
        seg_row.addWidget(browse)
        form = QFormLayout(self)
        form.addRow("localizer", self.localizer)
        form.addRow("segmenter", seg_row)
        form.addRow("device", self.device)
        form.addRow("propagation", self.mode)
        form.addRow("existing labels", self.existing)
        form.addRow("cluster", self.scheduler)
        for combo in (self.localizer, self.mode, self.device, self.existing):
            combo.currentTextChanged.connect(self._store)
        self.segmenter.editingFinished.connect(self._store)
        self.scheduler.editingFinished.connect(self._store)
        state.on_change(lambda what: self.refresh() if what == "project" else None)

    @staticmethod
    def _devices() -> list[str]:
        import torch

        return ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]

    def refresh(self) -> None:
        p = self.state.project
        if p is None:
            return
        for combo, value in ((self.localizer, p.localizer), (self.mode, p.mode), (self.device, p.device)):
            combo.blockSignals(True)
            if combo.findText(value) >= 0:
                combo.setCurrentText(value)
            combo.blockSignals(False)
        self.existing.blockSignals(True)
        self.existing.setCurrentIndex(max(self.existing.findData(p.existing), 0))
        self.existing.blockSignals(False)
        self.segmenter.setText(p.segmenter)
        self.scheduler.setText(p.scheduler)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "SAM / MedSAM / LiteMedSAM checkpoint", "",
                                              "Checkpoints (*.pth *.pt)")
        if path:
            self.segmenter.setText(path)
            self._store()

    def _store(self, *_args) -> None:
        p = self.state.project
        if p is None:
            return
        p.localizer, p.mode, p.device = self.localizer.currentText(), self.mode.currentText(), self.device.currentText()
        p.existing = self.existing.currentData()
        p.segmenter = self.segmenter.text().strip() or "litemedsam"
        p.scheduler = self.scheduler.text().strip()
        p.save()
