"""``--server URL --token-file F``: ``ramseg predict``, ``evaluate`` and ``finetune`` done by a ``ramseg serve``
on another machine (a department's GPU), through ``server/client.py``.

The client's options travel with each request (``--precision fp32``, ``--adapt``, ``--postprocess``, the
review score); the server runs the same per-case pipeline and its answer becomes the same
``CaseResult`` and ``report.csv`` row, so the files written here are the ones a local run writes. A
server out of reach, or refusing the token, is one line and exit status 2; nothing is written then.
The token comes from a file or ``$RAMSEG_SERVER_TOKEN``, never from the command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import RamsegInputError


def add_server_options(p: argparse.ArgumentParser) -> None:
    """``--server``, ``--token-file`` and ``--server-ca``. Abbreviations are switched off for the command, so
    ``--token SECRET`` is refused rather than taken for ``--token-file``."""
    p.allow_abbrev = False
    group = p.add_argument_group("through a server (ramseg serve on another machine)")
    group.add_argument("--server", default=None, metavar="URL",
                       help="do the work on this ramseg server (http://HOST:PORT or https://...) instead of here")
    group.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                       help="a file holding the server's token (or set $RAMSEG_SERVER_TOKEN); never the token itself")
    group.add_argument("--server-ca", type=Path, default=None, metavar="FILE",
                       help="an https server's own CA or self-signed certificate (PEM), to trust it")


def connect(args: argparse.Namespace) -> Any:
    """The ``ServerClient`` for ``--server``; bad options and a missing extra refused in one line."""
    try:
        from ..server.client import ServerClient
        from ..server.security import read_token
    except ImportError as exc:
        raise RamsegInputError(f"--server needs the server extra ({exc.name} is missing): "
                               "pip install 'napari-ramseg[server]'") from None
    url = str(args.server).strip()
    if not url.lower().startswith(("http://", "https://")):
        raise RamsegInputError(f"--server {url[:80]!r} must be an address such as http://gpu-host:8765")
    if args.server_ca is not None and not url.lower().startswith("https://"):
        raise RamsegInputError("--server-ca is for an https:// server")
    return ServerClient(url, read_token(args.token_file), verify=args.server_ca or True)


def refuse_local_options(args: argparse.Namespace, local: dict[str, Any]) -> None:
    """Refuse options that mean something only here (``local``: option -> its value when unused)."""
    if args.server is None:
        for flag in ("--token-file", "--server-ca"):
            if getattr(args, flag[2:].replace("-", "_")) is not None:
                raise RamsegInputError(f"{flag} goes with --server URL")
        return
    used = [flag for flag, unused in local.items() if getattr(args, flag[2:].replace("-", "_")) != unused]
    if used:
        raise RamsegInputError(f"{', '.join(used)} cannot be used with --server: the server chooses its own "
                               "device, and reads only what is sent to it")


def wait_for_job(client: Any, job: dict, bar_desc: str) -> dict:
    """Follow a server job to its end with a progress bar; Ctrl+C cancels it on the server first."""
    from ._common import progress_bar

    bars: list = []

    def on_progress(state: dict) -> None:
        progress = state.get("progress") or {}
        total, done = progress.get("total"), progress.get("iteration")
        if progress.get("phase") == "train" and total:
            if not bars:
                bars.append(progress_bar(int(total), bar_desc))
            bars[0].n = int(done or 0)
            bars[0].refresh()

    try:
        return client.wait(job["id"], on_progress=on_progress)
    except KeyboardInterrupt:
        client.cancel(job["id"])
        raise
    finally:
        for bar in bars:
            bar.close()
