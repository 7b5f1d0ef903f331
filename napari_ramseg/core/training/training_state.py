"""What a Trainer hands over between two steps so that a run can continue exactly where it stopped.

``Trainer.state_dict()`` gives a :class:`TrainingState`, ``Trainer.load_state_dict()`` puts one back, and
``Trainer.state_layout()`` says what a state must look like to fit the trainer (a :class:`StateLayout`).
How a state is written to files and read back, and the checks that name a file, are ``core/training/resume.py``'s:
it never reaches into the Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import TrainConfig


@dataclass
class TrainingState:
    """A trainer's state between two steps. Tensors are on the CPU."""

    iteration: int
    config: TrainConfig
    domains: list[str]
    history: list[dict[str, Any]]
    best: dict[str, Any] | None  # the best validation so far (its iteration too)
    net: dict[str, torch.Tensor]
    best_net: dict[str, torch.Tensor] | None  # the network at the best validation (rank 0 keeps it)
    optimizer: dict[int, dict[str, torch.Tensor]]  # each parameter's moments, by its index in the optimizer
    torch_rng: torch.Tensor
    lambda_rng: torch.Tensor  # RAM's lambda draws
    pool: dict[str, Any]  # ``SourcePool.state()``
    grad_scaler: dict[str, Any] | None  # fp16 loss scaling
    metadata: dict[str, Any]  # what model.json will say of the run (provenance, the data's description)


@dataclass
class StateLayout:
    """What a :class:`TrainingState` must hold to fit a trainer: the network's tensors (names, shapes and
    dtypes), the shape of each optimised parameter in the optimizer's order, each pool domain's samples."""

    net: dict[str, torch.Tensor]
    parameter_shapes: list[tuple[int, ...]]
    pool_sizes: list[int]


def optimizer_moments(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, torch.Tensor]]:
    """The optimizer's per-parameter state (Adam's moments and step), as CPU tensors."""
    return {int(index): {key: torch.as_tensor(value).detach().cpu().contiguous() for key, value in state.items()}
            for index, state in optimizer.state_dict()["state"].items()}


def load_optimizer_moments(optimizer: torch.optim.Optimizer, moments: dict[int, dict[str, torch.Tensor]],
                           device: torch.device) -> None:
    """Put back what :func:`optimizer_moments` returned; the moments on ``device`` (the step stays on the CPU)."""
    state = optimizer.state_dict()
    state["state"] = {index: {name: value.to(device) if name != "step" else value for name, value in part.items()}
                      for index, part in moments.items()}
    optimizer.load_state_dict(state)


def parameter_shapes(optimizer: torch.optim.Optimizer) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for group in optimizer.param_groups for p in group["params"]]
