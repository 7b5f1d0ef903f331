"""Options from one declaration: ``ramseg train`` / ``ramseg finetune`` flags, ``TrainRequest`` fields and the
Train / fine-tune docks' fields are all generated from the config fields' declarations (core/config.py)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from napari_ramseg.cli import build_parser, main
from napari_ramseg.core.config import FinetuneConfig, TrainConfig
from napari_ramseg.core.options import settings_of
from napari_ramseg.core.training.job import TrainRequest, config_from_request


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _actions(name: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _subparser(name)._actions if a.dest != "help"}


@pytest.mark.parametrize("command, config", [("train", TrainConfig), ("finetune", FinetuneConfig)])
def test_every_declared_option_is_a_flag_with_help_and_the_configs_default(command, config):
    actions = _actions(command)
    for setting in settings_of(config):
        action = actions[setting.name]  # the flag fills the config field's own name
        assert setting.flag in action.option_strings, setting.name
        assert setting.option.help and setting.option.help in action.help, setting.name
        if setting.name not in ("iterations", "resume_every_s") or command == "finetune":
            assert action.default == setting.default, setting.name
        if setting.choices is not None:
            assert tuple(action.choices) == tuple(setting.choices), setting.name
    for dest, action in actions.items():  # every option of the two commands has help, generated or not
        assert action.help and action.help != argparse.SUPPRESS, f"{command} {dest} has no help"


def test_older_flags_keep_working(tmp_path):
    parser = _subparser("train")
    args = parser.parse_args(["--data", "d", "--threads", "3", "--lam", "discrete", "--no-ram", "--resume-every", "60",
                              "--long-side", "0"])
    assert (args.num_threads, args.lam_mode, args.ram, args.resume_every_s, args.long_side) == (3, "discrete", False,
                                                                                              60.0, None)
    new = parser.parse_args(["--data", "d", "--num-threads", "3", "--lam-mode", "discrete"])
    assert (new.num_threads, new.lam_mode) == (3, "discrete")
    request = TrainRequest(data=tmp_path, **{s.name: getattr(args, s.name) for s in settings_of(TrainConfig)})
    config = config_from_request(request, TrainConfig().labels, 10)
    assert (config.num_threads, config.method.lam_mode, config.method.ram, config.resume_every_s) == (3, "discrete",
                                                                                                    False, 60.0)


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "--batch must be a number >= 1"),
    (["--lr", "5"], "--lr must be a number <= 1"),
    (["--val-fraction", "nan"], "--val-fraction must be a number >= 0"),
])
def test_bounds_are_checked_before_any_data_is_read(tmp_path, capsys, argv, message):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ramseg: error: {message}"), err


def test_finetune_takes_one_config_and_refuses_out_of_bounds_settings(tmp_path, capsys):
    args = _subparser("finetune").parse_args(["--out", "m", "--lr-scale", "0.25", "--batch", "0", "--freeze", "none"])
    config = FinetuneConfig(**{s.name: getattr(args, s.name) for s in settings_of(FinetuneConfig)})
    assert (config.lr_scale, config.batch, config.freeze) == (0.25, None, "none")  # 0: the base model's batch
    assert main(["finetune", "--model", "vessels", "--images", "a.png", "--labels", "b.png", "--out",
                 str(tmp_path / "m"), "--correction-share", "1.5"]) == 2
    assert "--correction-share must be a number <= 1" in capsys.readouterr().err


@pytest.mark.gui
def test_dock_fields_are_generated_from_the_same_declarations(qtbot):
    from napari_ramseg.plugin.widgets._params import ParamForm, param_value
    from napari_ramseg.plugin.widgets._train_options import FINETUNE_PARAMS, TRAIN_PARAMS

    for command, config, params in (("train", TrainConfig, TRAIN_PARAMS), ("finetune", FinetuneConfig, FINETUNE_PARAMS)):
        actions = _actions(command)
        shown = {s.name for s in settings_of(config) if s.option.dock}
        assert set(params) == shown and shown <= set(actions), command
        hidden = {s.name for s in settings_of(config)} - shown
        # the docks pick the device themselves; partner_share matters only with ramseg train --partners;
        # snapshot_every serves benchmarks (bench/recipes/budget_curve.py), not a dock's user
        assert hidden <= {"device", "precision", "sync_batchnorm", "partner_share", "snapshot_every"}, hidden
        form = ParamForm(list(params.values()))
        for setting in settings_of(config):
            if setting.name not in shown:
                continue
            widget, action = form.field(setting.name), actions[setting.name]
            assert widget.tooltip == setting.option.help and widget.tooltip in action.help, setting.name
            assert param_value(widget) == setting.default, setting.name
            if setting.option.min is not None and setting.kind is not bool:
                assert (widget.min, widget.max) == (setting.option.min, setting.option.max), setting.name
    # a dock's request is a TrainRequest: every Train dock field is one of its keywords
    assert set(TRAIN_PARAMS) <= {f.name for f in dataclasses.fields(TrainRequest)}
    assert set(FINETUNE_PARAMS) <= {f.name for f in dataclasses.fields(FinetuneConfig)}
