"""The MedLSAM annotator dock: targets, templates + six points, localize & segment all, review, settings."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QGroupBox, QLabel, QPushButton, QVBoxLayout, QWidget

from .docking import VerticalScroll, dock_as_tab
from .panels._messages import show_error
from .panels.points import PointsPanel
from .panels.review import ReviewPanel
from .panels.run import RunPanel
from .panels.settings import SettingsPanel
from .panels.targets import TargetsPanel
from .panels.volumes import VolumesPanel
from .panels.windows import WindowPresets
from .state import state_for


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def project_summary(p) -> str:
    """'folder: 3 volumes, 1 template; queries: 1 pending, 1 segmented' (templates are not counted as queries)."""
    queries = [v for v in p.volumes if not v.template]
    counts = [(s, sum(v.status == s for v in queries)) for s in ("pending", "segmented", "reviewed", "failed",
                                                                 "missing")]
    shown = ", ".join(f"{n} {s}" for s, n in counts if n) or "none"
    return (f"{p.folder.name}: {plural(len(p.volumes), 'volume')}, {plural(len(p.templates), 'template')}; "
            f"queries: {shown}")


class AnnotatorWidget(QWidget):
    """napari dock widget; everything long runs in workers, everything the annotator does is saved."""

    def __init__(self, napari_viewer, project_dir: str | Path | None = None):
        super().__init__()
        dock_as_tab(self)  # beside the other MedLSAM docks, never squeezing them
        self.viewer = napari_viewer
        self.state = state_for(napari_viewer)
        open_btn = QPushButton("Open project folder…")
        open_btn.clicked.connect(self._choose_folder)
        self.project_label = QLabel("No project open.")
        self.project_label.setWordWrap(True)
        self.targets = TargetsPanel(self.state)
        self.volumes = VolumesPanel(self.state)
        self.points = PointsPanel(self.state)
        self.run = RunPanel(self.state)
        self.review = ReviewPanel(self.state)
        self.settings = SettingsPanel(self.state)
        self.windows = WindowPresets(self.state)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(open_btn)
        layout.addWidget(self.project_label)
        window_box = QGroupBox("CT window")
        QVBoxLayout(window_box).addWidget(self.windows)
        layout.addWidget(window_box)
        for title, panel in (("1. Targets", self.targets), ("2. Volumes and templates", self.volumes),
                             ("   Six extreme points", self.points), ("3. Localize && segment", self.run),
                             ("4. Review and correct", self.review), ("Settings", self.settings)):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(panel)
            layout.addWidget(box)
        layout.addStretch()
        self.scroll = VerticalScroll()
        self.scroll.setWidgetResizable(True)
        # steps scroll vertically, never sideways: every row is built to fit a narrow dock
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scroll.setWidget(body)
        QVBoxLayout(self).addWidget(self.scroll)
        self.state.on_change(self._on_change)
        if self.state.project is not None and project_dir is None:  # another dock opened it on this viewer
            self.state.changed("project")
        if project_dir is not None:
            self.open_project(project_dir)

    def open_project(self, folder: str | Path) -> None:
        try:
            self.state.open_project(folder)
        except Exception as exc:
            show_error(self, f"Cannot open project {folder}", exc)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Project folder (volumes to annotate)")
        if folder:
            self.open_project(folder)

    def _on_change(self, what: str) -> None:
        self.scroll.updateGeometry()  # content may need more width now: let the dock follow
        if what == "attention" and self.state.attention is not None and self.isAncestorOf(self.state.attention):
            self.scroll.ensureWidgetVisible(self.state.attention, 0, 24)
        elif what == "volume" and self.state.project is not None and self.state.volume_name is not None \
                and self.state.project.entry(self.state.volume_name).template:
            # a template is opened to click its six points: the prompt, not the top of the dock, is in view
            self.scroll.ensureWidgetVisible(self.points, 0, 24)
        p = self.state.project
        if p is not None and what in ("project", "status", "mask"):
            self.project_label.setText(project_summary(p))
