"""Model files: ``model.safetensors`` (weights, cannot run code) plus ``model.json`` (metadata).

Models are shared by hand between hospitals, so every file is untrusted: only safetensors is read,
and the metadata is validated against the architecture before any weight is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from ... import __version__
from ...errors import RamsegInputError, one_line
from ...files import atomic_write, atomic_write_json
from ...schema import check, read_json
from ..config import NORMALIZATION, TrainConfig
from ..method.model import RamSegNet
from ..file_schemas import ConfigSchema, ModelJsonSchema
from ..settings_blocks import (ADAPT_LIMITS, ADAPT_TOWARDS, DISC_LIMITS, MAX_SIDE, _int_in,  # noqa: F401 (re-exported)
                               check_adapt_settings, check_disc_settings)
from .run_folder import METADATA_NAME, RunFolder  # the files are the run folder's
from ..shift.source_profile import SourceProfile

FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


@dataclass
class ModelMetadata:
    """Everything needed to rebuild and use a model, stored beside its weights."""

    config: TrainConfig
    domains: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # provenance: command, data, budget, parent model
    # what the source domains looked like (core/shift/source_profile.py); None in model.json files written before it
    source_profile: SourceProfile | None = None
    # an optic disc model's two-stage settings (DiscConfig field names, over its defaults), validated
    # by check_disc_settings: those its benchmark rows were measured with; None for the defaults
    disc: dict[str, Any] | None = None
    # test-time adaptation settings chosen on the source domains, per method ({"align": {"window": ...}},
    # AdaptConfig field names, over its defaults), validated by check_adapt_settings; None for the defaults
    adapt: dict[str, dict[str, Any]] | None = None

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
            **({} if self.disc is None else {"disc": dict(self.disc)}),
            **({} if self.adapt is None else {"adapt": {m: dict(v) for m, v in self.adapt.items()}}),
            **self.extra,
            **({} if self.source_profile is None else {"source_profile": self.source_profile.to_dict()}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "ModelMetadata":
        try:
            if data.get("architecture") != "RamSegNet":
                raise ValueError(f"unknown architecture {data.get('architecture')!r}")
            version = data.get("format_version", 0)
            if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
                raise ValueError(f"format version {version} is newer than this napari-ramseg reads")
            if not isinstance(data.get("config"), dict):
                raise ValueError("no config object")
            _check_raw_labels(data["config"].get("labels"))
            domains = data["source_domains"]
            if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
                raise ValueError("source_domains must be a list of names")
            if not domains:
                raise ValueError("no source domains listed")
            if len(domains) > MAX_DOMAINS:
                raise ValueError(f"{len(domains)} source domains; at most {MAX_DOMAINS} are supported")
            check(ModelJsonSchema, data)  # every other field the code reads back (core/file_schemas.py)
            config = TrainConfig.from_dict(data["config"])
            check_config(config)
            profile = data.get("source_profile")
            profile = None if profile is None else SourceProfile.from_dict(profile, domains)
            disc = None if data.get("disc") is None else check_disc_settings(data["disc"])
            adapt = None if data.get("adapt") is None else check_adapt_settings(data["adapt"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RamsegInputError(f"invalid model metadata ({exc})", path) from None
        known = {"format_version", "package", "package_version", "architecture", "config", "label_scheme",
                 "source_domains", "normalization", "preprocess", "metrics", "source_profile", "disc", "adapt"}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(config=config, domains=domains, metrics=dict(data.get("metrics") or {}), extra=extra,
                   source_profile=profile, disc=disc, adapt=adapt)


# Limits on what an untrusted model.json may ask for, checked before any tensor is allocated: a
# hostile file must not be able to make the loader build a network of terabytes or resize every
# image to a million pixels a side. The shipped architectures sit far inside them.
MAX_BASE_WIDTH = 256
MAX_DEPTH = 8
MAX_WIDTH = 4096  # channels at the bottleneck: base_width * 2 ** (depth - 1)
MAX_LABELS = 255  # label maps are uint8
MAX_DOMAINS = 64
IN_CHANNELS = 3  # RGB, or 2.5D slices (j-1, j, j+1): the only input the data pipeline produces


def _check_raw_labels(labels: Any) -> None:
    """``{"names": [str, ...], "kind": ...}``; a bare string would silently become one label per letter."""
    if not isinstance(labels, dict):
        raise ValueError("config.labels must be an object with names and kind")
    names = labels.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError("config.labels.names must be a list of label names")
    if len(set(names)) != len(names):
        raise ValueError(f"config.labels.names repeats a name: {names}")


def check_config(config: TrainConfig) -> None:
    """Refuse (ValueError) a config that this package cannot use or that would exhaust memory: the
    training settings by their schema (``file_schemas.ConfigSchema``: a NaN or 1e30 learning rate, a
    batch of 0), the network's size by the limits above."""
    check(ConfigSchema, config.to_dict())
    model, prep = config.model, config.preprocess
    if model.in_channels != IN_CHANNELS:
        raise ValueError(
            f"in_channels is {model.in_channels!r}, but napari-ramseg models take {IN_CHANNELS} input channels "
            "(RGB, or three neighbouring slices of a volume); this model does not fit the data it would be given")
    _int_in(model.base_width, 1, MAX_BASE_WIDTH, "model.base_width")
    _int_in(model.depth, 1, MAX_DEPTH, "model.depth")
    if model.base_width * 2 ** (model.depth - 1) > MAX_WIDTH:
        raise ValueError(f"model.base_width {model.base_width} at depth {model.depth} exceeds {MAX_WIDTH} channels")
    if config.labels.num_classes > MAX_LABELS:
        raise ValueError(f"{config.labels.num_classes} labels; at most {MAX_LABELS} are supported")
    _int_in(prep.size, 16, MAX_SIDE, "preprocess.size")
    if prep.long_side is not None:
        _int_in(prep.long_side, 16, MAX_SIDE, "preprocess.long_side")
    threshold = config.threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a probability strictly between 0 and 1, not {threshold!r}")


