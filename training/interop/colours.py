"""Display colours per label value, the same in every export (Slicer's generic anatomy colours are not shipped)."""

from __future__ import annotations

# 12 distinguishable colours (Glasbey-like), cycled by label value
_PALETTE = [(0.90, 0.10, 0.10), (0.10, 0.60, 0.90), (0.20, 0.75, 0.25), (0.95, 0.65, 0.10), (0.60, 0.30, 0.80),
            (0.95, 0.85, 0.20), (0.10, 0.80, 0.80), (0.90, 0.40, 0.70), (0.55, 0.35, 0.15), (0.50, 0.80, 0.10),
            (0.20, 0.30, 0.70), (0.70, 0.70, 0.70)]


def colour_for(value: int) -> tuple[float, float, float]:
    """RGB in [0, 1] for a label value."""
    return _PALETTE[(int(value) - 1) % len(_PALETTE)]
