"""Six extreme points on a template: guided click order, redo one, validation."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from medlsam_training.localization.extreme_points import POINT_NAMES, POINT_PROMPTS
from medlsam_training.project.folder import ProjectError

from ..state import AnnotatorState
from ._messages import show_error


class PointsPanel(QWidget):
    def __init__(self, state: AnnotatorState):
        super().__init__()
        self.state = state
        self.prompt = QLabel("Open a template volume and pick a target.")
        self.prompt.setWordWrap(True)
        self.slots = QLabel()
        self.slots.setWordWrap(True)  # six point names and ticks: must wrap in a narrow dock
        self.redo_which = QComboBox()
        self.redo_which.addItems(POINT_NAMES)
        redo, clear = QPushButton("Redo point"), QPushButton("Clear all")
        redo.clicked.connect(lambda: self._clear([self.redo_which.currentIndex()]))
        clear.clicked.connect(lambda: self._clear(range(6)))
        self.status = QLabel()
        self.status.setWordWrap(True)
        row = QHBoxLayout()  # the point to redo on its own line, its buttons below: the dock stays narrow
        for w in (redo, clear):
            row.addWidget(w)
        layout = QVBoxLayout(self)
        for w in (self.prompt, self.slots, self.redo_which):
            layout.addWidget(w)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self._syncing = False
        state.on_change(self._on_change)

    def _on_change(self, what: str) -> None:
        if what == "volume" and self.state.points_layer is not None:
            self.state.points_layer.events.data.connect(self._on_points_edited)
        if what in ("volume", "active_target", "targets", "points", "project", "status"):
            self.refresh()

    def _context(self) -> tuple[str, str] | None:
        p, name = self.state.project, self.state.volume_name
        if p is None or name is None or not p.active_target or not p.entry(name).template:
            return None
        return name, p.active_target

    def refresh(self) -> None:
        ctx = self._context()
        layer = self.state.points_layer
        if ctx is None:
            self.prompt.setText("Mark the open volume as a template and pick a target to click its six points.")
            self.slots.setText("")
            self._show_points(np.empty((0, 3)))
            return
        volume, target = ctx
        slots = self.state.project.point_slots(volume, target)
        nxt = self.state.project.next_point(volume, target)
        self.prompt.setText("All six points set." if nxt is None else
                            f"Click {POINT_PROMPTS[POINT_NAMES[nxt]].format(t=target)} ({nxt + 1}/6).")
        self.slots.setText("  ".join(f"{'✓' if s is not None else '○'} {n}" for n, s in zip(POINT_NAMES, slots)))
        if layer is not None:
            self._show_points(np.array([s[::-1] for s in slots if s is not None]).reshape(-1, 3))
        self._validate(volume, target)

    def _show_points(self, zyx: np.ndarray) -> None:
        layer = self.state.points_layer
        if layer is None:
            return
        self._syncing = True
        try:
            layer.data = zyx
            if len(zyx):
                layer.text = {"string": [n for n, s in zip(POINT_NAMES, self._slots()) if s is not None],
                              "color": "yellow", "size": 8}
        finally:
            self._syncing = False

    def _slots(self):
        ctx = self._context()
        return self.state.project.point_slots(*ctx) if ctx else []

    def _validate(self, volume: str, target: str) -> None:
        if self.state.project.next_point(volume, target) is not None:
            self.status.setText("")
            return
        try:  # valid: also written for the command line ('medlsam segment -t templates/*.json')
            path = self.state.project.export_template(self.state.volume, volume, target)
            self.status.setText(f"✓ {target}: six valid points on {volume} (saved as "
                                f"{path.relative_to(self.state.project.folder)}).")
        except Exception as exc:
            self.status.setText(f"⚠ {exc}")

    def _on_points_edited(self, event=None) -> None:
        """A point added in napari goes into the next empty slot; deletions clear their slot."""
        if self._syncing:
            return
        ctx = self._context()
        layer = self.state.points_layer
        if ctx is None or layer is None:
            return
        volume, target = ctx
        slots = self.state.project.point_slots(volume, target)
        shown = [s for s in slots if s is not None]
        data = np.asarray(layer.data)
        try:
            if len(data) > len(shown):  # added: the newest row
                nxt = self.state.project.next_point(volume, target)
                if nxt is None:
                    raise ProjectError("all six points are set; use 'Redo point' to replace one")
                self.state.project.set_point(volume, target, nxt, data[-1][::-1], self.state.volume.size,
                                             self.state.volume.geometry)
            elif len(data) < len(shown):  # deleted: clear the slots whose point vanished
                kept = {tuple(np.round(r[::-1], 3)) for r in data}
                for i, s in enumerate(slots):
                    if s is not None and tuple(np.round(s, 3)) not in kept:
                        self.state.project.clear_point(volume, target, i)
        except ProjectError as exc:
            # the whole reason in the panel, scrolled into view; no toast (cut short, and it can stay for minutes)
            show_error(self, "Point not taken", exc, toast=False)
            self.state.ask_attention(self.status)
            self.state.changed("points")  # the refused point leaves the layer
            self.status.setText(f"⚠ {exc}")  # said on the dock, where the annotator looks, after the refresh
            return
        self.state.changed("points")

    def _clear(self, which) -> None:
        ctx = self._context()
        if ctx:
            for i in which:
                self.state.project.clear_point(*ctx, i)
            self.state.changed("points")
