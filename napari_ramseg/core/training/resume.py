"""The resume state of a training run: ``resume.safetensors`` (tensors) and ``resume.json`` (the rest).

This module owns the format: what ``Trainer`` writes (:func:`save_state`), what ``--resume`` reads
back (:func:`load_state`) and how a folder is checked before any of it is used (:func:`read_resume_state`).
The files' names and paths are the run folder's (``core/models/run_folder.py``).

A resume state is written after every validation, every ``TrainConfig.resume_every_s`` seconds of wall
time, and when a run is stopped (``core/training/stopping.py``); a complete run removes it. Both files are
written atomically, weights first: a crash in between leaves the old JSON, which never describes
weights that were not written completely.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import RamsegInputError, one_line
from ...files import atomic_write, atomic_write_json
from ...schema import check, read_json
from ..config import TrainConfig
from ..file_schemas import ResumeStateSchema
from ..models.run_folder import RESUME_STATE, RESUME_WEIGHTS, RunFolder  # the names; the contents are this module's

# torch, safetensors and the checkpoint module are imported where they are used: the Train dock reads
# resume states (has_state; RunFolder.saved_iteration) without loading torch into napari's process

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer
    from .training_state import StateLayout, TrainingState

__all__ = ["RESUME_STATE", "RESUME_WEIGHTS", "save_state", "load_state", "remove_state", "has_state",
           "read_resume_state"]

_REQUIRED_KEYS = ("iteration", "config", "domains", "pool_rng", "pool_orders")
PROVENANCE_KEYS = ("command", "resumed_with")  # kept from the first run's model.json across resumes
DATA_KEYS = ("name", "sha256", "files", "format", "source_domains")  # of the data description, by content


def save_state(trainer: "Trainer") -> None:
    """Model, optimizer and random state (``Trainer.state_dict()``), so that ``--resume`` continues exactly
    where this stopped.

    Under DDP rank 0 writes it (``Trainer.writer``): every rank's state is the same (same weights after
    each step, same generators, same pool), so every rank, at any world size, can continue from it.
    """
    folder = trainer.writer
    if folder is None:
        return
    from safetensors.torch import save

    tensors, state = _encode(trainer.state_dict())
    atomic_write(folder.resume_weights, lambda tmp: tmp.write_bytes(save(tensors)))  # not save_file: see checkpoint.save_model
    atomic_write_json(folder.resume_state, state)


def _encode(training: "TrainingState") -> tuple[dict[str, Any], dict[str, Any]]:
    """A training state as the two files hold it: the tensors by name, the rest as JSON."""
    tensors = {f"model.{k}": v for k, v in training.net.items()}
    for index, moments in training.optimizer.items():
        tensors.update({f"optim.{index}.{key}": value for key, value in moments.items()})
    tensors["rng.torch"] = training.torch_rng
    tensors["rng.lambda"] = training.lambda_rng
    if training.best_net is not None:
        tensors.update({f"best.{k}": v for k, v in training.best_net.items()})
    extra = training.metadata
    state = {
        "iteration": training.iteration,
        "config": training.config.to_dict(),
        "domains": training.domains,
        "history": training.history,
        "best": training.best,
        "pool_rng": _jsonable_bitgen_state(training.pool["rng"]),
        "pool_orders": [[int(i) for i in order] for order in training.pool["orders"]],
        "provenance": {k: extra[k] for k in PROVENANCE_KEYS if k in extra},
    }
    data = extra.get("data")
    if isinstance(data, dict) and isinstance(data.get("sha256"), str):  # which data, by content: --resume checks it
        state["data"] = {k: data[k] for k in DATA_KEYS if k in data}
    if training.grad_scaler is not None:
        state["grad_scaler"] = training.grad_scaler
    return tensors, state


def load_state(trainer: "Trainer") -> dict[str, Any]:
    """Put a saved state back into ``trainer`` (``Trainer.load_state_dict``); returns the JSON part.
    Everything is checked against the trainer's ``state_layout()`` before it is used (read_resume_state,
    then the tensors' names, shapes and dtypes, the random generators and the pool's positions), so that a
    damaged or foreign state ends in one line naming its file."""
    from safetensors.torch import load_file

    if trainer.folder is None:
        raise ValueError("resume needs a run folder")
    folder = trainer.folder  # every rank reads it (rank 0 wrote it)
    state = read_resume_state(folder.path)
    tensors = load_file(str(folder.resume_weights))
    trainer.load_state_dict(_decode(state, tensors, trainer.state_layout(), folder))
    return state


def _decode(state: dict[str, Any], tensors: dict[str, Any], layout: "StateLayout",
            folder: RunFolder) -> "TrainingState":
    """The training state the two files hold, checked against ``layout``; RamsegInputError naming the file."""
    from .training_state import TrainingState

    model = _part(tensors, "model.", layout.net, folder.resume_weights)
    has_best = any(k.startswith("best.") for k in tensors)
    best = _part(tensors, "best.", layout.net, folder.resume_weights) if has_best else None
    shapes = layout.parameter_shapes
    moments: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            if not index.isdigit() or int(index) >= len(shapes) or (
                    name != "step" and tuple(value.shape) != shapes[int(index)]):
                raise RamsegInputError(f"optimizer state {key} does not fit the network", folder.resume_weights)
            moments.setdefault(int(index), {})[name] = value
    _check_pool(state, layout.pool_sizes, folder.resume_state)
    _check_generators(tensors, folder.resume_weights)
    return TrainingState(
        iteration=int(state["iteration"]), config=TrainConfig.from_dict(state["config"]), domains=state["domains"],
        history=list(state.get("history", [])), best=state.get("best"), net=model, best_net=best,
        optimizer=moments, torch_rng=tensors["rng.torch"], lambda_rng=tensors["rng.lambda"],
        pool={"rng": _bitgen_state_from_json(state["pool_rng"]), "orders": state["pool_orders"]},
        grad_scaler=state.get("grad_scaler"), metadata={})


def _check_generators(tensors: dict[str, Any], where: Path) -> None:
    """The random generators' saved states must be states a generator takes (tried on spare ones)."""
    import torch

    try:
        torch.Generator().set_state(tensors["rng.torch"])
        torch.Generator().set_state(tensors["rng.lambda"])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise RamsegInputError(f"unusable random-generator state ({one_line(exc, 120, typed=False)})", where) from None


