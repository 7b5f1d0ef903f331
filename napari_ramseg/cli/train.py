"""``ramseg train``: train a model on source domains, resumable, stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (EXIT_INTERRUPTED, add_settings, csv_list, progress_bar, quote, settings_from, stderr,
                      typed_command)


def add_parser(sub) -> None:
    from ..core.data.layouts import FORMATS
    from ..core.models.run_folder import CLI_ROOT
    from ..core.training.job import NONE_MEANS_DEFAULT, TRAIN_SETTINGS

    t = sub.add_parser("train", help="train a model on source domains")
    t.add_argument("--data", required=True, type=Path, help="dataset root")
    t.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="dataset layout (auto detects it)")
    t.add_argument("--domains", type=csv_list, help="comma-separated source domains (default: all but --target)")
    t.add_argument("--target", help="held-out domain, never used in training")
    t.add_argument("--out", type=Path, help=f"run folder (default: {CLI_ROOT}/ramseg-<time>)")
    budget = t.add_mutually_exclusive_group()
    iterations = [s for s in TRAIN_SETTINGS if s.name == "iterations"]
    add_settings(budget, iterations, defaults={"iterations": None})
    budget.add_argument("--epochs", type=float, help="passes over the source training cases (instead of --iterations)")
    t.add_argument("--labels", type=csv_list,
                   help="label names for mask values 1..K, e.g. vessel or disc,cup (default: the data's dataset.json, "
                        "else label_1..label_K, with a warning)")
    t.add_argument("--label-kind", choices=["nested", "exclusive"],
                   help="nested sigmoid heads (structures inside each other, outermost first) or one exclusive "
                        "softmax (default: the data's dataset.json, else nested)")
    # every TrainConfig option, generated from its declaration in core/config.py
    add_settings(t, [s for s in TRAIN_SETTINGS if s.name != "iterations"],
                 defaults={name: None for name in NONE_MEANS_DEFAULT})
    t.add_argument("--partners", type=Path, metavar="FOLDER",
                   help="a folder of unlabelled images (other cameras, no masks) whose low-frequency amplitude RAM "
                        "mixes in as partners beside the other source domains' (--partner-share of them); give it "
                        "again with --resume")
    t.add_argument("--resume", type=Path, help="continue an interrupted run folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar and no messages, errors only")


def run(args: argparse.Namespace) -> int:
    from ..core.training.distributed import env_rank
    from ..core.models.run_folder import default_run_dir
    from ..core.training.stopping import GracefulStop, signal_name
    from ..core.training.job import TRAIN_SETTINGS, TrainRequest, run_training

    # under torchrun only rank 0 talks: one progress bar, one set of messages
    main_rank = env_rank() == 0
    quiet = args.quiet or not main_rank
    if args.resume is None and args.out is None:
        args.out = default_run_dir()  # named here (core/models/run_folder.py), so that every message can say where the run is

    request = TrainRequest(
        data=args.data, format=args.format, domains=args.domains, target=args.target, out=args.out,
        epochs=args.epochs, labels=args.labels, label_kind=args.label_kind, resume=args.resume, partners=args.partners,
        command=typed_command(), **settings_from(args, TRAIN_SETTINGS),
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

    # SIGINT and SIGTERM: finish the step, write a resume state, exit 130 or 143 (core/training/stopping.py)
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
    from ..core.models.run_folder import RunFolder

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
