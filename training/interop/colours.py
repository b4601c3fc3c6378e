"""Display colours per label value, the same in every export (Slicer's generic anatomy colours are not shipped)."""

from __future__ import annotations

# 12 distinguishable colours (Glasbey-like), cycled by label value; all light enough to read on a grey CT (the darker
# purple, brown and navy of the first palette were hard to see: issue 42)
_PALETTE = [(0.90, 0.10, 0.10), (0.10, 0.60, 0.90), (0.20, 0.75, 0.25), (0.95, 0.65, 0.10), (0.80, 0.50, 1.00),
            (0.95, 0.85, 0.20), (0.10, 0.80, 0.80), (0.90, 0.40, 0.70), (0.90, 0.60, 0.35), (0.50, 0.80, 0.10),
            (0.45, 0.60, 1.00), (0.70, 0.70, 0.70)]


def colour_for(value: int) -> tuple[float, float, float]:
    """RGB in [0, 1] for a label value: a new project target's colour too, so that an export without a project
    shows the colours the annotator showed."""
    return _PALETTE[(int(value) - 1) % len(_PALETTE)]


def colour_hex(value: int) -> str:
    """:func:`colour_for` as '#rrggbb'."""
    return "#" + "".join(f"{round(c * 255):02x}" for c in colour_for(value))


def hex_to_rgb(text: str) -> tuple[float, float, float]:
    """'#rrggbb' -> RGB in [0, 1]."""
    text = text.lstrip("#")
    return tuple(int(text[i:i + 2], 16) / 255 for i in (0, 2, 4))
