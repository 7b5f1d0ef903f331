"""``ramseg train``: train a model on source domains, resumable, stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import EXIT_INTERRUPTED, add_device, csv_list, progress_bar, quote, stderr, typed_command


def add_parser(sub) -> None:
    from ..core.config import MethodConfig, ModelConfig, PreprocessConfig, TrainConfig
    from ..core.layouts import FORMATS
    from ..core.run_folder import CLI_ROOT

    defaults, method, prep = TrainConfig(), MethodConfig(), PreprocessConfig()
    t = sub.add_parser("train", help="train a model on source domains")
    t.add_argument("--data", required=True, type=Path, help="dataset root")
    t.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="dataset layout (auto detects it)")
    t.add_argument("--domains", type=csv_list, help="comma-separated source domains (default: all but --target)")
    t.add_argument("--target", help="held-out domain, never used in training")
    t.add_argument("--out", type=Path, help=f"run folder (default: {CLI_ROOT}/ramseg-<time>)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=int, help=f"training steps (default {defaults.iterations})")
    budget.add_argument("--epochs", type=float, help="passes over the source training cases")
    t.add_argument("--size", type=int, default=prep.size, help="training crop / input side in pixels")
    t.add_argument("--long-side", type=int, default=prep.long_side,
                   help="keep aspect and scale the longer side to this (common field-of-view scale); default resizes to --size")
    t.add_argument("--batch", type=int, default=defaults.batch)
    t.add_argument("--lr", type=float, default=defaults.lr)
    t.add_argument("--seed", type=int, default=defaults.seed)
    t.add_argument("--labels", type=csv_list, help="label names for mask values 1..K, e.g. vessel or disc,cup")
    t.add_argument("--label-kind", choices=["nested", "exclusive"], help="nested sigmoid heads or exclusive softmax")
    t.add_argument("--no-ram", action="store_true", help="switch off random amplitude mixup")
    t.add_argument("--no-dsir", action="store_true", help="switch off domain-specific image restoration")
    t.add_argument("--no-consistency", action="store_true", help="switch off the semantic-consistency loss")
    t.add_argument("--window-ratio", type=float, default=method.window_ratio, help="RAM window ratio L")
    t.add_argument("--lam", choices=["uniform", "discrete"], default=method.lam_mode)
    t.add_argument("--cldice-weight", type=float, default=defaults.cldice_weight, metavar="W",
                   help=f"weight of a soft-clDice (skeleton) term beside BCE + Dice "
                        f"(default {defaults.cldice_weight:g}: off; 1 is clDice's own mix). It trades: more "
                        "thin-vessel recall for slightly lower Dice on source validation (at 1: thin-vessel "
                        "recall +0.04-0.05, Dice -0.01; bench/results/thin_vessels.md)")
    t.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    t.add_argument("--val-every", type=int, default=defaults.val_every)
    t.add_argument("--threads", type=int, default=defaults.num_threads, help="CPU threads for torch (0: torch's default)")
    t.add_argument("--base-width", type=int, default=ModelConfig().base_width)
    t.add_argument("--grad-accumulation", type=int, default=defaults.grad_accumulation,
                   help="micro-batches of --batch per optimizer step (gradients are summed; under torchrun "
                        "they are reduced across processes only after the last one)")
    t.add_argument("--sync-batchnorm", action="store_true",
                   help="under torchrun, every BatchNorm (the per-domain ones too) uses the statistics of the "
                        "global batch; --batch is always the global batch, split evenly over the processes")
    t.add_argument("--resume", type=Path, help="continue an interrupted run folder")
    t.add_argument("--resume-every", type=float, metavar="SECONDS",
                   help=f"also write a resume state every SECONDS of training (default {defaults.resume_every_s:g}; "
                        "0: only at each validation and at a stop). Ctrl-C or SIGTERM ends a run after the "
                        "current step with a resume state (exit 130 or 143); a second signal stops at once")
    t.add_argument("--quiet", action="store_true")
    add_device(t)


def run(args: argparse.Namespace) -> int:
    from ..core.distributed import env_rank
    from ..core.run_folder import default_run_dir
    from ..core.stopping import GracefulStop, signal_name
    from ..core.train_job import TrainRequest, run_training

    # under torchrun only rank 0 talks: one progress bar, one set of messages
    main_rank = env_rank() == 0
    quiet = args.quiet or not main_rank
    if args.resume is None and args.out is None:
        args.out = default_run_dir()  # named here (core/run_folder.py), so that every message can say where the run is

    request = TrainRequest(
        data=args.data, format=args.format, domains=args.domains, target=args.target, out=args.out,
        iterations=args.iterations, epochs=args.epochs, size=args.size, long_side=args.long_side,
        batch=args.batch, lr=args.lr, seed=args.seed, labels=args.labels, label_kind=args.label_kind,
        ram=not args.no_ram, dsir=not args.no_dsir, consistency=not args.no_consistency,
        window_ratio=args.window_ratio, lam_mode=args.lam, cldice_weight=args.cldice_weight,
        val_fraction=args.val_fraction, val_every=args.val_every, threads=args.threads, base_width=args.base_width,
        grad_accumulation=args.grad_accumulation, sync_batchnorm=args.sync_batchnorm,
        device=args.device, precision=args.precision, resume=args.resume, resume_every_s=args.resume_every,
        command=typed_command(),
    )
    bar = None

    def on_event(event) -> None:
        nonlocal bar
        if bar is None:
            bar = progress_bar(event.total, "train", quiet)
            bar.update(event.iteration - 1)
        bar.update(1)
        postfix = {"loss": f"{event.losses['loss']:.3f}"}
        if event.validation is not None:
            postfix["val_dice"] = f"{event.validation['dice']:.3f}"
        bar.set_postfix(postfix, refresh=False)

    def notice(signum: int) -> str:  # written from the signal handler (a progress bar may hold the line)
        lead = "" if quiet else "\n"
        return f"{lead}ramseg: {signal_name(signum)} received: stopping after the current step (again: at once)\n"

    # SIGINT and SIGTERM: finish the step, write a resume state, exit 130 or 143 (core/stopping.py)
    stop = GracefulStop(notice=notice if main_rank else None)
    with stop:
        result = run_training(request, on_event=on_event if main_rank else None, should_stop=stop,
                              log=None if quiet else stderr)
    if bar is not None:
        bar.close()
    if result.stopped:
        if main_rank:
            stderr(f"ramseg: interrupted ({stop.name or 'stopped'}) at iteration {result.iterations_done}; "
                    f"{train_run_note(result.run_dir, args.data)}")
        return stop.exit_code or EXIT_INTERRUPTED
    if result.run_dir is not None and main_rank:
        stderr(f"finished after {result.iterations_done} iterations; model written to {result.run_dir}")
    return 0


def train_run_note(run: Path | None, data: Path) -> str:
    """What a stopped training run left in its folder, read from the folder itself."""
    from ..core.run_folder import RunFolder

    if run is None or not Path(run).is_dir():
        return f"nothing was written{f' to {run}' if run is not None else ''} (it stopped before training began)"
    folder = RunFolder(run)
    iteration, model = folder.saved_iteration(), folder.has_model()
    if iteration is None:
        return (f"{run} holds a model but no resume state" if model else
                f"{run} holds no resume state yet (none was written before the stop); start the run again")
    return (f"{run} holds a resume state for iteration {iteration}"
            f"{' and a model of the training so far' if model else ''} (nothing half-written); "
            f"continue it with ramseg train --data {quote(data)} --resume {quote(run)}")
