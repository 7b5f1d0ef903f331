"""The ``ramseg`` command: train, predict, evaluate, finetune and demo.

Bad input ends with one line, ``ramseg: error: <file>: <problem>``, and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .errors import RamsegInputError, naming, one_line

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_FAILED = 1  # the machine failed (out of memory, disk full), not the input


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _add_device(p: argparse.ArgumentParser) -> None:
    from .core.config import TrainConfig
    from .core.device import DEVICE_CHOICES, PRECISION_CHOICES

    p.add_argument("--device", default=TrainConfig.default("device"), choices=DEVICE_CHOICES,
                   help="auto picks CUDA, then MPS, then CPU")
    p.add_argument("--precision", default=TrainConfig.default("precision"), choices=PRECISION_CHOICES,
                   help="auto: bf16 where it is faster (GPUs, CPUs with native bf16), else fp32")


def build_parser() -> argparse.ArgumentParser:
    from .core.config import FinetuneConfig, MethodConfig, ModelConfig, PreprocessConfig, TrainConfig
    from .core.layouts import FORMATS
    from .core.run_folder import CLI_ROOT

    defaults, method, prep, tune = TrainConfig(), MethodConfig(), PreprocessConfig(), FinetuneConfig()
    parser = argparse.ArgumentParser(prog="ramseg", description="Domain-generalizable segmentation with RAM-DSIR.")
    parser.add_argument("--version", action="version", version=f"napari-ramseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on source domains")
    t.add_argument("--data", required=True, type=Path, help="dataset root")
    t.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="dataset layout (auto detects it)")
    t.add_argument("--domains", type=_csv, help="comma-separated source domains (default: all but --target)")
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
    t.add_argument("--labels", type=_csv, help="label names for mask values 1..K, e.g. vessel or disc,cup")
    t.add_argument("--label-kind", choices=["nested", "exclusive"], help="nested sigmoid heads or exclusive softmax")
    t.add_argument("--no-ram", action="store_true", help="switch off random amplitude mixup")
    t.add_argument("--no-dsir", action="store_true", help="switch off domain-specific image restoration")
    t.add_argument("--no-consistency", action="store_true", help="switch off the semantic-consistency loss")
    t.add_argument("--window-ratio", type=float, default=method.window_ratio, help="RAM window ratio L")
    t.add_argument("--lam", choices=["uniform", "discrete"], default=method.lam_mode)
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
    _add_device(t)

    p = sub.add_parser("predict", help="segment images or volumes")
    p.add_argument("--model", default="default", help="run folder, .safetensors file, or 'default' (bundled)")
    p.add_argument("--input", required=True, type=Path, help="image/volume file or a folder of them")
    p.add_argument("--output", required=True, type=Path, help="mask file, or a folder for folder input")
    p.add_argument("--postprocess", action="store_true", help="largest component per structure and hole filling")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_device(p)

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
    _add_device(e)

    f = sub.add_parser("finetune", help="learn from corrected masks; writes a new model version")
    f.add_argument("--model", default="default")
    f.add_argument("--images", nargs="+", type=Path, help="corrected cases' images")
    f.add_argument("--labels", nargs="+", type=Path, help="corrected masks, in the same order")
    f.add_argument("--project", type=Path, help="a corrections project folder saved by the napari widget")
    f.add_argument("--replay", type=Path, help="source dataset root to replay alongside the corrections")
    f.add_argument("--out", required=True, type=Path, help="models folder; a new version is created inside")
    f.add_argument("--iterations", type=int, default=tune.iterations)
    f.add_argument("--seed", type=int, default=tune.seed)
    _add_device(f)

    d = sub.add_parser("demo", help="open napari with the sample scan, the bundled model and the widgets")
    d.add_argument("--screenshot", type=Path, help="write a screenshot of the window here and exit")
    return parser


def _progress_bar(total: int, desc: str, quiet: bool = False):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", disable=quiet, dynamic_ncols=True, file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from .core.distributed import env_rank
    from .core.run_folder import default_run_dir
    from .core.stopping import GracefulStop, signal_name
    from .core.train_job import TrainRequest, run_training

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
        window_ratio=args.window_ratio, lam_mode=args.lam, val_fraction=args.val_fraction,
        val_every=args.val_every, threads=args.threads, base_width=args.base_width,
        grad_accumulation=args.grad_accumulation, sync_batchnorm=args.sync_batchnorm,
        device=args.device, precision=args.precision, resume=args.resume, resume_every_s=args.resume_every,
        command=" ".join(["ramseg", *sys.argv[1:]]),
    )
    bar = None

    def on_event(event) -> None:
        nonlocal bar
        if bar is None:
            bar = _progress_bar(event.total, "train", quiet)
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
                              log=None if quiet else _stderr)
    if bar is not None:
        bar.close()
    if result.stopped:
        if main_rank:
            _stderr(f"ramseg: interrupted ({stop.name or 'stopped'}) at iteration {result.iterations_done}; "
                    f"{_train_run_note(result.run_dir, args.data)}")
        return stop.exit_code or EXIT_INTERRUPTED
    if result.run_dir is not None and main_rank:
        _stderr(f"finished after {result.iterations_done} iterations; model written to {result.run_dir}")
    return 0


def _train_run_note(run: Path | None, data: Path) -> str:
    """What a stopped training run left in its folder, read from the folder itself."""
    from .core.run_folder import RunFolder

    if run is None or not Path(run).is_dir():
        return f"nothing was written{f' to {run}' if run is not None else ''} (it stopped before training began)"
    folder = RunFolder(run)
    iteration, model = folder.saved_iteration(), folder.has_model()
    if iteration is None:
        return (f"{run} holds a model but no resume state" if model else
                f"{run} holds no resume state yet (none was written before the stop); start the run again")
    return (f"{run} holds a resume state for iteration {iteration}"
            f"{' and a model of the training so far' if model else ''} (nothing half-written); "
            f"continue it with ramseg train --data {_quote(data)} --resume {_quote(run)}")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_predict(args: argparse.Namespace) -> int:
    from .core.infer import Predictor
    from .io import read_image, write_labels
    from .models import resolve_model

    predictor = Predictor.from_path(resolve_model(args.model), device=args.device, precision=args.precision)
    pairs = _prediction_pairs(args.input, args.output)
    with _progress_bar(len(pairs), "predict", quiet=len(pairs) == 1) as bar:
        for source, target in pairs:
            image = read_image(source)
            with naming(source):
                prediction = predictor.predict(image.array, postprocess=args.postprocess, is_volume=image.is_volume,
                                               spacing=image.spacing)
                fit = predictor.check_fit(image.array, is_volume=image.is_volume)
            if not fit.fits:  # the mask is still written: the user decides what to make of it
                bar.write(f"ramseg: warning: {source}: {fit.differs}", file=sys.stderr)
            written = write_labels(target, prediction.labels, like=image, overwrite=args.overwrite)
            bar.update(1)
            if len(pairs) == 1:
                _stderr(f"wrote {written} ({', '.join(predictor.channel_names)}; shape {prediction.labels.shape})")
    return 0


def _prediction_pairs(source: Path, target: Path) -> list[tuple[Path, Path]]:
    """(input, output) file pairs; a folder input maps every readable file to ``<output>/<stem>.<ext>``."""
    from .io import is_supported, stem_of, suffix_of

    if not source.exists():
        raise RamsegInputError("input not found", source)
    if source.is_file():
        if target.is_dir():
            target = target / f"{stem_of(source)}{'.nii.gz' if suffix_of(source) in ('.nii', '.nii.gz') else '.png'}"
        return [(source, target)]
    files = sorted(p for p in source.iterdir() if p.is_file() and is_supported(p))
    if not files:
        raise RamsegInputError("no readable images (PNG, JPEG, TIFF, NIfTI) in this folder", source)
    target.mkdir(parents=True, exist_ok=True)
    pairs = []
    for path in files:
        suffix = suffix_of(path)
        out_suffix = ".nii.gz" if suffix in (".nii", ".nii.gz") else (".tif" if suffix in (".tif", ".tiff") else ".png")
        pairs.append((path, target / f"{stem_of(path)}{out_suffix}"))
    return pairs


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .core.evaluate import evaluate_domain
    from .core.infer import Predictor
    from .core.metrics import json_safe
    from .models import resolve_model

    bars = []  # made at the first case: a model or data error then prints one line, not an empty bar too

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(_progress_bar(total, f"evaluate {args.domain}"))
        bars[0].total = total
        bars[0].n = done
        bars[0].refresh()

    try:
        predictor = Predictor.from_path(resolve_model(args.model), device=args.device, precision=args.precision)
        report = evaluate_domain(predictor, args.data, args.domain, fmt=args.format,
                                 split=args.split, postprocess=args.postprocess, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    for label, values in report["summary"].items():
        print(f"{label}: " + "  ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a"
                                        for k, v in json_safe(values).items()))
    if args.json:
        from .core.checkpoint import atomic_write_json

        atomic_write_json(args.json, json_safe(report))
        _stderr(f"wrote {args.json}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Corrections from --project or --images/--labels, then a new model version in --out."""
    from .core.checkpoint import resolve_model_path
    from .core.finetune_job import finetune_from_files
    from .models import resolve_model

    model = resolve_model(args.model)
    resolve_model_path(model)  # a missing or broken model is the first thing said
    images, masks = args.images or [], args.labels or []
    if bool(images) != bool(masks):
        raise RamsegInputError("give --images and --labels together (one mask per image, same order)")
    if not images and args.project is None:
        raise RamsegInputError("nothing to learn from: give --project DIR (saved by the napari widget) "
                               "or --images ... --labels ...")
    if args.iterations < 1:
        raise ValueError("--iterations must be at least 1")
    bars = []

    def on_event(event) -> None:
        if event.phase == "train":
            if not bars:
                bars.append(_progress_bar(event.total, "finetune"))
            bars[0].update(1)
            bars[0].set_postfix({"loss": f"{event.losses['loss']:.3f}"}, refresh=False)
        elif event.message and event.phase != "done":
            _stderr(event.message + ("" if event.dice is None else f": {event.dice:.4f}"))

    try:
        result = finetune_from_files(model, args.out, project=args.project, images=images, masks=masks,
                                     replay=args.replay, iterations=args.iterations, seed=args.seed,
                                     device=args.device, command=" ".join(["ramseg", *sys.argv[1:]]),
                                     on_event=on_event, log=_stderr)
    finally:
        for bar in bars:
            bar.close()
    if result.model_dir is None:
        _stderr("fine-tuning stopped; no new model was written")
        return 1
    line = (f"wrote {result.model_dir} (round {result.round}, {len(result.train_cases)} training case(s), "
            f"{len(result.val_cases)} held out)")
    if result.before_dice is not None:
        line += f"; held-out Dice {result.before_dice:.4f} -> {result.after_dice:.4f}"
    _stderr(line)
    print(result.model_dir)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(screenshot=args.screenshot)


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate,
            "finetune": cmd_finetune, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("RAMSEG_DEBUG"):
        return COMMANDS[args.command](args)  # full tracebacks for developers
    try:
        return COMMANDS[args.command](args)
    except RamsegInputError as exc:
        if exc.path is None and args.command == "predict" and Path(args.input).is_file():
            exc = RamsegInputError(exc.problem, args.input)  # the predictor does not know the file's name
        _error(exc)
    except FileExistsError as exc:
        hint = ", or pass --overwrite to replace it" if args.command == "predict" else ""
        _error(f"{exc}{hint}")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        _error(exc)
    except ValueError as exc:  # bad option values (device not present, impossible sizes) are input too
        _error(exc)
    except KeyboardInterrupt as exc:  # a second SIGINT or SIGTERM (core.stopping.StopNow) carries its code
        _stderr(f"ramseg: interrupted; {_interrupted_note(args)}")
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)
    except MemoryError:
        _error("out of memory; try a smaller --size or --batch, or fewer/smaller images")
        return EXIT_FAILED
    except OSError as exc:  # disk full, I/O errors: the machine, not the input
        _error(exc)
        return EXIT_FAILED
    except RuntimeError as exc:  # torch reports exhausted CPU/GPU memory as RuntimeError subclasses
        if "out of memory" not in str(exc).lower() and "not enough memory" not in str(exc).lower():
            raise  # a bug: keep the traceback for the report
        _error(f"out of memory ({str(exc).splitlines()[0][:160]}); try a smaller --size or --batch, or --device cpu")
        return EXIT_FAILED
    return EXIT_BAD_INPUT


def _error(problem: object) -> None:
    _stderr(f"ramseg: error: {one_line(problem, None, typed=False)}")


def _interrupted_note(args: argparse.Namespace) -> str:
    """What an interruption left behind, for the command that was running."""
    if args.command == "train":
        return _train_run_note(args.resume or args.out, args.data)
    if args.command == "predict":
        return "every mask already written is complete; no partial file is left"
    if args.command == "finetune":
        return "a model version is written only when complete; the base model and the saved corrections are unchanged"
    return "nothing was written"


def _quote(path: object) -> str:
    import shlex

    return shlex.quote(str(path))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
