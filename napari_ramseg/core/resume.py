"""The resume state of a training run: ``resume.safetensors`` (tensors) and ``resume.json`` (the rest).

This module owns the format: what ``Trainer`` writes (:func:`save_state`), what ``--resume`` reads
back (:func:`load_state`) and how a folder is checked before any of it is used (:func:`read_resume_state`).
The files' names and paths are the run folder's (``core/run_folder.py``).

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
from .run_folder import RESUME_STATE, RESUME_WEIGHTS, RunFolder  # the names; the contents are this module's

# torch, safetensors and the checkpoint module are imported where they are used: the Train dock reads
# resume states (has_state, saved_iteration) without loading torch into napari's process

if TYPE_CHECKING:  # pragma: no cover
    from .train import Trainer

__all__ = ["RESUME_STATE", "RESUME_WEIGHTS", "save_state", "load_state", "remove_state", "has_state",
           "saved_iteration", "read_resume_state"]

_REQUIRED_KEYS = ("iteration", "config", "domains", "pool_rng", "pool_orders")
PROVENANCE_KEYS = ("command", "resumed_with")  # kept from the first run's model.json across resumes


def save_state(trainer: "Trainer") -> None:
    """Model, optimizer and random state, so that ``--resume`` continues exactly where this stopped.

    Under DDP rank 0 writes it: every rank's state is the same (same weights after each step, same
    generators, same pool), so every rank, at any world size, can continue from it.
    """
    folder = trainer.writer
    if folder is None:
        return
    import torch
    from safetensors.torch import save

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
    pool = trainer.pool.state()
    state = {
        "iteration": trainer.iteration,
        "config": trainer.config.to_dict(),
        "domains": trainer.domains,
        "history": trainer.history,
        "best": trainer.best,
        "pool_rng": _jsonable_bitgen_state(pool["rng"]),
        "pool_orders": [[int(i) for i in order] for order in pool["orders"]],
        "provenance": {k: trainer.extra_metadata[k] for k in PROVENANCE_KEYS if k in trainer.extra_metadata},
    }
    if trainer.scaler is not None:
        state["grad_scaler"] = trainer.scaler.state_dict()
    atomic_write(folder.resume_weights, lambda tmp: tmp.write_bytes(save(tensors)))  # not save_file: see checkpoint.save_model
    atomic_write_json(folder.resume_state, state)


def load_state(trainer: "Trainer") -> dict[str, Any]:
    """Put a saved state back into ``trainer``; returns the JSON part."""
    import torch
    from safetensors.torch import load_file

    if trainer.folder is None:
        raise ValueError("resume needs a run folder")
    folder = trainer.folder  # every rank reads it (rank 0 wrote it)
    state = json.loads(folder.resume_state.read_text(encoding="utf-8"))
    tensors = load_file(str(folder.resume_weights))
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
    trainer.pool.load_state({"rng": _bitgen_state_from_json(state["pool_rng"]), "orders": state["pool_orders"]})
    if trainer.scaler is not None and state.get("grad_scaler"):
        trainer.scaler.load_state_dict(state["grad_scaler"])
    return state


def remove_state(run_dir: str | Path) -> None:
    """A complete run needs no resume state (``RunFolder.remove_resume_state``)."""
    RunFolder(run_dir).remove_resume_state()


def has_state(run_dir: str | Path | None) -> bool:
    return run_dir is not None and RunFolder(run_dir).has_resume_state()


def saved_iteration(run_dir: str | Path) -> int | None:
    """The iteration a run folder's resume state continues from; None without a readable one."""
    try:
        return int(json.loads(RunFolder(run_dir).resume_state.read_text(encoding="utf-8"))["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_resume_state(run_dir: str | Path) -> dict[str, Any]:
    """The validated ``resume.json`` of an interrupted run; RamsegInputError naming the file otherwise.

    Checks that the JSON is complete and describes a usable config, and that ``resume.safetensors``
    is readable safetensors holding model, optimizer and random-generator state, so that
    ``--resume`` fails with one clear line instead of a traceback deep inside the trainer.
    """
    from safetensors import SafetensorError, safe_open

    from .checkpoint import _check_raw_labels, check_config

    folder = RunFolder(run_dir)
    run_dir, state_path, weights_path = folder.path, folder.resume_state, folder.resume_weights
    if not run_dir.is_dir():
        raise RamsegInputError("run folder not found", run_dir)
    if not state_path.exists():
        hint = " (the run is complete: it holds a model)" if folder.has_model() else ""
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
