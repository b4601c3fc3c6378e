"""Volumes of the project: status, template flag, open one in the viewer."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from ..state import AnnotatorState
from ._messages import show_error

_ICONS = {"pending": "·", "segmented": "◐", "reviewed": "●", "failed": "✗", "missing": "?"}


def wrappable(text: str) -> str:
    """Text whose long paths may wrap: a zero-width space after each '/' and '_' (QLabel breaks only at spaces)."""
    return text.replace("/", "/\u200b").replace("_", "_\u200b")


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
        summary = p.run_summary() if p else {}
        hints = {v.name: p.review_hint(v.name, summary) for v in p.volumes} if p else {}
        for v in self.review_order(hints):
            locked = f"; locked: {', '.join(v.locked)}" if v.locked and v.status != "reviewed" else ""
            confidence, note = hints[v.name] if v.status == "segmented" else (None, "")
            # the templates' agreement (tooltip says so), not quality; a template's own targets have none to show
            shown = f" · agree {confidence:.2f}" if confidence is not None and not v.template else ""
            warn = " ⚠" if any(s in note for s in ("partly outside", "not found")) else ""
            kind = f"template, {v.status}" if v.template else v.status
            label = f"{_ICONS.get(v.status, '')} {v.name}  [{kind}{shown}{locked}]{warn}"
            item = QListWidgetItem(label)
            item.setToolTip(v.error if v.status == "failed" and v.error else (note or ""))
            item.setData(Qt.UserRole, v.name)
            if v.status == "missing":
                item.setFlags(item.flags() & ~Qt.ItemIsEnabled)
            self.list.addItem(item)
            if v.name in (current, self.state.volume_name):
                self.list.setCurrentItem(item)
        failed = [v for v in p.volumes if v.status == "failed" and v.error] if p else []
        lines = (list(p.messages) if p else []) + [f"{v.name} failed: {v.error}" for v in failed]
        # paths carry no spaces: break them after '/' or the text runs past the dock's edge
        self.status.setText(wrappable("\n".join(lines)))

    def review_order(self, hints: dict[str, tuple[float | None, str]]) -> list:
        """The project's review order (``Project.review_order``): least confident segmented volumes first."""
        return self.state.project.review_order(hints) if self.state.project else []

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
                if checked:  # ready to click the six points
                    self.state.viewer.layers.selection.active = self.state.points_layer
                    self.state.points_layer.mode = "add"

    def open(self, name: str | None) -> None:
        if not name:
            return
        try:
            self.state.show_volume(name)
        except Exception as exc:  # a file that cannot be opened is a message, not a crash
            self.state.project.set_status(name, "failed", error=str(exc))
            self.state.changed("status")
            show_error(self, f"Cannot open {name}", exc)
            self.status.setText(wrappable(f"Cannot open {name}: {exc}"))
