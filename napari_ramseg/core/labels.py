"""How the integer values of a mask map onto the network's output channels, and the schemes of the bundled tasks.

Not a default but what the labels are: the data layouts, the losses, the metrics, the measures and every model file
name their structures through a :class:`LabelScheme` (``TrainConfig.labels`` holds a run's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

LabelKind = Literal["nested", "exclusive"]


@dataclass(frozen=True)
class LabelScheme:
    """How the integer class values of a mask map onto the network's output channels.

    Masks are class-index images: 0 is background and value ``i`` (1-based) is ``names[i - 1]``.

    - ``nested``: multi-label sigmoid heads for structures that contain each other, ordered from the
      outermost inwards (``["disc", "cup"]``: the disc includes the cup). Channel ``k`` is the
      binary target ``mask >= k + 1``. A single name (``["vessel"]``) is the plain binary case.
    - ``exclusive``: one softmax over background plus ``names``; the target is the class index.
    """

    names: tuple[str, ...] = ("vessel",)
    kind: LabelKind = "nested"

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("a label scheme needs at least one foreground label")
        if self.kind not in ("nested", "exclusive"):
            raise ValueError(f"label kind must be 'nested' or 'exclusive', not {self.kind!r}")
        object.__setattr__(self, "names", tuple(self.names))

    @property
    def num_classes(self) -> int:
        """Foreground classes, i.e. the largest valid mask value."""
        return len(self.names)

    @property
    def out_channels(self) -> int:
        """Channels of the segmentation head."""
        return self.num_classes if self.kind == "nested" else self.num_classes + 1

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LabelScheme":
        return cls(names=tuple(data["names"]), kind=data["kind"])


VESSELS = LabelScheme(("vessel",), "nested")
OPTIC_DISC_CUP = LabelScheme(("disc", "cup"), "nested")
PROSTATE = LabelScheme(("prostate",), "exclusive")
