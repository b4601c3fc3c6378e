"""Targets: add, rename, delete (name + label value) and pick the active one."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCompleter,
    QHBoxLayout,
    QInputDialog,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from medlsam_training.project.folder import ProjectError, SimilarNameError

from ..state import AnnotatorState
from ._messages import show_error


class TargetsPanel(QWidget):
    def __init__(self, state: AnnotatorState):
        super().__init__()
        self._refused: str | None = None  # the last name refused as a likely typo: asked again, it is added
        self.state = state
        self.list = QListWidget()
        self.name = QLineEdit(placeholderText="new target")  # fits the narrow column; the tooltip says more
        self.name.setToolTip("The new target's name, e.g. liver; the number beside it is its label value")
        self.label = QSpinBox(minimum=1, maximum=65535)
        add, rename, delete = QPushButton("Add"), QPushButton("Rename"), QPushButton("Delete")
        self.add_button = add
        add.clicked.connect(self._add)
        rename.clicked.connect(self._rename)
        delete.clicked.connect(self._delete)
        self.list.currentTextChanged.connect(self._activate)
        # the names the folder's labels.json / dataset.json give: completed as typed, or all added at once
        self.offered: dict[str, int] = {}
        self.completer = QCompleter([])
        self.completer.setCaseSensitivity(Qt.CaseInsensitive)
        self.name.setCompleter(self.completer)
        self.name.textChanged.connect(self._offered_value)
        self.add_offered = QPushButton()
        self.add_offered.clicked.connect(self._add_all_offered)
        self.add_offered.setVisible(False)
        row = QHBoxLayout()
        for w in (self.name, self.label, add):
            row.addWidget(w)
        row2 = QHBoxLayout()
        row2.addWidget(rename)
        row2.addWidget(delete)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addLayout(row)
        layout.addWidget(self.add_offered)
        layout.addLayout(row2)
        state.on_change(lambda what: self.refresh() if what in ("project", "targets", "active_target") else None)

    def refresh(self) -> None:
        p = self.state.project
        self.list.blockSignals(True)
        self.list.clear()
        for t in p.targets if p else []:
            item = QListWidgetItem(f"{t.name} ({t.label})")
            item.setData(256, t.name)
            item.setForeground(QColor(t.color))
            self.list.addItem(item)
            if p.active_target == t.name:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self.label.setValue(max((t.label for t in p.targets), default=0) + 1 if p else 1)
        self.offered = p.offered_targets() if p else {}
        self.completer.model().setStringList(list(self.offered))
        if self.offered:
            # short: a button's text sets the dock's minimum width
            self.add_offered.setText(f"Add the folder's {len(self.offered)} names")
            self.add_offered.setToolTip("From the folder's labels.json / dataset.json (name = label value):\n"
                                        + "\n".join(f"{n} = {v}" for n, v in self.offered.items()))
        self.add_offered.setVisible(bool(self.offered))

    def _offered_value(self, text: str) -> None:
        if text.strip() in self.offered:  # the folder's value for that name: masks and labels files agree
            self.label.setValue(self.offered[text.strip()])

    def _add_all_offered(self) -> None:
        for name, value in self.offered.items():
            try:
                self.state.project.add_target(name, value)
            except ProjectError as exc:
                return show_error(self, "Cannot add target", exc)
        self.state.changed("targets")

    def _selected(self) -> str | None:
        item = self.list.currentItem()
        return item.data(256) if item else None

    def _add(self) -> None:
        name = self.name.text().strip()
        try:  # a name that looks like a typo is refused once, with the name it resembles; asked again, it is added
            self.state.project.add_target(name, self.label.value(), similar_ok=name == self._refused)
        except SimilarNameError as exc:
            self._refused = name
            return show_error(self, "Did you mean another target?", exc)
        except (ProjectError, AttributeError) as exc:
            return show_error(self, "Cannot add target", exc)
        self._refused = None
        self.name.clear()
        self.state.changed("targets")

    def _rename(self) -> None:
        old = self._selected()
        if old is None:
            return
        new, ok = QInputDialog.getText(self, "Rename target", f"New name for {old}:", text=old)
        if ok:
            try:
                self.state.project.rename_target(old, new)
            except ProjectError as exc:
                return show_error(self, "Cannot rename", exc)
            self.state.changed("targets")

    def _delete(self) -> None:
        name = self._selected()
        if name is not None:
            self.state.project.delete_target(name)
            self.state.changed("targets")

    def _activate(self, _text: str) -> None:
        name = self._selected()
        if name and self.state.project:
            self.state.project.active_target = name
            self.state.project.save()
            self.state.changed("active_target")
