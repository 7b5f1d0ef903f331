"""Loading a BioImage.IO package made by napari-ramseg, without running any code from it.

A package is a zip, a folder holding ``rdf.yaml`` (or ``bioimageio.yaml``), or that yaml file. Its
description is read with ``yaml.safe_load`` (plain data), never through a library that would
import or unpickle. Only packages whose ``config.napari-ramseg`` names the ``model.json`` and
``model.safetensors`` attachments are accepted; their weights are then read like any other model
(``core/checkpoint.load_model``: safetensors, validated against the metadata). The TorchScript and
ONNX weights in the package are never touched. A package from elsewhere is refused in one line.

A zip's two attachments are extracted once into the user's cache
(``$RAMSEG_CACHE_DIR`` or ``~/.cache/napari-ramseg``), under ``bioimageio/<first 16 hex of the
zip's SHA-256>/``, so the model has a stable folder for the Predictor cache and for corrections.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any

from ..errors import RamsegInputError, one_line
from ..files import atomic_write

CONFIG_KEY = "napari-ramseg"
DESCRIPTION_NAMES = ("rdf.yaml", "bioimageio.yaml")
MAX_JSON_BYTES = 16 << 20
MAX_WEIGHTS_BYTES = 4 << 30
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
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RamsegInputError(f"unreadable BioImage.IO description ({one_line(exc, 160, typed=False)})",
                               where) from None
    if not isinstance(data, dict) or data.get("type") != "model":
        raise RamsegInputError("not a BioImage.IO model package (its description is not of type 'model')", where)
    return data


def _our_files(data: dict[str, Any], where: Path) -> tuple[str, str]:
    """The attachment names of model.json and the safetensors weights, checked against the description."""
    ours = (data.get("config") or {}).get(CONFIG_KEY) if isinstance(data.get("config"), dict) else None
    if not isinstance(ours, dict):
        raise RamsegInputError(FOREIGN, where)
    names = (ours.get("model_json"), ours.get("weights"))
    attached = {Path(str(a.get("source", ""))).name for a in data.get("attachments") or [] if isinstance(a, dict)}
    for name, ending in zip(names, (".json", ".safetensors")):
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(ending):
            raise RamsegInputError(f"config.napari-ramseg names no {ending} attachment", where)
        if name not in attached:
            raise RamsegInputError(f"config.napari-ramseg names {name}, which is not among the attachments", where)
    return names[0], names[1]


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
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            target = cache_root() / "bioimageio" / digest.hexdigest()[:16]
            for name, limit in ((weights_name, MAX_WEIGHTS_BYTES), (meta_name, MAX_JSON_BYTES)):
                info = names.get(name)
                if info is None:
                    raise RamsegInputError(f"incomplete package: {name} is missing from the zip", path)
                if info.file_size > limit:  # a zip bomb must not fill the disk
                    raise RamsegInputError(f"{name} in the package is implausibly large ({info.file_size} bytes)", path)
                out = target / name
                if not out.is_file() or out.stat().st_size != info.file_size:
                    atomic_write(out, lambda tmp, n=name: _extract(archive, n, tmp))
    except zipfile.BadZipFile as exc:
        raise RamsegInputError(f"not a readable zip ({one_line(exc, 120, typed=False)})", path) from None
    return target / weights_name, target / meta_name


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
