"""Review: move through volumes, re-prompt SAM on the current slice from cached embeddings, re-propagate,
lock a finished target, mark the volume reviewed.  Paint/erase corrections use napari's own Labels tools; every
accepted change autosaves.  SAM's new voxels go into the one label map by the project's policy for existing labels
(``training/segmentation/label_merge.py``); locked targets are never changed."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QGridLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from medlsam_training.segmentation.label_merge import merge_target
from medlsam_training.segmentation.propagate import PropagationConfig, VolumeSegmenter

from ..dock_job import DockJob
from ..jobs import load_models
from ..state import PROMPT_LAYER, AnnotatorState
from ._messages import show_error

POSITIVE, NEGATIVE = "SAM + points", "SAM − points"
VISITED_VOLUMES_KEPT = 2  # volumes whose embeddings stay in RAM for instant re-prompting


class ReviewPanel(QWidget):
    @property
    def worker(self):
        """The running prompt's worker (None when idle)."""
        return self.job.worker

    def __init__(self, state: AnnotatorState):
        super().__init__()
        self.state = state
        buttons = {
            "◀ previous": lambda: self._step(-1), "next ▶": lambda: self._step(1),
            "Draw prompt box": self._prompt_layers, "Segment this slice": self.segment_slice,
            "Re-propagate": self.repropagate, "Update the rest ⟳": self.update_rest,
            "Mark reviewed ✓": self.mark_reviewed,
        }
        tips = {"Re-propagate": "Propagate the mask from this slice to the slices above and below it",
                "Draw prompt box": "Add a layer for a box or points on the current slice",
                "Segment this slice": "Re-segment the current slice from the box / points drawn on it",
                "Update the rest ⟳": "Carry the active target's corrected slices (those you painted) to its other "
                                     "slices; corrected slices never change, Ctrl+Z undoes it (Shift+U)",
                "Mark reviewed ✓": "Save, lock every target of this volume and never re-segment it"}
        grid = QGridLayout()
        self.buttons = {}
        for i, (text, slot) in enumerate(buttons.items()):
            b = QPushButton(text)
            b.setToolTip(tips.get(text, ""))
            b.clicked.connect(slot)
            grid.addWidget(b, i // 2, i % 2)
            self.buttons[text] = b
        self.lock = QPushButton("Lock target")
        self.lock.setCheckable(True)
        self.lock.setToolTip("A locked (reviewed) target is never re-segmented, re-prompted or painted over on this "
                             "volume; other targets can still be corrected")
        self.lock.clicked.connect(self.set_locked)
        grid.addWidget(self.lock, len(buttons) // 2, len(buttons) % 2)
        self.status = QLabel("Correct a few axial slices with the mask layer's paint/erase tools, then 'Update the "
                             "rest'; or draw a box / click points and press 'Segment this slice'.")
        self.status.setWordWrap(True)
        self.corrections = QLabel()
        self.corrections.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.corrections)
        layout.addWidget(self.status)
        self.job = DockJob("MedLSAM prompt", status=self.status, buttons=(*self.buttons.values(), self.lock),
                           on_idle=self._sync_lock)
        state.on_change(lambda what: self._sync_lock() if what in ("volume", "active_target", "status", "project",
                                                                   "targets") else None)
        state.on_change(lambda what: self._show_corrections() if what in ("volume", "active_target", "project",
                                                                          "targets", "corrections") else None)
        state.viewer.bind_key("Shift-U", lambda viewer: self.update_rest(), overwrite=True)

    # --- navigation -----------------------------------------------------------------------
    def _step(self, delta: int) -> None:
        p = self.state.project
        if p is None:
            return
        names = [v.name for v in p.volumes if v.status != "missing"]
        if not names:
            return
        i = names.index(self.state.volume_name) if self.state.volume_name in names else -delta
        try:
            self.state.show_volume(names[(i + delta) % len(names)])
        except Exception as exc:
            show_error(self, "Cannot open volume", exc)

    def mark_reviewed(self) -> None:
        if self.state.volume_name is None:
            return
        self.state.save_mask("reviewed")
        self.state.project.mark_reviewed(self.state.volume_name)
        self.state.changed("status")
        self.status.setText(f"{self.state.volume_name} marked reviewed and saved; its targets are locked.")

    # --- locks ----------------------------------------------------------------------------
    def _active_locked(self) -> bool:
        p, name = self.state.project, self.state.volume_name
        return bool(p and name and p.active_target and p.active_target in p.locked_targets(name))

    def _sync_lock(self) -> None:
        p = self.state.project
        self.lock.setEnabled(bool(p and self.state.volume_name and p.active_target))
        self.lock.setChecked(self._active_locked())
        self.lock.setText(f"Locked: {p.active_target}" if self._active_locked() else "Lock target")

    def set_locked(self, locked: bool) -> None:
        """Lock or unlock the active target on the open volume (the changes so far are saved first)."""
        p, name = self.state.project, self.state.volume_name
        if p is None or name is None or not p.active_target:
            return
        self.state.save_mask("locked" if locked else "unlocked")
        p.set_locked(name, p.active_target, locked)
        self.state.changed("status")
        self.status.setText(f"{p.active_target} on {name} {'locked' if locked else 'unlocked'}.")

    # --- corrections in 3D ------------------------------------------------------------------
    def _show_corrections(self) -> None:
        p, name = self.state.project, self.state.volume_name
        if not (p and name and p.active_target and any(t.name == p.active_target for t in p.targets)):
            self.corrections.setText("")
            return
        zs = p.corrected_slices(name, p.active_target)
        listed = ", ".join(map(str, zs[:12])) + (", …" if len(zs) > 12 else "")
        self.corrections.setText(f"{p.active_target}: {len(zs)} corrected slice{'s' if len(zs) != 1 else ''}"
                                 + (f" ({listed})" if zs else " — paint a slice to correct it"))

    def update_rest(self) -> None:
        """The active target's other slices from its corrected ones (``correction.correct_in_project``), off the
        GUI thread; applied as one undo step, never over voxels painted while it ran; the changes are shown."""
        from medlsam_training.correction.in_project import correct_in_project

        if self.state.volume is None or self._target_label() is None:
            return
        p, name, target = self.state.project, self.state.volume_name, self.state.project.active_target
        zs = p.corrected_slices(name, target)
        if not zs:
            return show_error(self, "Nothing corrected", f"paint or erase {target} on a slice first")
        snapshot = np.array(self.state.mask_layer.data, copy=True)
        volume = self.state.volume

        def apply(out) -> None:
            new, result = out
            current = np.asarray(self.state.mask_layer.data)
            take = (new != snapshot) & (current == snapshot)  # a voxel painted meanwhile stays the annotator's
            merged = current.copy()
            merged[take] = new[take]
            n = self.state.set_mask(merged)  # one undo step; saved (none when nothing changed)
            self.state.show_changes(take)
            if n == 0:  # no step was added: Ctrl+Z would undo the annotator's own last stroke, so none is offered
                self.status.setText(f"{target}: '{result.describe()}' from {len(zs)} corrected "
                                    f"slice{'s' if len(zs) != 1 else ''} changed nothing"
                                    f"{nothing_changed_why(result, len(zs))}; no undo step was added.")
            else:
                self.status.setText(f"{target}: '{result.describe()}' from {len(zs)} corrected slices changed {n} "
                                    "voxels (layer 'changed by update'); Ctrl+Z undoes it.")
            self.state.ask_attention(self.status)  # the result, not the top of the dock, is in view

        self._run(lambda: correct_in_project(p, name, target, snapshot, volume.array, volume.spacing_zyx), apply)

    # --- prompting ------------------------------------------------------------------------
    def _prompt_layers(self) -> None:
        v, viewer = self.state.volume, self.state.viewer
        if v is None:
            return
        affine = v.geometry.affine_zyx()
        if PROMPT_LAYER not in viewer.layers:
            viewer.add_shapes(name=PROMPT_LAYER, ndim=3, edge_color="cyan", face_color="transparent", edge_width=1,
                              affine=affine)
        for name, colour in ((POSITIVE, "lime"), (NEGATIVE, "red")):
            if name not in viewer.layers:
                viewer.add_points(np.empty((0, 3)), name=name, ndim=3, size=3, face_color=colour, affine=affine)
        shapes = viewer.layers[PROMPT_LAYER]
        viewer.layers.selection.active = shapes
        shapes.mode = "add_rectangle"

    def current_slice(self) -> int:
        layer = self.state.image_layer
        z = layer.world_to_data(self.state.viewer.dims.point)[0]
        return int(np.clip(round(float(z)), 0, self.state.volume.array.shape[0] - 1))

    def _prompts(self, z: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        viewer = self.state.viewer
        box = None
        if PROMPT_LAYER in viewer.layers:
            # the last box drawn on this slice; boxes drawn on other slices are not this slice's prompt
            on_slice = [np.asarray(c) for c in viewer.layers[PROMPT_LAYER].data if round(float(np.mean(c[:, 0]))) == z]
            if on_slice:
                corners = on_slice[-1]
                box = np.array([corners[:, 2].min(), corners[:, 1].min(), corners[:, 2].max(), corners[:, 1].max()])
        pts, labels = [], []
        for name, value in ((POSITIVE, 1), (NEGATIVE, 0)):
            if name in viewer.layers:
                for p in np.asarray(viewer.layers[name].data):
                    if round(float(p[0])) == z:
                        pts.append([p[2], p[1]])
                        labels.append(value)
        return box, (np.array(pts) if pts else None), (np.array(labels) if labels else None)

    def _volume_segmenter(self) -> VolumeSegmenter:
        name = self.state.volume_name
        if name not in self.state.volume_segmenters:
            _, segmenter = load_models(self.state.project, self.state.segmenter_cache)
            from medlsam_training.segmentation.embedding_cache import default_cache_dir

            self.state.volume_segmenters[name] = VolumeSegmenter(self.state.volume, segmenter,
                                                                 cache_dir=default_cache_dir())
        cache = self.state.volume_segmenters
        cache.move_to_end(name)
        while len(cache) > VISITED_VOLUMES_KEPT:
            cache.popitem(last=False)
        return cache[name]

    def _target_label(self) -> int | None:
        p = self.state.project
        if not p or not p.active_target:
            show_error(self, "No target", "pick the active target first")
            return None
        if self._active_locked():
            show_error(self, "Target locked", f"{p.active_target} is locked (reviewed) on {self.state.volume_name}; "
                       "unlock it to re-segment it")
            return None
        return p.target(p.active_target).label

    def _merge(self, current: np.ndarray, mask: np.ndarray, label: int) -> np.ndarray:
        """SAM's mask written into the label map by the project's policy; locked targets untouched."""
        return merge_target(current, mask, label, self.state.project.existing, self.state.locked_labels())

    def _run(self, job, on_done) -> None:
        if self.job.busy:
            return
        volume = self.state.volume_name

        def apply(result) -> None:
            if self.state.volume_name != volume:  # another volume was opened meanwhile: never write into it
                show_error(self, "Prompt dropped", f"{volume} is no longer open; its result was not applied")
                return
            on_done(result)

        self.job.start(job, apply, message="working… (the first prompt on a volume loads the model and embeds the "
                       "slice)", on_error=lambda exc: show_error(self, "Prompt failed", exc))

    def segment_slice(self) -> None:
        if self.state.volume is None or (label := self._target_label()) is None:
            return
        z = self.current_slice()
        box, pts, lab = self._prompts(z)
        if box is None and pts is None:
            return show_error(self, "No prompt", "draw a box or click + / − points on this slice")

        def apply(mask2d: np.ndarray) -> None:
            data = np.asarray(self.state.mask_layer.data).copy()
            data[z] = self._merge(data[z], mask2d, label)
            self.state.set_mask(data)  # one undo step; its paint event saves it
            self.status.setText(f"slice {z}: {int(mask2d.sum())} pixels from the prompt, saved (Ctrl+Z undoes).")

        self._run(lambda: self._volume_segmenter().segment_volume_slice(z, box, pts, lab), apply)

    def repropagate(self) -> None:
        if self.state.volume is None or (label := self._target_label()) is None:
            return
        z = self.current_slice()
        data = np.asarray(self.state.mask_layer.data)
        seed = data[z] == label
        if not seed.any():
            return show_error(self, "Nothing to propagate", f"slice {z} has no {self.state.project.active_target}")
        zs = np.nonzero((data == label).any(axis=(1, 2)))[0]
        z_range = (int(zs.min()) - 3, int(zs.max()) + 3)

        def apply(mask3d: np.ndarray) -> None:
            new = self._merge(np.asarray(self.state.mask_layer.data), mask3d, label)
            self.state.set_mask(new)  # one undo step; its paint event saves it
            self.status.setText(f"re-propagated from slice {z}: {int(mask3d.sum())} voxels, saved (Ctrl+Z undoes).")

        config = PropagationConfig(mode="mask")
        self._run(lambda: self._volume_segmenter().repropagate_from_slice(z, seed, z_range, config), apply)


def nothing_changed_why(result, corrected: int) -> str:
    """Why an update changed no voxel, when the reason is known: what the annotator can do next."""
    if result.method == "fill":
        votes = "" if result.network else " (no atlas votes for it: the run did not fuse template masks here)"
        return (f": filling between slices{votes} needs two corrected slices holding the target" if corrected < 2
                else f": the corrected slices already agree with the slices between them{votes}")
    if result.method == "none":
        return ": the target has no voxels and no votes to update from"
    return ": the other slices already agree with the corrected ones"
