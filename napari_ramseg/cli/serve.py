"""``ramseg serve``: the models of this machine over HTTP, for napari and ``ramseg`` on other machines.

The token comes from ``--token-file`` or ``$RAMSEG_SERVER_TOKEN``, never from the command line; without
one the server listens on loopback only. TLS: ``--ssl-keyfile`` and ``--ssl-certfile`` go to uvicorn, or
put a reverse proxy in front (README, "A GPU server for the clinic").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import RamsegInputError
from ._common import add_settings, device_settings, stderr


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the models over HTTP (segment from napari or ramseg on other machines)",
                       allow_abbrev=False)  # "--token SECRET" must not pass for --token-file
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface, "
                        "which needs a token)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
    p.add_argument("--token-file", type=Path, default=None,
                   help="a file holding the token every request must carry (Authorization: Bearer); or set "
                        "$RAMSEG_SERVER_TOKEN. Without either the server listens on loopback only")
    p.add_argument("--models", type=Path, default=None, metavar="DIR",
                   help="a folder of run folders, .safetensors files and BioImage.IO packages to serve beside "
                        "the bundled models, each by its folder or file name")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="a folder of datasets (one folder each) that training jobs may name; their models are "
                        "written into --models")
    p.add_argument("--max-upload-mb", type=float, default=None,
                   help="largest request body in MiB (default: the readers' own limit on a decoded image, 2048)")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="most cases that arrive together to segment in one network pass (default: as many as "
                        "fit the device's pass at that size, 8 on a GPU; 1: one case per pass)")
    p.add_argument("--ssl-keyfile", type=Path, default=None, help="TLS private key (PEM), with --ssl-certfile")
    p.add_argument("--ssl-certfile", type=Path, default=None, help="TLS certificate chain (PEM), with --ssl-keyfile")
    add_settings(p, [s for s in device_settings() if s.name == "device"])


def settings_from_args(args: argparse.Namespace):
    """The checked ``ServerSettings`` (bad options refused in one line); the token never in ``args``."""
    from ..server.security import check_exposure, read_token, token_file_warning

    if not 0 < args.port < 65536:
        raise RamsegInputError(f"--port {args.port} is not a port number (1 to 65535)")
    if (args.ssl_keyfile is None) != (args.ssl_certfile is None):
        raise RamsegInputError("TLS needs both --ssl-keyfile and --ssl-certfile")
    for path in (args.ssl_keyfile, args.ssl_certfile):
        if path is not None and not path.is_file():
            raise RamsegInputError("TLS file not found", path)
    if args.batch is not None and not 1 <= args.batch <= 256:
        raise RamsegInputError("--batch must be a whole number from 1 to 256")
    if args.max_upload_mb is not None and args.max_upload_mb <= 0:
        raise RamsegInputError("--max-upload-mb must be positive")
    token = read_token(args.token_file)
    check_exposure(args.host, token)
    warning = token_file_warning(args.token_file)
    if warning:
        stderr(f"ramseg: warning: {warning}")
    from ..server.app import ServerSettings

    limit = None if args.max_upload_mb is None else int(args.max_upload_mb * 2**20)
    if args.data is not None and not args.data.is_dir():
        raise RamsegInputError("the data folder does not exist or is not a folder", args.data)
    data = None if args.data is None else args.data.expanduser().resolve()
    return ServerSettings(token=token, models_dir=args.models, device=args.device, max_upload_bytes=limit,
                          data_dir=data, batch=args.batch)


def run(args: argparse.Namespace) -> int:
    try:
        from ..server.app import serve
    except ImportError as exc:
        raise RamsegInputError(f"ramseg serve needs the server extra ({exc.name} is missing): "
                               "pip install 'napari-ramseg[server]'") from None
    settings = settings_from_args(args)
    scheme = "https" if args.ssl_certfile else "http"
    auth = "token required" if settings.token else "no token: this machine only"
    stderr(f"ramseg: serving on {scheme}://{args.host}:{args.port} ({auth}); Ctrl+C stops")
    serve(settings, args.host, args.port, ssl_keyfile=_text(args.ssl_keyfile), ssl_certfile=_text(args.ssl_certfile))
    return 0


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)
