"""CT window presets, one click away: soft tissue, bone, lung, brain (width / level in HU)."""

from __future__ import annotations

from qtpy.QtWidgets import QGridLayout, QPushButton, QWidget

from ..state import AnnotatorState

#: name -> (width, level) in HU, the usual radiology settings
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft tissue": (400.0, 40.0),
    "bone": (1800.0, 400.0),
    "lung": (1500.0, -600.0),
    "brain": (80.0, 40.0),
}


def window_limits(name: str) -> tuple[float, float]:
    """(low, high) contrast limits of a preset."""
    width, level = CT_WINDOWS[name]
    return level - width / 2, level + width / 2


class WindowPresets(QWidget):
    """Sets the open volume's contrast (or, without one, the selected image layer's) to a CT window."""

    def __init__(self, state: AnnotatorState):
        super().__init__()
        self.state = state
        grid = QGridLayout(self)  # two by two: the dock stays narrow
        grid.setContentsMargins(0, 0, 0, 0)
        self.buttons = {}
        for i, name in enumerate(CT_WINDOWS):
            width, level = CT_WINDOWS[name]
            button = QPushButton(name)
            button.setToolTip(f"{name} window: width {width:g}, level {level:g} HU")
            button.clicked.connect(lambda _checked=False, n=name: self.apply(n))
            grid.addWidget(button, i // 2, i % 2)
            self.buttons[name] = button

    def _image_layer(self):
        from napari.layers import Image

        layer = self.state.image_layer
        if layer is None:
            active = self.state.viewer.layers.selection.active
            layer = active if isinstance(active, Image) else None
        return layer

    def apply(self, name: str) -> None:
        layer = self._image_layer()
        if layer is None:
            return
        low, high = window_limits(name)
        if layer.contrast_limits_range[0] > low or layer.contrast_limits_range[1] < high:
            layer.contrast_limits_range = (min(low, layer.contrast_limits_range[0]),
                                           max(high, layer.contrast_limits_range[1]))
        layer.contrast_limits = (low, high)
