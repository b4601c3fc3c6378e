"""napari dock "CAM seeding": tick per slice whether a target is present, absent or unknown (a strip along z and
keyboard shortcuts), then seed by the target's class:

* lesion / target volume: train (or load) the slice classifier, seed in a worker, show the fused CAM, its
  uncertainty, the seeds and the pseudo-mask (the refinement network's mask when one is loaded);
* organ: the localizer's mask of the organ (a labels layer) or a drawn box fills a prior that LiteMedSAM refines
  on the ticked slices (organs share their slices: tags alone cannot place them; docs/benchmarks.md section 5).

The result is accepted into a labels layer by the label-map policy, as one undo step."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from qtpy.QtCore import QRect, Qt, Signal
from qtpy.QtGui import QColor, QPainter
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from medlsam_napari.dock_job import DockJob
from medlsam_napari.docking import dock_as_tab
from medlsam_napari.label_history import apply_labels
from medlsam_napari.layer_geometry import layer_kwargs, volume_from_layer
from medlsam_napari.state import state_for
from medlsam_training.cam.classifier import load_classifier
from medlsam_training.cam.organ import target_class
from medlsam_training.cam.tags import ABSENT, PRESENT, UNKNOWN, TagError, require_usable
from medlsam_training.errors import MedLSAMError
from medlsam_training.options import POLICY_HELP, TARGET_CLASS_HELP, LabelPolicy, TargetClass
from medlsam_training.segmentation.label_merge import merge_target
from medlsam_training.volumes.atomic import write_json_atomic

#: what each target class is seeded from (shown in the dock); why: docs/benchmarks.md section 5
CLASSES = TARGET_CLASS_HELP
_COLOURS = {PRESENT: QColor(60, 200, 90), ABSENT: QColor(210, 70, 70), UNKNOWN: QColor(90, 90, 90)}
SHORTCUTS = {"Alt-P": PRESENT, "Alt-A": ABSENT, "Alt-U": UNKNOWN}


class TagStrip(QWidget):
    """One cell per slice, coloured by its tag; the current slice is outlined; a click tags with the chosen state."""

    clicked = Signal(int)

    def __init__(self):
        super().__init__()
        self.tags = np.zeros(0, np.int8)
        self.current = 0
        self.setMinimumHeight(28)

    def set_tags(self, tags: np.ndarray, current: int) -> None:
        self.tags, self.current = tags, current
        self.update()

    def _slice_at(self, x: float) -> int:
        return int(np.clip(x / max(self.width(), 1) * len(self.tags), 0, max(len(self.tags) - 1, 0)))

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if len(self.tags):
            self.clicked.emit(self._slice_at(event.pos().x()))

    def paintEvent(self, event) -> None:  # noqa: N802
        painter = QPainter(self)
        n = len(self.tags)
        if not n:
            painter.drawText(4, 18, "open an image to tag its slices")
            return
        w = self.width() / n
        for z, tag in enumerate(self.tags):
            painter.fillRect(QRect(int(z * w), 0, max(int(w + 1), 1), self.height()), _COLOURS[int(tag)])
        painter.setPen(Qt.white)
        painter.drawRect(QRect(int(self.current * w), 0, max(int(w), 2), self.height() - 1))


class CamSeedWidget(QWidget):
    @property
    def worker(self):
        """The running job's worker (None when idle)."""
        return self.job.worker

    def __init__(self, napari_viewer):
        super().__init__()
        dock_as_tab(self)  # beside the other MedLSAM docks, never squeezing them
        self.viewer = napari_viewer
        self.tags: dict[tuple[str, str], np.ndarray] = {}   # (image layer, target) -> own-slice tags
        self.model = None
        self.model_targets: list[str] = []
        self._undo: tuple[str, np.ndarray] | None = None
        self.results: dict[str, object] = {}
        self.image_box, self.target = QComboBox(), QLineEdit("target")
        self.state_box = QComboBox()
        self.state_box.addItems(["present", "absent", "unknown"])
        self.class_box = QComboBox()
        for key, text in CLASSES.items():
            self.class_box.addItem(key.value, key.value)
            self.class_box.setItemData(self.class_box.count() - 1, text, Qt.ToolTipRole)
        self.class_help = QLabel(CLASSES[TargetClass.LESION])
        self.class_help.setWordWrap(True)
        self.refiner = None
        self.organ_sam = QCheckBox("organ: LiteMedSAM on ticked slices")
        self.organ_sam.setToolTip("Re-segment the ticked slices with LiteMedSAM. Off (measured better on 4 mm CT): "
                                  "the prior itself on the ticked slices")
        self.refine_btn = QPushButton("Load refinement network…")
        self.policy_box = QComboBox()
        for key, text in POLICY_HELP.items():
            self.policy_box.addItem(text, key.value)
        self.policy_box.setCurrentIndex(list(POLICY_HELP).index(LabelPolicy.EMPTY))
        self.strip = TagStrip()
        self.summary = QLabel()
        self.summary.setWordWrap(True)  # "<target>: n present, …": unwrapped it widened the dock column past the canvas
        self.epochs = QSpinBox(minimum=1, maximum=200)
        self.epochs.setValue(4)
        self.train_btn, self.load_btn = QPushButton("Train on tagged volumes"), QPushButton("Load classifier…")
        self.run_btn, self.cancel_btn = QPushButton("Seed this volume"), QPushButton("Cancel")
        self.labels_box, self.value = QComboBox(), QSpinBox(minimum=1, maximum=65535)
        self.accept_btn, self.undo_btn = QPushButton("Accept into labels"), QPushButton("Undo")
        self.save_btn, self.open_btn = QPushButton("Save tags…"), QPushButton("Load tags…")
        self.bar, self.status = QProgressBar(), QLabel()
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("image", self.image_box)
        form.addRow("target", self.target)
        form.addRow("target class", self.class_box)
        form.addRow("click tags as", self.state_box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.class_help)
        layout.addWidget(self.organ_sam)
        keys = QLabel("Slices (Alt-P present, Alt-A absent, Alt-U unknown; Alt-Shift-P/A: range from the last "
                      "tagged slice)")
        keys.setWordWrap(True)  # unwrapped, it widened the dock column and shrank the image on every tab
        layout.addWidget(keys)
        layout.addWidget(self.strip)
        layout.addWidget(self.summary)
        for buttons in ((self.save_btn, self.open_btn), (self.train_btn, self.epochs), (self.load_btn, self.refine_btn),
                        (self.run_btn, self.cancel_btn)):
            row = QHBoxLayout()
            for b in buttons:
                row.addWidget(b)
            layout.addLayout(row)
        layout.addWidget(self.bar)
        form2 = QFormLayout()
        form2.addRow("labels (organ prior, result)", self.labels_box)
        form2.addRow("label value", self.value)
        form2.addRow("existing labels", self.policy_box)
        layout.addLayout(form2)
        row = QHBoxLayout()
        row.addWidget(self.accept_btn)
        row.addWidget(self.undo_btn)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.undo_btn.setEnabled(False)
        self._last_tagged: int | None = None
        self.job = DockJob("CAM seeding", status=self.status, bar=self.bar, buttons=(self.train_btn, self.run_btn),
                           on_idle=self._class_changed)  # training stays off for organs
        self.strip.clicked.connect(lambda z: self.tag(z, [PRESENT, ABSENT, UNKNOWN][self.state_box.currentIndex()]))
        self.train_btn.clicked.connect(lambda: self.start_training())  # clicked(bool) must not fill the argument
        self.load_btn.clicked.connect(lambda: self._choose("CAM slice classifier", self.load_model))
        self.refine_btn.clicked.connect(lambda: self._choose("CAM refinement network", self.load_refiner))
        self.class_box.currentIndexChanged.connect(self._class_changed)
        self._class_changed()
        self.run_btn.clicked.connect(self.start_seeding)
        self.cancel_btn.clicked.connect(self.job.cancel)
        self.accept_btn.clicked.connect(self.accept)
        self.undo_btn.clicked.connect(self.undo)
        self.save_btn.clicked.connect(self._choose_save)
        self.open_btn.clicked.connect(self._choose_open)
        self.image_box.currentTextChanged.connect(lambda _t: self.refresh_strip())
        self.target.textChanged.connect(lambda _t: self.refresh_strip())
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(lambda _e: self.refresh_layers())
        napari_viewer.dims.events.current_step.connect(lambda _e: self.refresh_strip())
        for key, state in SHORTCUTS.items():
            napari_viewer.bind_key(key, lambda _v, s=state: self.tag(self.current_slice(), s), overwrite=True)
        for key, state in (("Alt-Shift-P", PRESENT), ("Alt-Shift-A", ABSENT)):
            napari_viewer.bind_key(key, lambda _v, s=state: self.tag_range(self.current_slice(), s), overwrite=True)
        self.refresh_layers()
        self.state = state_for(napari_viewer)  # the annotator's project: its active target and its label value
        self.state.on_change(lambda what: self.follow_project() if what in ("project", "active_target", "targets")
                             else None)
        self.target.textChanged.connect(lambda _t: self._value_from_project())
        self.follow_project()

    def follow_project(self) -> None:
        """The project's active target, with its label value (the default 'target' and 1 painted another organ)."""
        p = self.state.project
        if p is None or not p.active_target:
            return
        self.target.setText(p.active_target)
        self._value_from_project()
        index = self.class_box.findData(target_class(p.active_target).value)  # an organ is seeded from a box
        if index >= 0 and index != self.class_box.currentIndex():
            self.class_box.setCurrentIndex(index)

    def _value_from_project(self) -> None:
        p = self.state.project
        name = self.target.text().strip()
        if p is not None and any(t.name == name for t in p.targets):
            self.value.setValue(p.target(name).label)

    # --- tags -----------------------------------------------------------------------------------
    def refresh_layers(self) -> None:
        from napari.layers import Image, Labels

        for box, kind in ((self.image_box, Image), (self.labels_box, Labels)):
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems([layer.name for layer in self.viewer.layers if isinstance(layer, kind)
                          and not layer.name.endswith(("UM-CAM", "uncertainty", "pseudo-mask", " prior"))])
            if current:
                box.setCurrentText(current)
            box.blockSignals(False)
        self.refresh_strip()

    def _key(self) -> tuple[str, str] | None:
        image = self.image_box.currentText()
        if not image or image not in self.viewer.layers:
            return None
        key = (image, self.target.text().strip() or "target")
        if key not in self.tags:
            n = self.viewer.layers[image].data.shape[0]
            self.tags[key] = np.full(n, UNKNOWN, np.int8)
        return key

    def current_slice(self) -> int:
        key = self._key()
        if key is None:
            return 0
        layer = self.viewer.layers[key[0]]
        # the world position on the first displayed axis, back to this layer's own slice index
        index = layer.world_to_data(self.viewer.dims.point)[0]
        return int(np.clip(np.round(index), 0, layer.data.shape[0] - 1))

    def tag(self, z: int, state: int) -> None:
        key = self._key()
        if key is None:
            return
        self.tags[key][z] = state
        self._last_tagged = z
        self.refresh_strip()

    def tag_range(self, z: int, state: int) -> None:
        key = self._key()
        if key is None:
            return
        start = self._last_tagged if self._last_tagged is not None else z
        lo, hi = sorted((start, z))
        self.tags[key][lo:hi + 1] = state
        self._last_tagged = z
        self.refresh_strip()

    def refresh_strip(self) -> None:
        key = self._key()
        if key is None:
            self.strip.set_tags(np.zeros(0, np.int8), 0)
            self.summary.setText("")
            return
        t = self.tags[key]
        self.strip.set_tags(t, self.current_slice())
        self.summary.setText(f"{key[1]}: {int((t == PRESENT).sum())} present, {int((t == ABSENT).sum())} absent, "
                             f"{int((t == UNKNOWN).sum())} unknown of {t.size} slices")

    def tags_json(self) -> dict:
        """{image: {target: {"present": [[z0, z1]…], "absent": […]}}} in the image's own slice indices."""
        out: dict = {}
        for (image, target), t in self.tags.items():
            entry = {"present": _ranges(t == PRESENT), "absent": _ranges(t == ABSENT)}
            if entry["present"] or entry["absent"]:
                out.setdefault(image.split(".")[0], {})[target] = entry
        return out

    def save_tags(self, path: str | Path) -> Path:
        return write_json_atomic(self.tags_json(), path)

    def load_tags(self, path: str | Path) -> None:
        from medlsam_training.cam.tags import read_tags, tags_from_ranges

        data = read_tags(path)
        for image in [self.image_box.itemText(i) for i in range(self.image_box.count())]:
            for target, entry in data.get(image.split(".")[0], {}).items():
                n = self.viewer.layers[image].data.shape[0]
                self.tags[(image, target)] = tags_from_ranges(n, entry.get("present", []), entry.get("absent", []),
                                                              where=f"{path}: {image}/{target}")
        self.refresh_strip()

    def _choose_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save slice tags", "tags.json", "JSON (*.json)")
        if path:
            self.status.setText(f"saved {self.save_tags(path)}")

    def _choose_open(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load slice tags", "", "Tags (*.json *.csv)")
        if path:
            try:
                self.load_tags(path)
            except MedLSAMError as exc:
                self.status.setText(str(exc))

    # --- classifier -----------------------------------------------------------------------------
    def _choose(self, title: str, load) -> None:
        """A checkpoint picked in a file dialog, handed to ``load`` (the classifier's or the refinement network's)."""
        path, _ = QFileDialog.getOpenFileName(self, title, "", "Checkpoints (*.pt)")
        if path:
            load(path)

    def _load(self, loader, path: str | Path, loaded) -> None:
        """``loaded(loader(path))``, or the checkpoint's one-line error on the status line."""
        try:
            result = loader(path)
        except MedLSAMError as exc:
            self.status.setText(str(exc))
            return
        loaded(result)

    def load_model(self, path: str | Path) -> None:
        def loaded(result) -> None:
            self.model, self.model_targets, _ = result
            self.status.setText(f"classifier for {', '.join(self.model_targets)}")

        self._load(load_classifier, path, loaded)

    def _volume(self, image_name: str):
        layer = self.viewer.layers[image_name]
        volume = volume_from_layer(layer.data, layer.metadata, layer.affine.affine_matrix)
        return volume.with_array(np.asarray(volume.array), meta={k: v for k, v in layer.metadata.items()
                                                                 if k == "modality"})

    def start_training(self, slices_per_epoch: int = 2000) -> None:
        """Train on every image of this session that has tags for the targets ticked so far."""
        if self.job.busy:
            return
        targets = sorted({t for (_, t), tags in self.tags.items() if np.any(tags == PRESENT)})
        try:
            if not targets:
                raise TagError("tag at least one slice present (and some absent) first")
            images = sorted({i for (i, _) in self.tags})
            per_image = {i: np.stack([self.tags.get((i, t), np.full(self.viewer.layers[i].data.shape[0], UNKNOWN,
                                                                    np.int8)) for t in targets], 1) for i in images}
            for k, t in enumerate(targets):
                require_usable(np.concatenate([v[:, k] for v in per_image.values()]), t)
            volumes = {i: self._volume(i) for i in images}
        except MedLSAMError as exc:
            self.status.setText(str(exc))
            return
        from medlsam_training.cam.classifier import prepare_slices, train_classifier
        from medlsam_training.cam.run import tags_to_canonical
        from medlsam_training.report.measure import guess_modality

        epochs, progress = self.epochs.value(), self.job.reporter()
        out = Path(tempfile.mkdtemp(prefix="medlsam-cam-")) / "classifier.pt"

        def work():
            cases = []
            for i, volume in volumes.items():
                modality = guess_modality(volume)
                cases.append((prepare_slices(volume, modality), tags_to_canonical(volume, per_image[i])))
            train_classifier(cases, targets, out, epochs=epochs, slices_per_epoch=slices_per_epoch,
                             modality=guess_modality(next(iter(volumes.values()))), progress=progress)
            return out

        self.job.start(work, self._trained, message=f"training on {len(volumes)} volume(s) for {', '.join(targets)}…")

    def _trained(self, path: Path) -> None:
        self.load_model(path)
        self.status.setText(f"trained ({path}); now 'Seed this volume'")

    # --- seeding --------------------------------------------------------------------------------
    def _class_changed(self, _index: int = 0) -> None:
        kind = self.class_box.currentData()
        self.class_help.setText(CLASSES[kind])
        for w in (self.train_btn, self.epochs, self.load_btn, self.refine_btn):
            w.setEnabled(kind == TargetClass.LESION)
        self.organ_sam.setEnabled(kind == TargetClass.ORGAN)

    def load_refiner(self, path: str | Path) -> None:
        from medlsam_training.cam.rvc import load_net

        def loaded(net) -> None:
            self.refiner = net
            self.status.setText(f"refinement network loaded: seeding segments the ticked slices with it ({path})")

        self._load(load_net, path, loaded)

    def start_seeding(self) -> None:
        if self.job.busy:
            return
        if self.class_box.currentData() == TargetClass.ORGAN:
            self.start_organ_seeding()
            return
        key = self._key()
        if self.model is None or key is None:
            self.status.setText("train or load a classifier, and open an image, first")
            return
        image, target = key
        tags = self.tags[key]
        if target not in self.model_targets:
            self.status.setText(f"the classifier knows {', '.join(self.model_targets)}, not {target!r}")
            return
        volume = self._volume(image)
        model, learned, progress = self.model, self.model_targets, self.job.reporter()
        refiner = self.refiner
        from medlsam_training.cam.run import on_volume_grid, seed_volume, tags_to_canonical
        from medlsam_training.report.measure import guess_modality

        def work():
            prep, seeds, _ = seed_volume(model, learned, volume, {target: tags}, modality=guess_modality(volume),
                                         progress=progress)
            s = seeds[target]
            mask = s.masks["umcam_gse"]
            if refiner is not None:  # the network trained on pseudo-masks segments the ticked slices
                from medlsam_training.cam.rvc import segment_ticked

                mask = segment_ticked(refiner, prep, tags_to_canonical(volume, tags))[1]
            back = {k: on_volume_grid(prep.canonical, a, volume).array for k, a in
                    (("cam", s.maps["umcam_gse"].astype(np.float32)), ("uncertainty", s.uncertainty),
                     ("mask", mask.astype(np.uint8)))}
            points = []
            for pts, kind in ((s.seeds_fg, 1), (s.seeds_bg, 0)):
                if pts is not None:
                    xyz = prep.canonical.index_to_physical(pts[:, ::-1].astype(float))
                    points += [(p[::-1], kind) for p in xyz]   # LPS (z, y, x) world coordinates
            return target, volume, back, points

        self.job.start(work, self._seeded, message=f"seeding {target} on {image}…")

    def start_organ_seeding(self) -> None:
        """Prior from the labels layer's voxels of the label value (the localizer's result) or from a drawn box
        (a Shapes layer's rectangle, over the slices ticked present) -> LiteMedSAM on the ticked slices."""
        key = self._key()
        if key is None:
            self.status.setText("open an image first")
            return
        image, target = key
        ticks = self.tags[key]
        volume = self._volume(image)
        try:
            warped, box = self._organ_prior(volume, ticks)
        except MedLSAMError as exc:
            self.status.setText(str(exc))
            return
        own_ticks = ticks if np.any(ticks == PRESENT) else None
        progress, use_sam = self.job.reporter(), self.organ_sam.isChecked()
        from medlsam_training.cam.organ import seed_organ_volume
        from medlsam_training.segmentation.segmenters import load_segmenter

        def work():
            progress(0, 2, "loading LiteMedSAM" if use_sam else "prior")
            mask, prior, kind = seed_organ_volume(volume, target, segmenter=load_segmenter("litemedsam") if use_sam
                                                  else None, warped=warped, box=box, own_ticks=own_ticks)
            progress(2, 2, f"prior: {kind.value}")
            return target, volume, {"prior": prior.astype(np.uint8), "mask": mask.astype(np.uint8)}, []

        self.job.start(work, self._seeded, message=f"seeding organ {target} on {image}…")

    def _organ_prior(self, volume, ticks: np.ndarray):
        """(warped mask or None, box or None) for the organ path; one clear line when neither is there."""
        from napari.layers import Shapes

        from medlsam_training.volumes.boxes import Box3D

        labels_name = self.labels_box.currentText()
        if labels_name and labels_name in self.viewer.layers:
            data = np.asarray(self.viewer.layers[labels_name].data)
            if data.shape == volume.array.shape and np.any(data == self.value.value()):
                return data == self.value.value(), None
        shapes = [layer for layer in self.viewer.layers if isinstance(layer, Shapes) and len(layer.data)]
        present = np.flatnonzero(ticks == PRESENT)
        if not shapes or not present.size:
            raise MedLSAMError(f"organ seeding needs a prior: label value {self.value.value()} in "
                               f"{labels_name or 'a labels layer'} (the localizer's result), or a box drawn in a "
                               "Shapes layer with the organ's slices ticked present")
        image_layer = self.viewer.layers[self.image_box.currentText()]
        verts = np.concatenate([np.asarray(v)[:, -2:] for v in shapes[-1].data])  # (y, x) in world coordinates
        world = np.column_stack([np.zeros(len(verts)), verts])
        yx = np.array([image_layer.world_to_data(w)[-2:] for w in world])
        lo = np.clip(np.floor(yx.min(0)), 0, np.array(volume.array.shape[1:]) - 1).astype(int)
        hi = np.clip(np.ceil(yx.max(0)), 0, np.array(volume.array.shape[1:]) - 1).astype(int)
        return None, Box3D((lo[1], lo[0], int(present.min())), (hi[1], hi[0], int(present.max())))

    def _seeded(self, result) -> None:
        target, volume, maps, points = result
        self.results[target] = maps
        layers = [(f"{target} pseudo-mask", maps["mask"], "labels", {})]
        if "cam" in maps:
            layers[:0] = [(f"{target} UM-CAM", maps["cam"], "image",
                           {"colormap": "inferno", "blending": "additive", "opacity": 0.5}),
                          (f"{target} uncertainty", maps["uncertainty"], "image",
                           {"colormap": "magma", "visible": False})]
        if "prior" in maps:
            layers[:0] = [(f"{target} prior", maps["prior"], "labels", {"visible": False})]
        for suffix, data, kind, extra in layers:
            if suffix in self.viewer.layers:
                self.viewer.layers.remove(suffix)
            kwargs = layer_kwargs(volume.with_array(data), suffix, labels=kind == "labels")
            kwargs.update(extra)
            if kind == "image":
                kwargs["contrast_limits"] = (0.0, 1.0)
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        name = f"{target} seeds"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        if points:
            self.viewer.add_points(np.array([p for p, _ in points]), name=name, size=6,
                                   face_color=["red" if k else "lime" for _, k in points])
        self.status.setText(f"{target}: pseudo-mask of {int(maps['mask'].sum())} voxels; review it, then accept")

    def accept(self) -> None:
        """Write the pseudo-mask into the chosen labels layer by the chosen policy (default: only voxels that are
        still 0, so painted work stays)."""
        target = self.target.text().strip()
        labels_name = self.labels_box.currentText()
        if target not in self.results or not labels_name:
            self.status.setText("seed a target and choose a labels layer first")
            return
        layer = self.viewer.layers[labels_name]
        mask = self.results[target]["mask"].astype(bool)
        if layer.data.shape != mask.shape:
            self.status.setText(f"{labels_name} has shape {layer.data.shape}, the image {mask.shape}")
            return
        before = np.array(layer.data, copy=True)
        try:
            data = merge_target(before, mask, self.value.value(), self.policy_box.currentData())
        except (MedLSAMError, ValueError) as exc:
            self.status.setText(str(exc))
            return
        self._undo = (labels_name, before)
        apply_labels(layer, data)  # one step of the layer's undo history: Ctrl+Z undoes the accepted seed
        self.undo_btn.setEnabled(True)
        written = int((mask & (data == self.value.value())).sum())
        kept = int(mask.sum()) - written
        self.status.setText(f"accepted {written} voxels as {self.value.value()} into {labels_name}"
                            + (f"; {kept} already labelled voxels kept" if kept else ""))

    def undo(self) -> None:
        if self._undo is not None:
            name, data = self._undo
            apply_labels(self.viewer.layers[name], data)  # the dock's undo is a history step too (Ctrl+Z redoes it)
            self._undo = None
            self.undo_btn.setEnabled(False)
            self.status.setText(f"{name} restored")


def _ranges(flags: np.ndarray) -> list[list[int]]:
    """Runs of True as inclusive [first, last] ranges."""
    idx = np.flatnonzero(flags)
    if not idx.size:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]])
    return [[int(a), int(b)] for a, b in zip(starts, ends)]


__all__ = ["CLASSES", "CamSeedWidget", "SHORTCUTS", "TagStrip"]