def portable_command(command: str) -> str:
    """A command line with absolute paths (and paths through '..') cut to their last part, for
    model.json files that travel between sites: ``--data /work/main/../shared/data/vessels`` is
    recorded as ``--data vessels`` (``data.name`` and ``data.sha256`` identify it)."""
    import re
    import shlex

    try:
        words = shlex.split(command)
    except ValueError:
        return command
    out, changed = [], False
    for word in words:
        flag, eq, value = word.partition("=") if word.startswith("--") else ("", "", word)
        if value.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", value) or ".." in re.split(r"[\\/]", value):
            value, changed = re.split(r"[\\/]", value.rstrip("/\\"))[-1] or value, True
        out.append(f"{flag}{eq}{value}")
    return shlex.join(out) if changed else command


def portable_provenance(extra: dict[str, Any]) -> dict[str, Any]:
    """A copy of model.json's extra fields with the commands typed ("command", "resumed_with": one or a
    list) made portable (:func:`portable_command`): what was typed, without this machine's paths."""
    out = dict(extra)
    for key in ("command", "resumed_with"):
        if isinstance(out.get(key), str):
            out[key] = portable_command(out[key])
        elif isinstance(out.get(key), list):
            out[key] = [portable_command(c) if isinstance(c, str) else c for c in out[key]]
    return out


def save_model(model: RamSegNet, metadata: ModelMetadata, folder: Path) -> Path:
    """Write weights then metadata, each atomically; the folder is loadable once model.json exists."""
    run = RunFolder(folder)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # bytes through our own temporary: save_file writes its own ".tmpXXXXXX" beside the target, which a
    # SIGKILL would leave behind where no cleanup knows its writer
    atomic_write(run.model_weights, lambda tmp: tmp.write_bytes(save(state, metadata={"format": "pt"})))
    atomic_write_json(run.model_json, metadata.to_dict())
    return run.path


