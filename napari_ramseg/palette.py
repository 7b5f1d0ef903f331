"""Label colours, shared by the napari layers and the palette PNG masks that ``ramseg predict`` writes.

No Qt, no napari: the CLI and ``io.py`` use it too.
"""

from __future__ import annotations

# one colour per class value; the first is the binary case (vessel, blob, prostate, disc...)
LABEL_COLORS = ("#00e5ff", "#ffd400", "#ff3df5", "#7cff4f", "#ff7b00", "#4f7bff", "#ff4f6d", "#b8ff4f")


def label_color(value: int) -> str:
    """The colour of class value ``value`` (1, 2, ...); the colours repeat after eight classes."""
    return LABEL_COLORS[(int(value) - 1) % len(LABEL_COLORS)]


def png_palette(entries: int = 256) -> list[int]:
    """A flat ``[r, g, b, ...]`` PNG palette: index 0 (background) black, 1..K the label colours."""
    flat = [0, 0, 0]
    for value in range(1, entries):
        hex_ = label_color(value).lstrip("#")
        flat += [int(hex_[i: i + 2], 16) for i in (0, 2, 4)]
    return flat
