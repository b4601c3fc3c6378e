"""What the annotator dock shares between its panels: the project, the open volume and its layers.

Qt-free apart from napari's viewer API, so panels stay thin and the logic stays testable.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from medlsam_training.medlam.preprocess import looks_like_ct
from medlsam_training.project.folder import Project
from medlsam_training.volumes.io import read_label, read_volume, write_mask
from medlsam_training.volumes.volume import Volume

from .corrections import load_itk_in_background, painted_slices
from .label_history import apply_labels
from .layer_geometry import layer_kwargs

log = logging.getLogger(__name__)
POINTS_LAYER = "extreme points"
BOX_LAYER = "MedLSAM box"
PROMPT_LAYER = "SAM prompt"
CHANGES_LAYER = "changed by update"


_STATES: "weakref.WeakKeyDictionary[object, AnnotatorState]" = weakref.WeakKeyDictionary()


def _save_after_undo(layer, state: "AnnotatorState") -> None:
    """napari's undo and redo change the data without a paint event: save after them too (autosave holds)."""
    for name in ("undo", "redo"):
        step = getattr(layer, name)

        def wrapped(step=step, name=name) -> None:
            step()
            state.save_mask(name)
        setattr(layer, name, wrapped)


def state_for(viewer) -> "AnnotatorState":
    """The one state of a viewer, shared by every dock on it: two docks never hold two copies of a project
    (whichever saved last would win)."""
    state = _STATES.get(viewer)
    if state is None:
        state = _STATES[viewer] = AnnotatorState(viewer)
    return state


