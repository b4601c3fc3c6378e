"""One colour per target everywhere (issue 42, item 4): the target list, the mask layer and the .seg.nrrd export
show each target in the project's colour, on real head-and-neck CT."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qtpy")
if not os.environ.get("DISPLAY"):
    pytest.skip("napari layers need a GL context: run the tests under xvfb-run (see README)", allow_module_level=True)

from medlsam_napari.annotator import AnnotatorWidget  # noqa: E402
from medlsam_training.interop.colours import colour_for, hex_to_rgb  # noqa: E402


def test_each_target_has_one_colour_in_the_list_the_mask_and_the_export(make_napari_viewer, hn_project,
                                                                       tmp_path: Path) -> None:
    from medlsam_napari._writer import write_labels
    from medlsam_training.interop.seg_nrrd import read_seg_nrrd

    widget = AnnotatorWidget(make_napari_viewer(), hn_project.folder)
    state = widget.state
    widget.volumes.open("pt_1")
    layer = state.mask_layer
    for t in state.project.targets:
        rgb = hex_to_rgb(t.color)
        np.testing.assert_allclose(rgb, colour_for(t.label), atol=1 / 255)  # a new target's colour is its value's
        np.testing.assert_allclose(layer.colormap.map(t.label)[:3], rgb, atol=1 / 255)  # the mask
        item = next(widget.targets.list.item(i) for i in range(widget.targets.list.count())
                    if widget.targets.list.item(i).text().startswith(t.name))
        assert item.foreground().color().name() == t.color  # the list
    data, attributes, _ = layer.as_layer_data_tuple()
    write_labels(str(tmp_path / "pt_1.seg.nrrd"), data, attributes)
    _, names, colours = read_seg_nrrd(tmp_path / "pt_1.seg.nrrd")
    for t in state.project.targets:
        np.testing.assert_allclose(colours[t.label][:3], hex_to_rgb(t.color), atol=1 / 255)  # the export
    # a target's colour changed in the session follows into the open layer at once
    state.project.targets[0].color = "#00ff00"
    state.changed("targets")
    np.testing.assert_allclose(layer.colormap.map(state.project.targets[0].label)[:3], (0, 1, 0), atol=1 / 255)
