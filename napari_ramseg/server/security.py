"""Who may talk to ``ramseg serve``: the token, where it comes from, and where a server without one may listen.

The token is read from a file (``--token-file``) or the ``RAMSEG_SERVER_TOKEN`` environment variable,
never from the command line (a command line is visible to every user of the machine in ``ps``). Every
request carries it as ``Authorization: Bearer <token>``; it is compared in constant time
(``hmac.compare_digest``), so the time an answer takes says nothing about how much of a guess was
right. A server without a token listens on loopback only: then only programs on the same machine reach it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from pathlib import Path

from ..errors import RamsegInputError

TOKEN_ENV = "RAMSEG_SERVER_TOKEN"
MIN_TOKEN_CHARS = 16  # `python -c "import secrets; print(secrets.token_urlsafe(32))"` gives 43


def read_token(token_file: str | Path | None = None, environ: dict | None = None) -> str | None:
    """The server's token: from ``token_file`` when given, else from ``RAMSEG_SERVER_TOKEN``; None when
    neither is set. A token file that is missing, empty or too short is refused in one line."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        path = Path(token_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RamsegInputError(f"cannot read the token file ({type(exc).__name__}: {exc.strerror or exc})",
                                   path) from None
        return checked_token(text.strip(), f"the token file {path}")
    value = environ.get(TOKEN_ENV, "").strip()
    return checked_token(value, f"${TOKEN_ENV}") if value else None


def checked_token(token: str, where: str) -> str:
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise RamsegInputError(
            f"{where} must hold one token of at least {MIN_TOKEN_CHARS} characters and no spaces; make one with: "
            "python -c \"import secrets; print(secrets.token_urlsafe(32))\"")
    return token


def token_file_warning(token_file: str | Path | None) -> str:
    """A warning when other users of the machine may read the token file ('' otherwise)."""
    if token_file is None:
        return ""
    try:
        mode = Path(token_file).expanduser().stat().st_mode
    except OSError:
        return ""
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"the token file {token_file} is readable by other users of this machine; chmod 600 it"
    return ""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to any interface


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if token is None and not is_loopback(host):
        raise RamsegInputError(
            f"refusing to serve on {host} without a token: anyone who can reach this machine could use it. "
            f"Give --token-file FILE or set ${TOKEN_ENV}, or serve on 127.0.0.1 only")


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token``, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))