def resolve_model_path(path: str | Path) -> tuple[Path, Path]:
    """(weights, metadata) paths for a run folder, a ``.safetensors`` file with its ``.json`` beside it, or a
    BioImage.IO package made by napari-ramseg (zip, folder or rdf.yaml; ``core/models/package.py``)."""
    path = Path(path)
    if not path.exists():
        raise RamsegInputError("model not found", path)
    from .package import is_package, package_model_files

    if is_package(path) and not (path.is_dir() and RunFolder(path).model_json.is_file()):
        return package_model_files(path)
    if path.is_dir():
        weights, meta = RunFolder(path).model_weights, RunFolder(path).model_json
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        raise RamsegInputError(
            "pickle-based model files can run arbitrary code when loaded and are refused; "
            "use a napari-ramseg run folder or a .safetensors file with its .json", path)
    elif path.suffix.lower() == ".safetensors":
        weights = path
        meta = path.with_suffix(".json") if path.with_suffix(".json").exists() else RunFolder(path.parent).model_json
    elif path.suffix.lower() == ".json":
        meta = path
        weights = (path.with_suffix(".safetensors") if path.with_suffix(".safetensors").exists()
                   else RunFolder(path.parent).model_weights)
    else:
        raise RamsegInputError(
            "not a model: expected a run folder, a .safetensors file or a BioImage.IO package (.zip)", path)
    if path.is_dir() and not meta.exists() and RunFolder(path).resume_state.exists():
        raise RamsegInputError(
            "training of this run was interrupted before it wrote a model; finish it with "
            "ramseg train --data DATA --resume RUN (or use another model)", path)
    for required in (weights, meta):
        if not required.exists():
            raise RamsegInputError(f"incomplete model: {required.name} is missing", path)
    return weights, meta


def _read_metadata(meta_path: Path) -> dict[str, Any]:
    data = read_json(meta_path, "model metadata")  # one line for a broken, huge or too deeply nested file
    if not isinstance(data, dict):
        raise RamsegInputError("model metadata is not a JSON object", meta_path)
    return data


def load_metadata(path: str | Path) -> ModelMetadata:
    _, meta_path = resolve_model_path(path)
    return ModelMetadata.from_dict(_read_metadata(meta_path), meta_path)


BLOCKS = ("disc", "adapt")  # the settings blocks, in the order ModelMetadata.to_dict writes them after "metrics"


def write_disc_settings(path: str | Path, settings: dict[str, Any]) -> Path:
    """Put an optic disc model's chosen two-stage settings into its model.json (``write_block``)."""
    return write_block(path, "disc", settings, check_disc_settings, "optic disc settings")


def write_adapt_settings(path: str | Path, settings: dict[str, dict[str, Any]]) -> Path:
    """Put a model's source-chosen test-time adaptation settings into its model.json (``write_block``)."""
    return write_block(path, "adapt", settings, check_adapt_settings, "adaptation settings")


def write_block(path: str | Path, key: str, settings: Any, check, what: str) -> Path:
    """Put a settings block (checked by ``check``, ValueError) into a model.json (a run folder or the file
    itself) as ``key``, replacing any block there, else after "metrics" and the blocks ModelMetadata
    writes after it; atomically. The rest of the file keeps its content and order (byte for byte where
    it is written as atomic_write_json writes, a final newline or not); nothing that would not load is
    written."""
    path = Path(path)
    meta_path = path if path.suffix.lower() == ".json" else RunFolder(path).model_json
    if not meta_path.is_file():
        raise RamsegInputError(f"no {METADATA_NAME} to write the {what} into", path)
    data = _read_metadata(meta_path)
    try:
        block = check(settings)
    except ValueError as exc:
        raise RamsegInputError(f"invalid {what} ({exc})", meta_path) from None
    if key in data:
        after = key  # in its place
    else:
        before = [k for k in ("metrics", *BLOCKS[:BLOCKS.index(key)]) if k in data]
        after = before[-1] if before else None  # None: at the end
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name != key:
            out[name] = value
        if name == after:
            out[key] = block
    out.setdefault(key, block)
    ModelMetadata.from_dict(out, meta_path)
    ending = "\n" if meta_path.read_bytes().endswith(b"\n") else ""  # a hand-kept file's final newline stays
    text = json.dumps(out, indent=2, allow_nan=False) + ending
    atomic_write(meta_path, lambda tmp: tmp.write_text(text))
    return meta_path