class AnnotatorState:
    """The project, the volume on screen, its image/mask/points layers, and change listeners."""

    def __init__(self, viewer, project: Project | None = None):
        self.viewer = viewer
        self.project = project
        self.volume_name: str | None = None
        self.volume: Volume | None = None
        self.segmenter_cache: dict[str, object] = {}  # loaded models, keyed by spec+device
        # per volume, for instant re-prompting; only the last few visited (each holds slice embeddings in RAM)
        self.volume_segmenters: OrderedDict[str, object] = OrderedDict()
        self._saved_mask: np.ndarray | None = None  # the mask as last written: locked labels are restored from it
        self._automatic = False  # True while the tool (not the annotator) writes into the mask layer
        self._listeners: list[Callable[[str], None]] = []
        self.attention = None  # the widget the user should read now (a refusal, a result): the dock scrolls to it
        # the brush paints the active target's label, and picking a label in the layer's controls picks its target
        self.on_change(lambda what: self.sync_brush() if what in ("active_target", "targets", "project") else None)
        self.on_change(lambda what: self._name_labels(self.mask_layer) if what == "targets" else None)

    # --- listeners ------------------------------------------------------------------------
    def on_change(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def ask_attention(self, widget) -> None:
        """Bring ``widget`` (a panel's message) into view in its dock: on a 768-pixel screen the step that needs the
        user may be below the fold."""
        self.attention = widget
        self.changed("attention")

    def changed(self, what: str) -> None:
        for cb in list(self._listeners):
            try:
                cb(what)
            except Exception:  # one panel's bug must not break the others
                log.exception("listener failed on %s", what)

    # --- project --------------------------------------------------------------------------
    def open_project(self, folder: str | Path) -> Project:
        if self.project is not None and self.project.folder.resolve() == Path(folder).resolve():
            self.changed("project")  # already open on this viewer: the same object, shown by every dock
            return self.project
        self.project = Project.open(folder)
        self.volume_name, self.volume = None, None
        self.volume_segmenters.clear()
        self.changed("project")
        return self.project

    # --- layers of the open volume --------------------------------------------------------
    @property
    def image_layer(self):
        return self._layer(f"{self.volume_name}") if self.volume_name else None

    @property
    def mask_layer(self):
        return self._layer(f"{self.volume_name} mask") if self.volume_name else None

    @property
    def points_layer(self):
        return self._layer(POINTS_LAYER)

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def show_volume(self, name: str) -> None:
        """Open a project volume: image, its mask (if saved), and the extreme-points layer."""
        if self.project is None:
            raise RuntimeError("no project is open")
        volume = read_volume(self.project.volume_path(name))
        for layer in list(self.viewer.layers):
            if layer.name != PROMPT_LAYER:
                self.viewer.layers.remove(layer)
        self.volume_name, self.volume = name, volume
        self.viewer.add_image(volume.array, **layer_kwargs(volume, name))
        mask_path = self.project.mask_path(name)
        wide = max((t.label for t in self.project.targets), default=0) > 255
        mask = np.zeros(volume.array.shape, np.uint16 if wide else np.uint8)
        if mask_path.is_file():
            mask = read_label(mask_path, volume, allow_empty=True).array.astype(mask.dtype)
        self._saved_mask = mask.copy()
        labels = self.viewer.add_labels(mask, **layer_kwargs(volume.with_array(mask), f"{name} mask", labels=True))
        self._name_labels(labels)
        labels.events.paint.connect(lambda event: self._record_corrections(event.value))
        labels.events.paint.connect(lambda event: self.save_mask("painted"))
        labels.events.selected_label.connect(lambda event: self._target_from_brush())
        _save_after_undo(labels, self)
        self.sync_brush(labels)
        self._show_boxes(name, volume)
        points = self.viewer.add_points(np.empty((0, 3)), name=POINTS_LAYER, ndim=3, size=4, face_color="yellow",
                                        affine=volume.geometry.affine_zyx())
        points.editable = self.project.entry(name).template
        self.viewer.layers.selection.active = points if self.project.entry(name).template else labels
        if points.editable:  # a template is opened to click on: ready to click, not to pan (key 2 not needed)
            points.mode = "add"
        self.frame_body(volume)
        self.changed("volume")

    def frame_body(self, volume: Volume) -> None:
        """Name the axes as a reader does (world axes are LPS: the slider steps through axial slices) and zoom onto
        the scanned body: a head-and-neck scan padded to a large field of view otherwise opens as a small island."""
        self.viewer.dims.axis_labels = ("axial (S)", "coronal (P)", "sagittal (L)")
        self.viewer.reset_view()
        arr = volume.array
        body = arr > -500 if looks_like_ct(volume) else arr > np.percentile(arr, 20)
        if not body.any():
            return
        idx = [np.nonzero(body.any(axis=tuple(a for a in range(3) if a != k)))[0] for k in range(3)]
        corners = np.array([[z, y, x] for z in (idx[0][0], idx[0][-1]) for y in (idx[1][0], idx[1][-1])
                            for x in (idx[2][0], idx[2][-1])], float)
        affine = volume.geometry.affine_zyx()
        world = corners @ affine[:3, :3].T + affine[:3, 3]
        lo, hi = world.min(0), world.max(0)
        full = np.array([[0, 0, 0], np.array(arr.shape) - 1], float) @ affine[:3, :3].T + affine[:3, 3]
        span_full, span_body = np.ptp(full, 0)[1:], np.maximum(hi - lo, 1.0)[1:]
        self.viewer.camera.center = tuple((lo + hi) / 2)
        self.viewer.camera.zoom = self.viewer.camera.zoom * 0.9 * float(np.min(span_full / span_body))
        self.viewer.dims.set_point(0, float((lo[0] + hi[0]) / 2))

    def sync_brush(self, layer=None) -> None:
        """The mask layer's brush label is the active target's label value (a stroke never paints another organ)."""
        layer = layer if layer is not None else self.mask_layer
        p = self.project
        if layer is None or p is None or not p.active_target or not any(t.name == p.active_target for t in p.targets):
            return
        value = p.target(p.active_target).label
        if layer.selected_label != value:
            layer.selected_label = value

    def _target_from_brush(self) -> None:
        """A label picked in the layer's own controls makes its target the active one (the targets list follows)."""
        layer, p = self.mask_layer, self.project
        if layer is None or p is None:
            return
        owner = next((t.name for t in p.targets if t.label == layer.selected_label), None)
        if owner is not None and owner != p.active_target:
            p.active_target = owner
            p.save()
            self.changed("active_target")

    def _record_corrections(self, atoms) -> None:
        """The annotator's stroke: the axial slices it touched are corrected slices of each target it painted or
        painted over (kept in the project; an update never changes them).  The tool's own writes do not count."""
        p, name = self.project, self.volume_name
        if self._automatic or p is None or name is None:
            return
        owners = {t.label: t.name for t in p.targets}
        locked = set(p.locked_targets(name))
        new = False
        for value, zs in painted_slices(atoms).items():
            target = owners.get(value)
            if target is not None and target not in locked:
                new |= p.add_corrected(name, target, zs)
        if new:
            load_itk_in_background()
            self.changed("corrections")

    def _show_boxes(self, name: str, volume: Volume) -> None:
        """The localized 3D boxes of the last run, one rectangle per slice, in each target's colour."""
        results = self.project.folder / self.project.output_dir / "medlsam_results.json"
        if not results.is_file():
            return
        try:
            targets = json.loads(results.read_text()).get(name, {}).get("targets", {})
        except (OSError, json.JSONDecodeError):
            return
        rects, colours = [], []
        for target, info in targets.items():
            x0, y0, z0, x1, y1, z1 = info["box"]
            colour = next((t.color for t in self.project.targets if t.name == target), "cyan")
            for z in range(z0, z1 + 1):
                rects.append([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]])
                colours.append(colour)
        if rects:
            self.viewer.add_shapes(np.array(rects, float), shape_type="rectangle", name=BOX_LAYER, edge_color=colours,
                                   face_color="transparent", edge_width=1, affine=volume.geometry.affine_zyx(),
                                   opacity=0.8)

    def set_mask(self, mask: np.ndarray) -> int:
        """Put an automatic result into the open mask as one step of the layer's undo history (Ctrl+Z undoes it)
        and save it.  Returns the number of voxels changed."""
        layer = self.mask_layer
        self._automatic = True  # its paint event is not the annotator's correction
        try:
            changed = apply_labels(layer, mask) if layer is not None else 0
        finally:
            self._automatic = False
        if changed:  # napari's paint event fires before data_setitem writes the data: its autosave saw the old mask
            self.save_mask("automatic change")
        return changed

    def show_changes(self, changed: np.ndarray) -> None:
        """The voxels an update changed, as a layer of their own above the mask (replaced by the next update); the
        mask layer stays the active one, so the brush is ready."""
        if self.volume is None:
            return
        data = np.asarray(changed, np.uint8)
        if CHANGES_LAYER in self.viewer.layers:
            self.viewer.layers[CHANGES_LAYER].data = data
        else:
            self.viewer.add_labels(data, **layer_kwargs(self.volume.with_array(data), CHANGES_LAYER, labels=True),
                                   opacity=0.5)
        if self.mask_layer is not None:
            self.viewer.layers.selection.active = self.mask_layer

    def reload_mask(self) -> int:
        """The open volume's mask file (a run just wrote it) into the open layer, as one undo step."""
        if self.project is None or self.volume is None or self.mask_layer is None:
            return 0
        path = self.project.mask_path(self.volume_name)
        if not path.is_file():
            return 0
        changed = self.set_mask(read_label(path, self.volume, allow_empty=True).array)
        if BOX_LAYER in self.viewer.layers:
            self.viewer.layers.remove(BOX_LAYER)
        self._show_boxes(self.volume_name, self.volume)
        return changed

    def _name_labels(self, layer) -> None:
        """Target names and colours in the layer's metadata ('Save layer' as .seg.nrrd writes them as Slicer's
        segment names and colours), and the layer drawn in each target's colour: one colour per target in the
        target list, the boxes, the mask and every export."""
        if self.project is None or layer is None:
            return
        layer.metadata["label_names"] = {str(t.label): t.name for t in self.project.targets}
        colours = {str(t.label): t.color for t in self.project.targets}
        if layer.metadata.get("label_colours") != colours or not isinstance(layer.colormap, DirectLabelColormap):
            layer.metadata["label_colours"] = colours
            layer.colormap = DirectLabelColormap(color_dict={None: "#808080", 0: "transparent",
                                                             **{int(v): c for v, c in colours.items()}})

    def locked_labels(self) -> list[int]:
        """Label values of the open volume's locked (reviewed) targets."""
        if self.project is None or self.volume_name is None:
            return []
        return [self.project.target(t).label for t in self.project.locked_targets(self.volume_name)]

    def _restore_locked(self) -> int:
        """Undo any change to a locked target's voxels (a paint stroke over it, or painting it elsewhere)."""
        locked, saved, layer = self.locked_labels(), self._saved_mask, self.mask_layer
        if not locked or saved is None or layer is None or saved.shape != layer.data.shape:
            return 0
        data = layer.data
        changed = (np.isin(saved, locked) | np.isin(data, locked)) & (data != saved)
        n = int(changed.sum())
        if n:
            data[changed] = saved[changed]
            layer.refresh()
        return n

    def save_mask(self, reason: str = "saved") -> Path | None:
        """Write the open volume's mask atomically next to the project (autosave after every change).

        Changes to locked targets are reverted first: a reviewed structure cannot be painted over by accident.
        """
        if self.project is None or self.volume is None or self.mask_layer is None:
            return None
        restored = self._restore_locked()
        if restored:
            from napari.utils.notifications import show_warning

            show_warning(f"{restored} voxels of locked (reviewed) targets were restored; unlock a target to edit it.")
        path = self.project.mask_path(self.volume_name)
        self._name_labels(self.mask_layer)
        self._saved_mask = np.array(self.mask_layer.data, copy=True)
        write_mask(self._saved_mask, self.volume, path)
        entry = self.project.entry(self.volume_name)
        status = entry.status if entry.status in ("reviewed", "segmented") else "segmented"
        self.project.set_status(self.volume_name, status, path)
        log.info("%s: mask %s (%s)", self.volume_name, path, reason)
        self.changed("mask")
        return path