def _part(tensors: dict[str, Any], prefix: str, expected: dict[str, Any], where: Path) -> dict[str, Any]:
    """The network's tensors under ``prefix`` (``model.``, ``best.``), matching its names and shapes
    (weights of another width are refused naming the file) and converted to its dtypes."""
    from ..models.checkpoint import fitting_state

    part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(part))
    unexpected = sorted(set(part) - set(expected))
    wrong = [k for k in expected if k in part and tuple(part[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"{prefix}{wrong[0]} has shape {tuple(part[wrong[0]].shape)}, the network "
                  f"{tuple(expected[wrong[0]].shape)}" if wrong else
                  f"{len(missing)} missing and {len(unexpected)} unexpected {prefix} tensors")
        raise RamsegInputError(f"resume weights do not fit the run's network ({detail})", where)
    return fitting_state(part, expected, where)


def _check_pool(state: dict[str, Any], sizes: list[int], where: Path) -> None:
    """The batch pool's saved positions must index the samples this run has, domain by domain."""
    orders = state["pool_orders"]
    if len(orders) != len(sizes) or any(i >= n for order, n in zip(orders, sizes) for i in order):
        raise RamsegInputError(f"invalid resume state (pool_orders do not fit the {len(sizes)} domain(s) of "
                               f"{', '.join(map(str, sizes))} training samples)", where)
    try:
        import numpy as np

        np.random.Generator(np.random.PCG64()).bit_generator.state = _bitgen_state_from_json(state["pool_rng"])
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise RamsegInputError(f"invalid resume state (pool_rng: {one_line(exc, 120, typed=False)})", where) from None


# Options that say how to run, not what to train: given with --resume, they apply to the rest of the run
HOW_TO_RUN = ("device", "precision", "threads", "num_threads", "sync_batchnorm", "resume_every_s",
              "snapshot_every")


def resumed_config(request: Any, state: dict[str, Any], fields: dict[str, str]) -> TrainConfig:
    """The config a ``--resume`` continues with: the run's own (``state``, validated), with the options
    of HOW_TO_RUN that ``request`` gives applied. Any other option given with a value that differs from
    the run's (``fields``: request name -> config path, as ``training.job.CONFIG_FIELDS``) is refused in
    one line naming each, rather than dropped without a word."""
    config = TrainConfig.from_dict(state["config"])
    fields = {"iterations": "iterations", **fields}
    applied: dict[str, Any] = {}
    conflicts = []
    for name, path in fields.items():
        value = getattr(request, name, None)
        if value is None:
            continue
        saved, default = _at(config, path), (None if name == "iterations" else TrainConfig.default(path))
        if name in HOW_TO_RUN:
            if value != default or name == "sync_batchnorm":
                applied[path] = value
        elif value != saved and value != default:
            conflicts.append(f"{_flag(name, value)} (the run has {_flag(name, saved)})")
    if request.domains and sorted(request.domains) != sorted(state["domains"]):
        conflicts.append(f"--domains {' '.join(request.domains)} (the run has {' '.join(state['domains'])})")
    if request.labels and tuple(request.labels) != config.labels.names:
        conflicts.append(f"--labels {' '.join(request.labels)} (the run has {' '.join(config.labels.names)})")
    if getattr(request, "epochs", None) is not None:
        conflicts.append(f"--epochs {request.epochs:g} (the run has {config.iterations} iterations)")
    if conflicts:
        raise RamsegInputError(f"--resume continues the run as it was started; these options differ from it: "
                               f"{'; '.join(conflicts)}. Leave them out, or start a new run with --out",
                               RunFolder(request.resume).resume_state)
    return config.with_settings(applied) if applied else config


def check_resumed_data(state: dict[str, Any], description: dict[str, Any], run_dir: str | Path) -> None:
    """Refuse to continue a run on other data than it started with (its resume state records the data's
    checksum; states written before that record nothing, and are not checked)."""
    saved = state.get("data")
    if not saved or saved.get("sha256") == description.get("sha256"):
        return
    changes = []
    if saved.get("name") and saved["name"] != description.get("name"):
        changes.append(f"folder {saved['name']!r}, now {description.get('name')!r}")
    if saved.get("files") is not None and saved["files"] != description.get("files"):
        changes.append(f"{saved['files']} files, now {description.get('files')}")
    what = "; ".join(changes) or "the same files, with other contents"
    raise RamsegInputError(f"--resume: the data differ from those the run started with ({what}); resume with "
                           f"the run's data, or start a new run with --out", RunFolder(run_dir).resume_state)


def _at(config: TrainConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _flag(name: str, value: Any) -> str:
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value:g}" if isinstance(value, float) else f"--{flag} {value}"


def remove_state(run_dir: str | Path) -> None:
    """A complete run needs no resume state (``RunFolder.remove_resume_state``)."""
    RunFolder(run_dir).remove_resume_state()


def has_state(run_dir: str | Path | None) -> bool:
    return run_dir is not None and RunFolder(run_dir).has_resume_state()


def read_resume_state(run_dir: str | Path) -> dict[str, Any]:
    """The validated ``resume.json`` of an interrupted run; RamsegInputError naming the file otherwise.

    Checks that the JSON is complete and describes a usable config, and that ``resume.safetensors``
    is readable safetensors holding model, optimizer and random-generator state, so that
    ``--resume`` fails with one clear line instead of a traceback deep inside the trainer.
    """
    from safetensors import SafetensorError, safe_open

    from ..models.checkpoint import _check_raw_labels, check_config

    folder = RunFolder(run_dir)
    run_dir, state_path, weights_path = folder.path, folder.resume_state, folder.resume_weights
    if not run_dir.is_dir():
        raise RamsegInputError("run folder not found", run_dir)
    if not state_path.exists():
        hint = " (the run is complete: it holds a model)" if folder.has_model() else ""
        raise RamsegInputError(f"nothing to resume: no {RESUME_STATE} in this run folder{hint}", run_dir)
    state = read_json(state_path, "resume state")
    try:
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        missing = [k for k in _REQUIRED_KEYS if k not in state]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        _check_raw_labels(state["config"].get("labels") if isinstance(state["config"], dict) else None)
        check(ResumeStateSchema, state)  # every field the trainer reads back (core/file_schemas.py)
        config = TrainConfig.from_dict(state["config"])
        check_config(config)
        if state["iteration"] > config.iterations:
            raise ValueError(f"iteration {state['iteration']} is past the planned {config.iterations}")
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
