"""Loading a BioImage.IO package made by napari-ramseg, without running any code from it.

A package is a zip, a folder holding ``rdf.yaml`` (or ``bioimageio.yaml``), or that yaml file. Its
description is read with ``yaml.safe_load`` (plain data), never through a library that would
import or unpickle. Only packages whose ``config.napari-ramseg`` names the ``model.json`` and
``model.safetensors`` attachments are accepted; their weights are then read like any other model
(``core/models/checkpoint.load_model``: safetensors, validated against the metadata). The TorchScript and
ONNX weights in the package are never touched. A package from elsewhere is refused in one line.

A zip's two attachments are extracted once into the user's cache
(``$RAMSEG_CACHE_DIR`` or ``~/.cache/napari-ramseg``), under ``bioimageio/<first 16 hex of the
zip's SHA-256>/``, so the model has a stable folder for the Predictor cache and for corrections.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field

from ...errors import RamsegInputError, one_line
from ...files import atomic_write, file_sha256
from ...schema import Schema, validate

CONFIG_KEY = "napari-ramseg"
DESCRIPTION_NAMES = ("rdf.yaml", "bioimageio.yaml")
MAX_JSON_BYTES = 16 << 20
MAX_WEIGHTS_BYTES = 4 << 30
MAX_YAML_DEPTH = 32  # rdf.yaml as bioimageio writes it nests 6 levels
FOREIGN = ("this BioImage.IO package was not made by napari-ramseg (its rdf.yaml has no config.napari-ramseg); "
           "napari-ramseg loads only its own packages, whose weights it reads from safetensors without running "
           "code; run this one with bioimageio.core or the tool that made it")


def _is_description(path: Path) -> bool:
    name = path.name.lower()
    return name in DESCRIPTION_NAMES or name.endswith(".bioimageio.yaml")


def is_package(path: str | Path) -> bool:
    """Whether ``path`` looks like a BioImage.IO package (zip, folder with rdf.yaml, or the yaml)."""
    path = Path(path)
    if path.is_dir():
        return any((path / n).is_file() for n in DESCRIPTION_NAMES)
    return path.is_file() and (path.suffix.lower() == ".zip" or _is_description(path))


def cache_root() -> Path:
    return Path(os.environ.get("RAMSEG_CACHE_DIR") or Path.home() / ".cache" / "napari-ramseg")


def _parse(text: bytes, where: Path) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_PlainLoader)  # noqa: S506  (safe_load's loader, less aliases)
    except yaml.YAMLError as exc:
        raise RamsegInputError(f"unreadable BioImage.IO description ({one_line(exc, 160, typed=False)})",
                               where) from None
    except RecursionError:
        raise RamsegInputError("unreadable BioImage.IO description (nested too deeply)", where) from None
    if not isinstance(data, dict) or data.get("type") != "model":
        raise RamsegInputError("not a BioImage.IO model package (its description is not of type 'model')", where)
    return data


class _PlainLoader(yaml.SafeLoader):
    """yaml's SafeLoader refusing aliases (ten levels of ``*j`` repeating the last ten times cost a
    586-byte description 70 GB once anything walks it) and nesting deeper than MAX_YAML_DEPTH (the
    composer recurses: 3000 ``[`` took a second to end in RecursionError). A description we write
    holds neither."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted in a package description",
                                              self.peek_event().start_mark)
        if self.depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested too deeply (over {MAX_YAML_DEPTH} levels)",
                                              self.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Attachment(Schema):
    source: Annotated[str, Field(max_length=4096)]


class _Ours(Schema):
    model_json: Annotated[str, Field(pattern=r"^[^/\\]+\.json$")]
    weights: Annotated[str, Field(pattern=r"^[^/\\]+\.safetensors$")]


class _Description(Schema):
    """What napari-ramseg reads of its own package's description (after the config says it is ours)."""

    attachments: Annotated[list[_Attachment], Field(max_length=1000)] = []


def _our_files(data: dict[str, Any], where: Path) -> tuple[str, str]:
    """The attachment names of model.json and the safetensors weights, checked against the description."""
    ours = (data.get("config") or {}).get(CONFIG_KEY) if isinstance(data.get("config"), dict) else None
    if not isinstance(ours, dict):
        raise RamsegInputError(FOREIGN, where)
    for key, ending in (("model_json", ".json"), ("weights", ".safetensors")):
        name = ours.get(key)
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(ending):
            raise RamsegInputError(f"config.napari-ramseg names no {ending} attachment", where)
    names = validate(_Ours, ours, "BioImage.IO description", where)
    description = validate(_Description, data, "BioImage.IO description", where)
    attached = {Path(a.source).name for a in description.attachments}
    for name in (names.model_json, names.weights):
        if name not in attached:
            raise RamsegInputError(f"config.napari-ramseg names {name}, which is not among the attachments", where)
    return names.model_json, names.weights


