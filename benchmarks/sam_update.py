"""An update from corrected slices by the slice segmenter (LiteMedSAM) on fine in-plane grids (issue 33, item 4):
measured by ``benchmarks/correction.py --part sam`` and not offered in the product (on the 1 mm abdomen CT it needed
more slices than filling between them, at seconds per update against milliseconds: docs/benchmarks.md section 9).

From each corrected slice, the next slice is prompted with the box of the slice before it (its mask's box + a
margin), slice after slice: between two corrected slices each half from its nearer end, beyond the outermost ones
while the prediction still agrees with the mask it would replace (Dice >= :data:`AGREE`; where it stops agreeing
the organ has ended or the model has leaked, and the slices from there keep what they had).  Measured against
filling between slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medlsam_training.correction.constraints import keep_corrected
from medlsam_training.segmentation.propagate import VolumeSegmenter, mask_box_2d

#: beyond the outermost corrected slices a prediction replaces a slice only while its Dice with it reaches this
AGREE = 0.5
#: pixels added around the previous slice's mask box (SAM models were trained on loose boxes)
MARGIN_PX = 3


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0


def sam_from_corrected(segmenter: VolumeSegmenter, mask: np.ndarray, corrected: Sequence[int],
                       agree: float = AGREE, margin_px: int = MARGIN_PX) -> np.ndarray:
    """``mask`` [z, y, x] on the segmenter's volume grid with the slices next to the ``corrected`` ones re-segmented
    from them (see the module); the corrected slices as drawn."""
    mask = np.asarray(mask, bool)
    depth = mask.shape[0]
    zs = sorted({int(z) for z in corrected if 0 <= int(z) < depth and mask[int(z)].any()})
    out = mask.copy()
    for i, c in enumerate(zs):
        for step in (1, -1):
            neighbour = zs[i + 1] if step == 1 and i + 1 < len(zs) else zs[i - 1] if step == -1 and i > 0 else None
            # between two corrected slices: up to the middle (the other end takes the rest); beyond: to the edge
            if neighbour is None:
                stop = depth - 1 if step == 1 else 0
            else:
                stop = (c + neighbour) // 2 if step == 1 else (neighbour + c) // 2 + 1
            prev, z = mask[c], c + step
            while (z <= stop if step == 1 else z >= stop):
                box = mask_box_2d(prev, margin_px)
                if box is None:
                    break
                pred = segmenter.segment_volume_slice(z, box)
                if not pred.any() or (neighbour is None and _dice(pred, mask[z]) < agree):
                    break
                out[z] = prev = pred
                z += step
    return keep_corrected(mask, out, zs)