def build_model(metadata: ModelMetadata) -> RamSegNet:
    return RamSegNet(metadata.config.model, metadata.config.labels, num_domains=len(metadata.domains))


def _describe_mismatch(expected: dict[str, tuple], found: dict[str, tuple], metadata: ModelMetadata) -> str:
    """'' when the weights fit; else what differs, in the user's terms (channels, labels) where possible."""
    details = []
    first = "encoder.0.0.weight"
    if first in expected and first in found and len(found[first]) == 4 and found[first][1] != expected[first][1]:
        details.append(f"the weights take {found[first][1]} input channels, model.json says "
                       f"{metadata.config.model.in_channels}")
    if "head.weight" in expected and "head.weight" in found and found["head.weight"][0] != expected["head.weight"][0]:
        labels = metadata.config.labels
        details.append(f"the weights predict {found['head.weight'][0]} channels, model.json's labels "
                       f"({', '.join(labels.names)}, {labels.kind}) need {labels.out_channels}")
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [k for k in expected if k in found and found[k] != expected[k]]
    if missing:
        details.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if wrong:
        details.append(f"wrong shape for {wrong[0]}: {found[wrong[0]]} != {expected[wrong[0]]}")
    return "; ".join(details)


# what a stored tensor may hold for each kind of tensor the network has: parameters and BatchNorm
# statistics are real numbers (float8 has no isfinite, and complex, integer or bool weights mean
# nothing to the network); the BatchNorm step counters are whole numbers
STORED_DTYPES = {"float": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
                 "int": (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)}


def fitting_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                  where: Path | str) -> dict[str, torch.Tensor]:
    """``state`` converted to the network's own dtypes (``expected``), refused (RamsegInputError naming
    ``where``) where a tensor's stored dtype cannot hold the network's values or where a value is not
    finite once converted: a float64 weight of 1e300 passes a check before conversion and becomes Inf."""
    out = {}
    for name, value in state.items():
        target = expected[name].dtype
        kind = "float" if target.is_floating_point else "int"
        if value.dtype not in STORED_DTYPES[kind]:
            raise RamsegInputError(f"weights hold {name} as {str(value.dtype).removeprefix('torch.')}, which the "
                                   f"network cannot use (it needs {str(target).removeprefix('torch.')})", where)
        converted = value.to(target)
        if kind == "float" and not torch.isfinite(converted).all():
            raise RamsegInputError(f"weights contain NaN or Inf, or values too large for "
                                   f"{str(target).removeprefix('torch.')} (e.g. {name})", where)
        out[name] = converted
    return out


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[RamSegNet, ModelMetadata]:
    """Rebuild the network from metadata and load weights whose names and shapes must match exactly."""
    weights_path, _ = resolve_model_path(path)
    metadata = load_metadata(path)
    try:
        model = build_model(metadata)
    except Exception as exc:  # an absurd config (zero width, negative depth) is bad input too
        raise RamsegInputError(f"model metadata describes an invalid network ({exc})", path) from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:  # names and shapes from the header first: a file that cannot fit is never read whole
        with safe_open(str(weights_path), framework="pt", device="cpu") as handle:
            found = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RamsegInputError(f"unreadable safetensors weights ({one_line(exc, 200, typed=False)})", weights_path) from None
    mismatch = _describe_mismatch(expected, found, metadata)
    if mismatch:
        raise RamsegInputError(f"weights do not match the architecture in model.json: {mismatch}", weights_path)
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise RamsegInputError(f"unreadable safetensors weights ({one_line(exc, 200, typed=False)})", weights_path) from None
    model.load_state_dict(fitting_state(state, model.state_dict(), weights_path))
    model.to(device).eval()
    return model, metadata