def _from_folder(folder: Path, description: Path) -> tuple[Path, Path]:
    meta_name, weights_name = _our_files(_parse(description.read_bytes(), description), description)
    weights, meta = folder / weights_name, folder / meta_name
    for required in (weights, meta):
        if not required.is_file():
            raise RamsegInputError(f"incomplete package: {required.name} is missing", folder)
    return weights, meta


def _from_zip(path: Path) -> tuple[Path, Path]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = {info.filename: info for info in archive.infolist()}
            description = next((n for n in DESCRIPTION_NAMES if n in names), None)
            if description is None:
                raise RamsegInputError("not a BioImage.IO package: the zip holds no rdf.yaml or bioimageio.yaml", path)
            if names[description].file_size > MAX_JSON_BYTES:
                raise RamsegInputError(f"{description} is implausibly large", path)
            meta_name, weights_name = _our_files(_parse(archive.read(description), path), path)
            for name, limit in ((weights_name, MAX_WEIGHTS_BYTES), (meta_name, MAX_JSON_BYTES)):
                info = names.get(name)
                if info is None:
                    raise RamsegInputError(f"incomplete package: {name} is missing from the zip", path)
                if info.file_size > limit:  # a zip bomb must not fill the disk
                    raise RamsegInputError(f"{name} in the package is implausibly large ({info.file_size} bytes)", path)
            target = cache_root() / "bioimageio" / file_sha256(path)[:16]
            fresh = not target.exists()
            try:
                meta = archive.read(meta_name)
                # the weights' header against the network model.json describes, before a byte of them is written
                check_weights_header(archive, names[weights_name], meta, path)
                for name, data in ((meta_name, meta), (weights_name, None)):
                    out, size = target / name, names[name].file_size
                    if not out.is_file() or out.stat().st_size != size:
                        atomic_write(out, lambda tmp, n=name, d=data: tmp.write_bytes(d) if d is not None
                                     else _extract(archive, n, tmp))
            except BaseException:
                if fresh:  # a refused or interrupted extraction leaves nothing in the cache
                    shutil.rmtree(target, ignore_errors=True)
                raise
    except zipfile.BadZipFile as exc:
        raise RamsegInputError(f"not a readable zip ({one_line(exc, 120, typed=False)})", path) from None
    return target / weights_name, target / meta_name


SAFETENSORS_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "I16": 2, "I32": 4, "I64": 8}


def check_weights_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, meta: bytes, where: Path) -> None:
    """Refuse (RamsegInputError) weights whose safetensors header does not describe the network of
    ``meta`` (the package's model.json), exactly filling the file: read from the zip's first bytes, so
    that a 2 GiB member of zeros (a 2 MB zip) is never extracted."""
    from .checkpoint import ModelMetadata, _describe_mismatch, build_model

    with archive.open(info) as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= length <= min(MAX_JSON_BYTES, info.file_size - 8):
            raise RamsegInputError(f"{info.filename} in the package is not safetensors (no valid header)", where)
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
        header.pop("__metadata__", None)
        found, end = {}, 0
        for name, entry in header.items():
            start, stop = (int(n) for n in entry["data_offsets"])
            shape = tuple(int(n) for n in entry["shape"])
            if math.prod(shape) * SAFETENSORS_DTYPES[entry["dtype"]] != stop - start or start < 0:
                raise ValueError(f"{name}'s offsets do not fit its shape")
            found[name], end = shape, max(end, stop)
    except (UnicodeDecodeError, RecursionError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RamsegInputError(f"{info.filename} in the package has an invalid safetensors header "
                               f"({one_line(exc, 120, typed=False)})", where) from None
    if 8 + length + end != info.file_size:
        raise RamsegInputError(f"{info.filename} in the package is {info.file_size} bytes, but its header describes "
                               f"{8 + length + end}", where)
    try:
        metadata = ModelMetadata.from_dict(json.loads(meta.decode("utf-8")), where)
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise RamsegInputError(f"unreadable model metadata in the package ({one_line(exc, 160, typed=False)})",
                               where) from None
    import torch

    with torch.device("meta"):  # shapes only: nothing allocated, whatever width model.json asks for
        expected = {k: tuple(v.shape) for k, v in build_model(metadata).state_dict().items()}
    mismatch = _describe_mismatch(expected, found, metadata)
    if mismatch:
        raise RamsegInputError(f"weights do not match the architecture in model.json: {mismatch}", where)


def _extract(archive: zipfile.ZipFile, name: str, tmp: Path) -> None:
    with archive.open(name) as src, tmp.open("wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            dst.write(block)


def package_model_files(path: str | Path) -> tuple[Path, Path]:
    """(weights, metadata) of a napari-ramseg BioImage.IO package, for ``checkpoint.resolve_model_path``."""
    path = Path(path)
    if path.is_dir():
        description = next(path / n for n in DESCRIPTION_NAMES if (path / n).is_file())
        return _from_folder(path, description)
    if path.suffix.lower() == ".zip":
        return _from_zip(path)
    return _from_folder(path.parent, path)
