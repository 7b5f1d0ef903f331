"""What every test-time adaptation method is: a registry entry that, once per scan, turns the
scan's working-scale input into an :class:`Adaptation` (the network to run and how to change its
input). The per-scan loop and the entry point are in ``run.py``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ...config import ADAPT, AdaptConfig
from ...shift.domain_fit import Features
from ..predictor import Predictor

Transform = Callable[[torch.Tensor], torch.Tensor]  # (N, 3, h, w) working-scale input -> the same shape


@dataclass
class Adaptation:
    """One scan's adaptation: run ``predictor`` on ``transform(input)`` for every image or slice of it."""

    predictor: Predictor  # the model handed in, or a copy adapted to this scan (never the original changed)
    transform: Transform | None = None  # None: the input is left as it is
    info: dict[str, Any] = field(default_factory=dict)  # what was done, for the report (JSON-safe)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.transform is None else self.transform(x)


class Method(ABC):
    """One adaptation method. An instance may keep state across scans (the prompt's memory); the
    model it is handed is never changed."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line, for --help and the dock
    changes_input: ClassVar[bool]  # True: the fit score after adaptation differs from the one before
    training_free: ClassVar[bool]
    # the AdaptConfig fields it reads, in the order the CLI names them (model.json's "adapt" may set any)
    settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: AdaptConfig = ADAPT):
        self.config = config

    @abstractmethod
    def adapt(self, predictor: Predictor, inputs: torch.Tensor, features: Features) -> Adaptation:
        """``inputs``: (N, 3, h, w) the scan at the working scale (a volume's fitting slices);
        ``features``: its style and intensity as the fit check sees them (``domain_fit``)."""


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in METHODS:
        raise ValueError(f"adaptation method {cls.name!r} is registered twice")
    METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return list(METHODS)
