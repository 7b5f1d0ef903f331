"""``ramseg finetune``: learn from corrected masks; writes a new model version, never over the old one."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import RamsegInputError
from ._common import add_settings, progress_bar, settings_from, stderr, typed_command
from ._remote import add_server_options, connect, refuse_local_options, wait_for_job


def add_parser(sub) -> None:
    from ..core.config import FinetuneConfig
    from ..core.options import settings_of

    f = sub.add_parser("finetune", help="learn from corrected masks; writes a new model version")
    f.add_argument("--model", default="default",
                   help="the base model: a run folder, a .safetensors file, a BioImage.IO .zip package, or a bundled "
                        "model's name (default, vessels, optic-disc) (default: default)")
    f.add_argument("--images", nargs="+", type=Path, help="corrected cases' images")
    f.add_argument("--labels", nargs="+", type=Path, help="corrected masks, in the same order")
    f.add_argument("--project", type=Path, help="a corrections project folder saved by the napari widget")
    f.add_argument("--replay", type=Path, help="source dataset root to replay alongside the corrections")
    f.add_argument("--out", type=Path, help="models folder; a new version is created inside (with --server: none, "
                                             "the server keeps the version beside the base model)")
    f.add_argument("--target-style", type=Path, metavar="DIR",
                   help="unlabelled scans of the new site: they lend their style (low-frequency amplitude) as RAM "
                        "partners next to the source domains, with the consistency loss on them")
    # every FinetuneConfig option, generated from its declaration in core/config.py
    add_settings(f, settings_of(FinetuneConfig))
    add_server_options(f)


def run(args: argparse.Namespace) -> int:
    """Corrections from --project or --images/--labels, then a new model version in --out."""
    from ..core.models.checkpoint import resolve_model_path
    from ..core.config import FinetuneConfig
    from ..core.finetune.job import finetune_from_files
    from ..core.options import check_settings, settings_of
    from ..models import resolve_model

    config = FinetuneConfig(**settings_from(args, settings_of(FinetuneConfig)))
    check_settings(config)  # out-of-bounds settings are refused before any model or image is read
    refuse_local_options(args, {"--out": None, "--project": None, "--replay": None, "--target-style": None,
                                "--device": FinetuneConfig().device})
    if args.server:
        return _run_on_server(args, config)
    if args.out is None:
        raise RamsegInputError("--out DIR is needed: the models folder the new version is written into")
    model = resolve_model(args.model)
    resolve_model_path(model)  # a missing or broken model is the first thing said
    images, masks = args.images or [], args.labels or []
    if bool(images) != bool(masks):
        raise RamsegInputError("give --images and --labels together (one mask per image, same order)")
    if not images and args.project is None:
        raise RamsegInputError("nothing to learn from: give --project DIR (saved by the napari widget) "
                               "or --images ... --labels ...")
    bars = []

    def on_event(event) -> None:
        if event.phase == "train":
            if not bars:
                bars.append(progress_bar(event.total, "finetune"))
            bars[0].update(1)
            bars[0].set_postfix({"loss": f"{event.losses['loss']:.3f}"}, refresh=False)
        elif event.message and event.phase != "done":
            stderr(event.message + ("" if event.dice is None else f": {event.dice:.4f}"))

    try:
        result = finetune_from_files(model, args.out, config, project=args.project, images=images, masks=masks,
                                     replay=args.replay, target_style=args.target_style, command=typed_command(),
                                     on_event=on_event, log=stderr)
    finally:
        for bar in bars:
            bar.close()
    if result.model_dir is None:
        stderr("fine-tuning stopped; no new model was written")
        return 1
    line = (f"wrote {result.model_dir} (round {result.round}, {len(result.train_cases)} training case(s), "
            f"{len(result.val_cases)} held out)")
    if result.before_dice is not None:
        line += f"; held-out Dice {result.before_dice:.4f} -> {result.after_dice:.4f}"
    stderr(line)
    if result.worse:
        stderr("ramseg: warning: the new version is worse than its parent on the held-out corrected cases; "
               "keep using the parent unless you have reason to prefer it")
    print(result.model_dir)
    return 0


def _run_on_server(args: argparse.Namespace, config) -> int:
    """Upload the image/mask pairs with the round's settings, follow the round on the server and say which
    version it made there (the server keeps it beside the base model, with its lineage)."""
    from ..core.options import settings_of

    if not args.images or not args.labels or len(args.images) != len(args.labels):
        raise RamsegInputError("with --server give --images and --labels (one mask per image, same order)")
    settings = {s.name: getattr(config, s.name) for s in settings_of(type(config)) if s.name != "device"}
    client = connect(args)
    base = client.model(args.model)["name"]
    job = client.finetune(base, list(zip(args.images, args.labels)), **settings)
    stderr(f"ramseg: fine-tune job {job['id']} queued on {client.url}")
    done = wait_for_job(client, job, "finetune (server)")
    if done["state"] == "failed":
        raise RamsegInputError(f"the server's fine-tune round failed: {done['error']}")
    result = done.get("result") or {}
    if done["state"] == "cancelled" or not result.get("version"):
        stderr("fine-tuning stopped on the server; no new model was written")
        return 1
    line = (f"the server wrote {result['version']} (round {result['round']}, {result['train_cases']} training "
            f"case(s), {result['val_cases']} held out)")
    if result.get("before_dice") is not None:
        line += f"; held-out Dice {result['before_dice']:.4f} -> {result['after_dice']:.4f}"
    stderr(line)
    if result.get("worse"):
        stderr("ramseg: warning: the new version is worse than its parent on the held-out corrected cases")
    print(result["version"])  # its name on the server: ramseg predict --server URL --model <this>
    return 0
