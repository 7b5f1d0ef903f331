"""``ramseg evaluate``: score a model on one domain's labelled cases."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_adapt, add_device, adapt_predictor, progress_bar, stderr
from ._remote import add_server_options, connect, refuse_local_options


def add_parser(sub) -> None:
    from ..core.data.layouts import FORMATS

    e = sub.add_parser("evaluate", help="score a model on one domain's labelled cases",
                       description="Dice, HD95 and ASD of a model on every labelled case of one domain "
                                   "(typically the held-out --target of training); one summary line per label.")
    e.add_argument("--model", default="default", help="run folder, .safetensors file, or 'default' (bundled)")
    e.add_argument("--data", required=True, type=Path, help="dataset root (the same layout ramseg train reads)")
    e.add_argument("--domain", required=True, help="the domain to score, named as ramseg train names it (e.g. STARE)")
    e.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                   help="dataset layout (auto detects it)")
    e.add_argument("--split", default=None, help="only this split (e.g. test for DoFE); default: all cases")
    e.add_argument("--postprocess", action="store_true",
                   help="largest component per structure and hole filling before scoring")
    e.add_argument("--json", type=Path, help="write per-case and summary metrics here")
    add_adapt(e)
    add_device(e)
    add_server_options(e)


def run(args: argparse.Namespace) -> int:
    from ..core.evaluation.evaluate import evaluate_domain
    from ..core.inference.predictor import Predictor
    from ..core.evaluation.metrics import json_safe
    from ..models import resolve_model

    bars = []  # made at the first case: a model or data error then prints one line, not an empty bar too

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(progress_bar(total, f"evaluate {args.domain}"))
        bars[0].total = total
        bars[0].n = done
        bars[0].refresh()

    refuse_local_options(args, {"--device": "auto"})
    try:
        if args.server:  # each case segmented on the server, scored here against its mask
            from ..server.client import RemotePredictor

            segmenter = RemotePredictor(connect(args), args.model, args.precision, args.adapt)
        else:
            predictor = Predictor.from_path(resolve_model(args.model), device=args.device, precision=args.precision)
            segmenter = adapt_predictor(predictor, args.adapt)
            if args.adapt:
                stderr(f"ramseg: {segmenter.settings_line()}")
        report = evaluate_domain(segmenter, args.data, args.domain, fmt=args.format,
                                 split=args.split, postprocess=args.postprocess, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    report["adapt"] = args.adapt  # None: no test-time adaptation
    if args.adapt and not args.server:
        report["adapt_settings"] = segmenter.settings()
    if args.server:
        report["server"] = {"url": args.server, "model": segmenter.model}
    for label, values in report["summary"].items():
        print(f"{label}: " + "  ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a"
                                        for k, v in json_safe(values).items()))
    if args.json:
        from ..files import atomic_write_json

        atomic_write_json(args.json, json_safe(report))
        stderr(f"wrote {args.json}")
    return 0
