"""Model files: ``model.safetensors`` (weights, cannot run code) plus ``model.json`` (metadata).

Models are shared by hand between hospitals, so every file is untrusted: only safetensors is read,
and the metadata is validated against the architecture before any weight is used.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import RamsegInputError
from .config import NORMALIZATION, TrainConfig
from .model import RamSegNet

WEIGHTS_NAME = "model.safetensors"
METADATA_NAME = "model.json"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


@dataclass
class ModelMetadata:
    """Everything needed to rebuild and use a model, stored beside its weights."""

    config: TrainConfig
    domains: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # provenance: command, data, budget, parent model

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "package": "napari-ramseg",
            "package_version": __version__,
            "architecture": "RamSegNet",
            "config": self.config.to_dict(),
            "label_scheme": self.config.labels.to_dict(),
            "source_domains": list(self.domains),
            "normalization": NORMALIZATION,
            "preprocess": self.config.preprocess.to_dict(),
            "metrics": self.metrics,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "ModelMetadata":
        try:
            if data.get("architecture") != "RamSegNet":
                raise ValueError(f"unknown architecture {data.get('architecture')!r}")
            if int(data.get("format_version", 0)) > FORMAT_VERSION:
                raise ValueError(f"format version {data['format_version']} is newer than this napari-ramseg reads")
            config = TrainConfig.from_dict(data["config"])
            domains = [str(d) for d in data["source_domains"]]
            if not domains:
                raise ValueError("no source domains listed")
        except (KeyError, TypeError, ValueError) as exc:
            raise RamsegInputError(f"invalid model metadata ({exc})", path) from None
        known = {"format_version", "package", "package_version", "architecture", "config", "label_scheme",
                 "source_domains", "normalization", "preprocess", "metrics"}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(config=config, domains=domains, metrics=dict(data.get("metrics") or {}), extra=extra)


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` on a temporary file in the target folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the user's usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, allow_nan=False)))


def save_model(model: RamSegNet, metadata: ModelMetadata, folder: Path) -> Path:
    """Write weights then metadata, each atomically; the folder is loadable once model.json exists."""
    folder = Path(folder)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    atomic_write_json(folder / METADATA_NAME, metadata.to_dict())
    return folder


def resolve_model_path(path: str | Path) -> tuple[Path, Path]:
    """(weights, metadata) paths for a run folder or a ``.safetensors`` file with its ``.json`` beside it."""
    path = Path(path)
    if not path.exists():
        raise RamsegInputError("model not found", path)
    if path.is_dir():
        weights, meta = path / WEIGHTS_NAME, path / METADATA_NAME
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        raise RamsegInputError(
            "pickle-based model files can run arbitrary code when loaded and are refused; "
            "use a napari-ramseg run folder or a .safetensors file with its .json", path)
    elif path.suffix.lower() == ".safetensors":
        weights = path
        meta = path.with_suffix(".json") if path.with_suffix(".json").exists() else path.parent / METADATA_NAME
    elif path.suffix.lower() == ".json":
        meta = path
        weights = path.with_suffix(".safetensors") if path.with_suffix(".safetensors").exists() else path.parent / WEIGHTS_NAME
    else:
        raise RamsegInputError("not a model: expected a run folder or a .safetensors file", path)
    for required in (weights, meta):
        if not required.exists():
            raise RamsegInputError(f"incomplete model: {required.name} is missing", path)
    return weights, meta


def load_metadata(path: str | Path) -> ModelMetadata:
    _, meta_path = resolve_model_path(path)
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RamsegInputError(f"unreadable model metadata ({exc})", meta_path) from None
    if not isinstance(data, dict):
        raise RamsegInputError("model metadata is not a JSON object", meta_path)
    return ModelMetadata.from_dict(data, meta_path)


def build_model(metadata: ModelMetadata) -> RamSegNet:
    return RamSegNet(metadata.config.model, metadata.config.labels, num_domains=len(metadata.domains))


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[RamSegNet, ModelMetadata]:
    """Rebuild the network from metadata and load weights whose names and shapes must match exactly."""
    weights_path, _ = resolve_model_path(path)
    metadata = load_metadata(path)
    try:
        model = build_model(metadata)
    except Exception as exc:  # an absurd config (zero width, negative depth) is bad input too
        raise RamsegInputError(f"model metadata describes an invalid network ({exc})", path) from None
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise RamsegInputError(f"unreadable safetensors weights ({exc})", weights_path) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if wrong:
            details.append(f"wrong shape for {wrong[0]}: {tuple(state[wrong[0]].shape)} != {tuple(expected[wrong[0]].shape)}")
        raise RamsegInputError("weights do not match the architecture in model.json: " + "; ".join(details), weights_path)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise RamsegInputError(f"weights contain NaN or Inf (e.g. {bad[0]})", weights_path)
    model.load_state_dict(state)
    model.to(device).eval()
    return model, metadata
