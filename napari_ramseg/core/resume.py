"""The resume state of a training run: ``resume.safetensors`` (tensors) and ``resume.json`` (the rest).

This module owns the format: what ``Trainer`` writes (:func:`save_state`), what ``--resume`` reads
back (:func:`load_state`) and how a folder is checked before any of it is used (:func:`read_resume_state`).

A resume state is written after every validation, every ``TrainConfig.resume_every_s`` seconds of wall
time, and when a run is stopped (``core/stopping.py``); a complete run removes it. Both files are
written atomically, weights first: a crash in between leaves the old JSON, which never describes
weights that were not written completely.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RamsegInputError, one_line
from ..files import atomic_write
from .config import TrainConfig

# torch, safetensors and the checkpoint module are imported where they are used: the Train dock reads
# resume states (has_state, saved_iteration) without loading torch into napari's process

if TYPE_CHECKING:  # pragma: no cover
    from .train import Trainer

RESUME_WEIGHTS = "resume.safetensors"
RESUME_STATE = "resume.json"
_REQUIRED_KEYS = ("iteration", "config", "domains", "pool_rng", "pool_orders")
PROVENANCE_KEYS = ("command", "resumed_with")  # kept from the first run's model.json across resumes


def save_state(trainer: "Trainer") -> None:
    """Model, optimizer and random state, so that ``--resume`` continues exactly where this stopped.

    Under DDP rank 0 writes it: every rank's state is the same (same weights after each step, same
    generators, same pool), so every rank, at any world size, can continue from it.
    """
    if trainer.run_dir is None or not trainer.is_main:
        return
    import torch
    from safetensors.torch import save_file

    from .checkpoint import atomic_write_json

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in trainer.net.state_dict().items()}
    opt = trainer.optimizer.state_dict()
    for index, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.lambda"] = trainer.lambda_generator.get_state()
    if trainer.best_state is not None:
        tensors.update({f"best.{k}": v.contiguous() for k, v in trainer.best_state.items()})
    state = {
        "iteration": trainer.iteration,
        "config": trainer.config.to_dict(),
        "domains": trainer.domains,
        "history": trainer.history,
        "best": trainer.best,
        "pool_rng": _jsonable_bitgen_state(trainer.pool.rng.bit_generator.state),
        "pool_orders": [[int(i) for i in order] for order in trainer.pool._orders],
        "provenance": {k: trainer.extra_metadata[k] for k in PROVENANCE_KEYS if k in trainer.extra_metadata},
    }
    if trainer.scaler is not None:
        state["grad_scaler"] = trainer.scaler.state_dict()
    atomic_write(trainer.run_dir / RESUME_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(trainer.run_dir / RESUME_STATE, state)


def load_state(trainer: "Trainer") -> dict[str, Any]:
    """Put a saved state back into ``trainer``; returns the JSON part."""
    import torch
    from safetensors.torch import load_file

    if trainer.run_dir is None:
        raise ValueError("resume needs a run folder")
    state = json.loads((trainer.run_dir / RESUME_STATE).read_text(encoding="utf-8"))
    tensors = load_file(str(trainer.run_dir / RESUME_WEIGHTS))
    trainer.net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt = trainer.optimizer.state_dict()
    restored: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            restored.setdefault(int(index), {})[name] = value.to(trainer.device) if name != "step" else value
    opt["state"] = restored
    trainer.optimizer.load_state_dict(opt)
    torch.set_rng_state(tensors["rng.torch"])
    trainer.lambda_generator.set_state(tensors["rng.lambda"])
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    trainer.best_state = best or None
    trainer.best = state.get("best")
    trainer.iteration = int(state["iteration"])
    trainer.history = list(state.get("history", []))
    trainer.pool.rng.bit_generator.state = _bitgen_state_from_json(state["pool_rng"])
    trainer.pool._orders = [list(order) for order in state["pool_orders"]]
    if trainer.scaler is not None and state.get("grad_scaler"):
        trainer.scaler.load_state_dict(state["grad_scaler"])
    return state


def remove_state(run_dir: Path) -> None:
    """A complete run needs no resume state; it is large (optimizer moments), so drop it."""
    for name in (RESUME_STATE, RESUME_WEIGHTS):  # JSON first: never leave JSON without weights
        (Path(run_dir) / name).unlink(missing_ok=True)


def has_state(run_dir: str | Path | None) -> bool:
    return run_dir is not None and (Path(run_dir) / RESUME_STATE).is_file()


def saved_iteration(run_dir: str | Path) -> int | None:
    """The iteration a run folder's resume state continues from; None without a readable one."""
    try:
        return int(json.loads((Path(run_dir) / RESUME_STATE).read_text(encoding="utf-8"))["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_resume_state(run_dir: str | Path) -> dict[str, Any]:
    """The validated ``resume.json`` of an interrupted run; RamsegInputError naming the file otherwise.

    Checks that the JSON is complete and describes a usable config, and that ``resume.safetensors``
    is readable safetensors holding model, optimizer and random-generator state, so that
    ``--resume`` fails with one clear line instead of a traceback deep inside the trainer.
    """
    from safetensors import SafetensorError, safe_open

    from .checkpoint import METADATA_NAME, _check_raw_labels, check_config

    run_dir = Path(run_dir)
    state_path, weights_path = run_dir / RESUME_STATE, run_dir / RESUME_WEIGHTS
    if not run_dir.is_dir():
        raise RamsegInputError("run folder not found", run_dir)
    if not state_path.exists():
        hint = " (the run is complete: it holds a model)" if (run_dir / METADATA_NAME).exists() else ""
        raise RamsegInputError(f"nothing to resume: no {RESUME_STATE} in this run folder{hint}", run_dir)
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RamsegInputError(f"unreadable resume state ({one_line(exc, 200, typed=False)})", state_path) from None
    try:
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        missing = [k for k in _REQUIRED_KEYS if k not in state]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        iteration = state["iteration"]
        if isinstance(iteration, bool) or not isinstance(iteration, int) or not 0 <= iteration <= 10**9:
            raise ValueError(f"iteration must be a whole number in 0..{10**9}, not {iteration!r}")
        if not isinstance(state["config"], dict):
            raise ValueError("config must be an object")
        _check_raw_labels(state["config"].get("labels"))
        config = TrainConfig.from_dict(state["config"])
        check_config(config)
        if iteration > config.iterations:
            raise ValueError(f"iteration {iteration} is past the planned {config.iterations}")
        domains = state["domains"]
        if not isinstance(domains, list) or not domains or not all(isinstance(d, str) for d in domains):
            raise ValueError("domains must be a non-empty list of names")
        if not isinstance(state.get("provenance", {}), dict):
            raise ValueError("provenance must be an object")
    except (KeyError, TypeError, ValueError) as exc:
        raise RamsegInputError(f"invalid resume state ({one_line(exc, 200, typed=False)})", state_path) from None
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as handle:
            keys = set(handle.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise RamsegInputError(f"unreadable resume weights ({one_line(exc, 200, typed=False)})", weights_path) from None
    if not {"rng.torch", "rng.lambda"} <= keys or not any(k.startswith("model.") for k in keys):
        raise RamsegInputError("resume weights lack the model or random-generator state", weights_path)
    return state


def _jsonable_bitgen_state(state: dict[str, Any]) -> dict[str, Any]:
    """numpy's PCG64 state holds integers beyond JSON's safe range: store them as strings."""
    return json.loads(json.dumps(state, default=str), parse_int=str)


def _bitgen_state_from_json(state: Any) -> Any:
    if isinstance(state, dict):
        return {k: _bitgen_state_from_json(v) for k, v in state.items()}
    if isinstance(state, str) and state.lstrip("-").isdigit():
        return int(state)
    return state
