"""Writing files so that a reader never sees half of one: the atomic-write machinery.

Every file napari-ramseg writes (labels, images, checkpoints, logs, bench caches) goes through
:func:`atomic_write`. It lives apart from ``io`` (image formats) because checkpoints, run logs and the
benchmarks need it without any image reader, and ``io``'s writers are only some of its callers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_json", "json_safe", "remove_stale_temporaries", "write_json"]


def atomic_write(path: str | Path, write: Any, suffix: str = "", mode: int | None = None) -> None:
    """Call ``write(tmp_path)`` on a temporary file in the target folder, then rename it into place.

    Every file napari-ramseg writes goes through here. The temporary name carries the writer's
    process id: ``.<name>.<pid>.<random>.tmp``, or ``.<stem>.<pid>.<random>.tmp<suffix>`` where a
    format writer needs the file's ending (``suffix``, e.g. ``.nii.gz``). An interruption that Python sees (Ctrl-C, an exception, Stop) removes
    it at once; one that it cannot see (SIGKILL, power loss) leaves it behind, and the next
    successful write of the same file removes it once that process is gone. ``mode``: the file's
    permissions where they must not be the user's usual ones (a secret's 0o600, never wider meanwhile).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.name[: -len(suffix)] if suffix and path.name.endswith(suffix) else path.name
    prefix, tmp_suffix = f".{base}.", f".tmp{suffix}"
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=tmp_suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)  # mkstemp makes 0600 files: the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    remove_stale_temporaries(path.parent, prefix, tmp_suffix)


def json_safe(obj: Any) -> Any:
    """Copy of ``obj`` that ``json.dump(..., allow_nan=False)`` accepts.

    Recurses into mappings, lists and tuples (tuples become lists), turns numpy scalars and arrays and
    torch tensors (anything with ``tolist``) into Python values, paths into strings, and replaces nan
    and ±inf with ``None``. The one JSON cleaning of the package (``write_json`` applies it).
    """
    if isinstance(obj, Mapping):
        return {(k.item() if hasattr(k, "item") and not isinstance(k, str) else k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "detach"):  # a torch tensor, without importing torch here
        obj = obj.detach().cpu()
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy arrays and scalars, tensors
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented strict JSON (``json_safe``: nan and inf become null), written atomically."""
    text = json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented strict JSON exactly as given (no cleaning, no final newline: the bytes of
    model.json, resume.json, metrics.json and a correction's provenance), written atomically; nan and
    inf are refused (ValueError) rather than written as JSON no reader accepts."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, allow_nan=False)))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str | Path, prefix: str, suffix: str) -> list[Path]:
    """Delete ``<prefix><pid>.<random><suffix>`` files in ``folder`` whose writing process is gone.

    Atomic writes name their temporary file after the writer's process id. An interruption Python
    sees removes it at once; one it cannot see (SIGKILL, power loss) leaves it, and the next
    successful write of the same file calls this to clean up.
    """
    removed: list[Path] = []
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)\.[A-Za-z0-9_]+{re.escape(suffix)}")  # mkstemp's names
    try:
        candidates = [(p, pattern.fullmatch(p.name)) for p in Path(folder).iterdir()]
    except OSError:
        return removed
    for candidate, match in candidates:
        if match is None or int(match.group(1)) == os.getpid() or _process_alive(int(match.group(1))):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    """True when ``pid`` runs, or cannot be probed (then its file is left alone)."""
    if pid <= 0 or os.name == "nt":  # on Windows os.kill(pid, 0) would terminate the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True
    return True


def temporary_folder(parent: str | Path, prefix: str) -> Path:
    """A new hidden folder in ``parent`` (``mkdtemp``: a unique name, for a result assembled there and
    renamed into place), with the user's usual mode: ``mkdtemp`` makes it ``drwx------`` whatever the
    umask, and a model version or a corrected case renamed from it would stay unreadable to colleagues."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, 0o777 & ~_umask())
    return folder


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (a scan, a model, a package)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
