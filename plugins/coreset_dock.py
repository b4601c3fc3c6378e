"""napari dock "Coreset suggestions": which volumes to annotate next (unlabelled pool) or which labelled volumes
are redundant and which labels look wrong, as a sortable table with a plot; open a volume, flag a label."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from medlsam_napari.dock_job import DockJob
from medlsam_napari.docking import dock_as_tab
from medlsam_napari.state import state_for
from medlsam_training.errors import MedLSAMError
from medlsam_training.volumes.atomic import write_json_atomic
from medlsam_training.volumes.datasets import find_cases

NEXT, LESS = "Annotate next (unlabelled pool)", "Train on less (labelled volumes)"
FLAGS_FILE = "medlsam_flags.json"


class _Number(QTableWidgetItem):
    """A table cell that sorts by its number, not its text."""

    def __init__(self, value: float, text: str | None = None):
        super().__init__(text if text is not None else f"{value:.4g}")
        self.setData(Qt.UserRole, float(value))

    def __lt__(self, other) -> bool:
        return float(self.data(Qt.UserRole)) < float(other.data(Qt.UserRole))


class CoresetWidget(QWidget):
    @property
    def worker(self):
        """The running job's worker (None when idle)."""
        return self.job.worker

    def __init__(self, napari_viewer):
        super().__init__()
        dock_as_tab(self)  # beside the other MedLSAM docks, never squeezing them
        self.viewer = napari_viewer
        self.mode = QComboBox()
        self.mode.addItems([NEXT, LESS])
        self.mode.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.mode.setMinimumContentsLength(16)  # long item texts must not widen the dock column
        self.folder, self.labelled, self.targets = QLineEdit(), QLineEdit(), QLineEdit()
        self._filled = ("", "")  # the folder and targets this dock took from the project (the user's edits are kept)
        self.folder.setPlaceholderText("folder of volumes")
        self.labelled.setPlaceholderText("optional: folder of volumes already annotated")
        self.targets.setPlaceholderText("targets, e.g. liver,spleen (train on less)")
        self.budget = QDoubleSpinBox(minimum=0.01, maximum=100000, decimals=2, value=0.3)
        self.steps = QDoubleSpinBox(minimum=2, maximum=100000, decimals=0, value=2000)
        browse = QPushButton("…")
        browse.clicked.connect(lambda: self._browse(self.folder))
        self.run_btn, self.cancel_btn = QPushButton("Run"), QPushButton("Cancel")
        self.open_btn, self.flag_btn = QPushButton("Open selected volume"), QPushButton("Flag label as suspicious")
        self.bar, self.status = QProgressBar(), QLabel()
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.6))
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self._theme(self.figure.add_subplot(111))  # empty until a run, yet in napari's theme (and after a switch)
        self.viewer.events.theme.connect(lambda _=None: self._retheme())
        form = QFormLayout()
        form.addRow("mode", self.mode)
        row = QHBoxLayout()
        row.addWidget(self.folder)
        row.addWidget(browse)
        form.addRow("volumes", row)
        form.addRow("annotated", self.labelled)
        form.addRow("targets", self.targets)
        form.addRow("budget (fraction or count)", self.budget)
        form.addRow("probe steps", self.steps)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        row = QHBoxLayout()
        for w in (self.run_btn, self.cancel_btn):
            row.addWidget(w)
        layout.addLayout(row)
        for w in (self.bar, self.table, self.canvas):
            layout.addWidget(w)
        row = QHBoxLayout()
        for w in (self.open_btn, self.flag_btn):
            row.addWidget(w)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.job = DockJob("coreset", status=self.status, bar=self.bar, buttons=(self.run_btn,))
        self.run_btn.clicked.connect(self.start)
        self.cancel_btn.clicked.connect(self.job.cancel)
        self.open_btn.clicked.connect(self.open_selected)
        self.flag_btn.clicked.connect(lambda: self.flag_selected("flagged in the coreset dock"))
        state_for(napari_viewer).on_change(lambda what: self.fill_from_project() if what in ("project", "targets")
                                           else None)
        self.fill_from_project()

    def _browse(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of volumes")
        if folder:
            edit.setText(folder)

    # --- running ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.job.busy:
            return
        folder = self.folder.text().strip()
        if not folder or not Path(folder).is_dir():
            self.status.setText("choose a folder of volumes first")
            return
        progress = self.job.reporter()

        budget = self.budget.value()
        targets = [t.strip() for t in self.targets.text().split(",") if t.strip()]
        if self.mode.currentText() == LESS:
            if not targets:
                self.status.setText("give the targets the probe should segment")
                return
            from medlsam_training.coreset.run import value_dataset

            out = Path(folder) / "medlsam_coreset"
            steps = int(self.steps.value())
            work = lambda: value_dataset(folder, targets, out, budget=budget, steps=steps, progress=progress,  # noqa
                                         value_every=max(steps // 20, 1), cancelled=self.job.cancelled)
        else:
            from medlsam_training.coreset.run import suggest

            labelled = self.labelled.text().strip() or None
            work = lambda: suggest(folder, budget, labelled_data=labelled, progress=progress)  # noqa: E731
        self.job.start(work, self._show, message="running…")

    # --- results ----------------------------------------------------------------------------------
    def _show(self, result) -> None:
        self.table.setSortingEnabled(False)
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        self._theme(ax)
        if isinstance(result, list):  # suggestions
            cols = ("rank", "case", "diversity order", "uncertainty", "reason")
            self.table.setColumnCount(len(cols))
            self.table.setHorizontalHeaderLabels(cols)
            self.table.setRowCount(len(result))
            for r, s in enumerate(result):
                cells = (_Number(s.rank, str(s.rank)), QTableWidgetItem(s.case), _Number(s.diversity_order or 0),
                         _Number(s.uncertainty if s.uncertainty is not None else np.nan), QTableWidgetItem(s.reason))
                for c, item in enumerate(cells):
                    self.table.setItem(r, c, item)
            ax.bar([s.case for s in result], [s.diversity_order or 0 for s in result])
            ax.set_ylabel("k-center pick order")
            ax.tick_params(axis="x", labelrotation=90, labelsize=6)
            self.status.setText(f"{len(result)} volume(s) to annotate next")
        else:
            v = result
            with np.errstate(all="ignore"):
                dice = np.nan_to_num(np.nanmean(v.checkpoints[-1].dice, 1)) if v.checkpoints else \
                    np.zeros(len(v.cases))
            # the suspicious ranking first: most suspicious on top, its reason, where to look
            cols = ("rank", "case", "score", "reason", "worst slice z (mm)", "Dice own label", "in coresets")
            self.table.setColumnCount(len(cols))
            self.table.setHorizontalHeaderLabels(cols)
            self.table.setRowCount(len(v.suspects))
            self._worst_z = {}
            for r, sus in enumerate(v.suspects):
                rules = [k for k, names in v.selections.items() if sus.case in names]
                self._worst_z[sus.case] = sus.worst_z_mm
                cells = (_Number(sus.rank, str(sus.rank)), QTableWidgetItem(sus.case),
                         _Number(sus.score, f"{sus.score:.2f}"), QTableWidgetItem(sus.reason),
                         _Number(sus.worst_z_mm, f"{sus.worst_z_mm:.1f}"),
                         _Number(dice[sus.index], f"{dice[sus.index]:.3f}"), QTableWidgetItem(", ".join(rules)))
                for c, item in enumerate(cells):
                    self.table.setItem(r, c, item)
                    if sus.case in v.flagged:
                        item.setForeground(QColor("red"))
            score = np.array([next(s.score for s in v.suspects if s.index == i) for i in range(len(v.cases))])
            flagged = np.isin(v.cases, v.flagged)
            ax.scatter(dice[~flagged], score[~flagged], s=10)
            ax.scatter(dice[flagged], score[flagged], s=14, c="red")
            ax.set_xlabel("Dice with its own label")
            ax.set_ylabel("suspicion (loss / median)")
            self.status.setText(f"{len(v.cases)} volumes valued; the {len(v.flagged)} most suspicious label(s) in "
                                "red, with the reason; 'Open' shows a volume at its worst slice")
        self.figure.tight_layout()
        self.canvas.draw_idle()
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()

    def _retheme(self) -> None:
        for ax in self.figure.axes:
            self._theme(ax)
        self.canvas.draw_idle()

    def _theme(self, ax) -> None:
        """The plot in napari's theme (a white figure glares in the dark theme)."""
        from napari.utils.theme import get_theme

        theme = get_theme(self.viewer.theme)
        background, text = theme.background.as_hex(), theme.text.as_hex()
        self.figure.set_facecolor(background)
        ax.set_facecolor(background)
        for spine in ax.spines.values():
            spine.set_color(text)
        ax.tick_params(colors=text)
        ax.xaxis.label.set_color(text)
        ax.yaxis.label.set_color(text)

    def fill_from_project(self) -> None:
        """The viewer's project (the annotator's): its folder, masks as the annotated folder, its targets."""
        p = state_for(self.viewer).project
        if p is None:
            return
        # what the dock filled in before follows the project (another project opened, targets added); what the
        # user typed stays theirs
        folder, targets = str(p.folder), ",".join(t.name for t in p.targets)
        if self.folder.text().strip() in ("", self._filled[0]):
            self.folder.setText(folder)
        if self.targets.text().strip() in ("", self._filled[1]):
            self.targets.setText(targets)
        self._filled = (folder, targets)

    def selected_case(self) -> str | None:
        rows = {i.row() for i in self.table.selectedItems()}
        if not rows:
            return None
        header = [self.table.horizontalHeaderItem(c).text() for c in range(self.table.columnCount())]
        return self.table.item(min(rows), header.index("case")).text()

    def open_selected(self) -> None:
        name = self.selected_case()
        case = next((c for c in find_cases(self.folder.text().strip()) if c.name == name), None) if name else None
        if case is None:
            self.status.setText("select a row first")
            return
        from medlsam_napari._reader import read_layers

        for path in [case.image] + ([case.label] if case.label else []):
            for data, kwargs, kind in read_layers(str(path)):
                kwargs["name"] = f"{case.name} {kwargs['name']}"
                getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        z = getattr(self, "_worst_z", {}).get(name)
        if z is not None:  # the slice where the probe disagrees most with the label (world z is LPS z, in mm)
            self.viewer.dims.set_point(0, z)
        self.status.setText(f"opened {case.name}" + (f" at its worst slice (z {z:.1f} mm)" if z is not None else ""))

    def flag_selected(self, reason: str) -> Path | None:
        """Record the selected volume's label as suspicious in <folder>/medlsam_flags.json (kept across runs)."""
        name = self.selected_case()
        if name is None:
            self.status.setText("select a row first")
            return None
        path = Path(self.folder.text().strip()) / FLAGS_FILE
        try:
            flags = json.loads(path.read_text()) if path.is_file() else []
        except json.JSONDecodeError as exc:
            raise MedLSAMError(f"{path}: unreadable flags file ({exc}); not overwritten") from exc
        flags.append({"case": name, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        write_json_atomic(flags, path)
        self.status.setText(f"{name}: flagged for review in {path.name}")
        return path
