"""The Segment dock's clinical measures as text and as the Labels layer's features (the measures
themselves come from ``core/review/pipeline.segment_case``). Plain functions: no Qt here.
"""

from __future__ import annotations

from typing import Any

UNRELIABLE = "⚠ unreliable: the image does not fit the model's training data, so these measures may be wrong"


def measures_text(measures: dict[str, Any], class_names: list[str], reliable: bool = True) -> str:
    """One or two lines for the dock: the ratios first, then each structure's size; led by a warning
    when the image does not fit the model."""
    if not measures:
        return ""
    parts = [] if reliable else [UNRELIABLE]
    if "vcdr" in measures:
        ratio = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
        parts.append(f"vCDR {ratio(measures['vcdr'])} · horizontal CDR {ratio(measures['hcdr'])}")
    sizes = []
    for name in [*class_names, "rim"]:
        if f"{name}_mm2" in measures:
            sizes.append(f"{name} {measures[f'{name}_mm2']:.2f} mm²")
        elif f"{name}_ml" in measures:
            sizes.append(f"{name} {measures[f'{name}_ml']:.1f} mL")
        elif f"{name}_px" in measures:
            sizes.append(f"{name} {measures[f'{name}_px']} px")
        elif f"{name}_voxels" in measures:
            sizes.append(f"{name} {measures[f'{name}_voxels']} voxels")
    if sizes:
        parts.append(", ".join(sizes))
    if measures.get("cup_inside_disc") is False:
        parts.append("⚠ the cup reaches the disc's outline: check it")
    if measures.get("kind") == "photograph":
        parts.append(f"whole photograph: disc found (confidence {measures['disc_confidence']:.2f})")
    return "\n".join(parts)


def feature_columns(measures: dict[str, Any], class_names: list[str]) -> dict[str, list]:
    """Per-class columns for the Labels layer's ``features`` table (index 0 is the background)."""
    unit = "px" if any(f"{n}_px" in measures for n in class_names) else "voxels"
    cols = {f"size_{unit}": [None] + [measures.get(f"{n}_{unit}") for n in class_names]}
    if any(f"{n}_mm2" in measures for n in class_names):
        cols["area_mm2"] = [None] + [measures.get(f"{n}_mm2") for n in class_names]
    return cols
