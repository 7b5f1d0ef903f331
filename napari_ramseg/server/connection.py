"""Where napari remembers its ramseg server: set once in the plugin's settings, used by every dock.

The address (and an https server's own CA file, if any) is kept in ``<config>/napari-ramseg/server.json``;
the token in ``server.token`` beside it, written with permissions 0600 (never wider, not even while it
is written) and never logged or shown. ``<config>`` is ``$RAMSEG_CONFIG_DIR`` when set, else the user's
config folder (``$XDG_CONFIG_HOME`` or ``~/.config``; ``%APPDATA%`` on Windows; ``~/Library/Application
Support`` on macOS). Qt-free, so the docks' settings dialog and tests share it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RamsegInputError

CONFIG_ENV = "RAMSEG_CONFIG_DIR"
SETTINGS_NAME, TOKEN_NAME = "server.json", "server.token"


def config_dir() -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "napari-ramseg"


@dataclass(frozen=True)
class Connection:
    """A remembered server: its address, where its token is kept, an https server's own CA file."""

    url: str
    token_file: Path | None = None
    ca_file: Path | None = None

    def __repr__(self) -> str:  # the token is in a file; its path may be shown, the token never
        return f"Connection(url={self.url!r})"

    def client(self) -> Any:
        """A ``ServerClient`` for this server (the token read from its file now)."""
        from .client import ServerClient
        from .security import read_token

        token = read_token(self.token_file) if self.token_file is not None else None
        return ServerClient(self.url, token, verify=self.ca_file or True)


def checked_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.lower().startswith(("http://", "https://")) or len(url) < 10:
        raise RamsegInputError(f"the server address {url[:80]!r} must look like http://gpu-host:8765")
    return url


def saved(folder: Path | None = None) -> Connection | None:
    """The server remembered in ``folder`` (default ``config_dir()``); None when none is set yet."""
    folder = config_dir() if folder is None else folder
    try:
        data = json.loads((folder / SETTINGS_NAME).read_text(encoding="utf-8"))
        url = checked_url(str(data["url"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    token = folder / TOKEN_NAME
    ca = data.get("ca_file")
    return Connection(url, token if token.is_file() else None, Path(ca) if ca else None)


def save(url: str, token: str | None, ca_file: str | Path | None = None, folder: Path | None = None) -> Connection:
    """Remember the server: the address now, the token (when given; ``None`` keeps the one saved) in
    a 0600 file. An empty token forgets the saved one (a server on loopback needs none)."""
    from ..files import atomic_write, write_json
    from .security import checked_token

    folder = config_dir() if folder is None else folder
    url = checked_url(url)
    if ca_file and not Path(ca_file).expanduser().is_file():
        raise RamsegInputError("the certificate file does not exist", ca_file)
    if token is not None:
        token_path = folder / TOKEN_NAME
        if token.strip():
            secret = checked_token(token.strip(), "the token")
            atomic_write(token_path, lambda tmp: tmp.write_text(secret + "\n", encoding="utf-8"), mode=0o600)
        else:
            token_path.unlink(missing_ok=True)
    write_json(folder / SETTINGS_NAME, {"url": url, "ca_file": str(Path(ca_file).expanduser()) if ca_file else None})
    return saved(folder)
