"""Volumes of the project: status, template flag, open one in the viewer."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from ..state import AnnotatorState
from ._messages import show_error

_ICONS = {"pending": "·", "segmented": "◐", "reviewed": "●", "failed": "✗", "missing": "?"}


class VolumesPanel(QWidget):
    def __init__(self, state: AnnotatorState):
        super().__init__()
        self.state = state
        self.list = QListWidget()
        self.list.itemDoubleClicked.connect(lambda item: self.open(item.data(Qt.UserRole)))
        self.template = QCheckBox("template (annotate six points here)")
        self.template.toggled.connect(self._set_template)
        open_btn = QPushButton("Open")
        open_btn.clicked.connect(lambda: self.open(self._selected()))
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addWidget(self.template)  # one per line: the dock must fit a 1366-pixel-wide screen
        layout.addWidget(open_btn)
        layout.addWidget(self.status)
        self.list.currentItemChanged.connect(lambda *_: self._sync_checkbox())
        state.on_change(lambda what: self.refresh() if what in ("project", "mask", "volume", "status") else None)

    def refresh(self) -> None:
        p = self.state.project
        current = self._selected()
        self.list.clear()
        for v in p.volumes if p else []:
            locked = f"; locked: {', '.join(v.locked)}" if v.locked and v.status != "reviewed" else ""
            label = f"{_ICONS.get(v.status, '')} {v.name}  [{'template' if v.template else v.status}{locked}]"
            item = QListWidgetItem(label)
            item.setData(Qt.UserRole, v.name)
            if v.status == "missing":
                item.setFlags(item.flags() & ~Qt.ItemIsEnabled)
            self.list.addItem(item)
            if v.name in (current, self.state.volume_name):
                self.list.setCurrentItem(item)
        if p and p.messages:
            self.status.setText("\n".join(p.messages))

    def _selected(self) -> str | None:
        item = self.list.currentItem()
        return item.data(Qt.UserRole) if item else None

    def _sync_checkbox(self) -> None:
        name = self._selected()
        self.template.blockSignals(True)
        self.template.setChecked(bool(name and self.state.project.entry(name).template))
        self.template.blockSignals(False)

    def _set_template(self, checked: bool) -> None:
        name = self._selected()
        if name:
            self.state.project.set_template(name, checked)
            self.state.changed("status")
            if name == self.state.volume_name and self.state.points_layer is not None:
                self.state.points_layer.editable = checked

    def open(self, name: str | None) -> None:
        if not name:
            return
        try:
            self.state.show_volume(name)
        except Exception as exc:  # a file that cannot be opened is a message, not a crash
            show_error(self, f"Cannot open {name}", exc)
