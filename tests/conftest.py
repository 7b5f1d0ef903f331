"""Shared fixtures. The real data live outside the repository, in ``../shared/data``."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from helpers import make_synthetic_domains

# -------------------------------------------------------------------------------------------- tiers
# The default tier is `python -m pytest -q -m "not slow and not gui and not subprocess"` (README, Tests):
# the engine, the readers and the CLI on tiny data. The other tiers (markers in pyproject.toml) are
# `gui` (napari docks under Xvfb: every test in tests/plugin/widgets/ and those marked so), `subprocess` (a test
# that starts Python processes: the CLI as a child, the Train dock's child, torchrun, pip, npe2) and `slow`
# (training runs and real data beyond a few seconds). `python -m pytest -q` runs all of them.
STARTS_A_PROCESS = re.compile(r"\b(_ramseg|subprocess\.(run|Popen|check_output)|TrainProcess|torchrun|_torchrun)\b")
SUBPROCESS_MODULES = {  # every test here drives child processes, some through helpers the scan cannot see
    "core/training/test_distributed.py", "core/training/test_train_process.py", "test_interrupt.py",
    "test_packaging.py",
}
SLOW_MODULES: set[str] = set()
# each above about 10 s (measured with --durations, file by file, on the shared 2-core CPU); "module::test",
# every parametrized case included
SLOW_TESTS = {
    "core/training/test_train.py::test_loss_falls_on_real_vessels",
    "core/training/test_train.py::test_loss_falls_on_real_dofe_fundus",
    "core/training/test_train.py::test_loss_falls_on_synthetic_data",
    "core/training/test_train.py::test_same_seed_same_result_on_cpu",
    "core/training/test_train.py::test_stop_then_resume_matches_an_uninterrupted_run",
    "core/models/test_run_folder.py::test_run_is_the_loop_driven_to_the_end",
    "core/test_precision.py::test_bf16_training_follows_the_fp32_curve",
    "core/shift/test_domain_fit.py::test_training_on_volumes_records_the_working_spacing",
    "core/data/test_layouts.py::test_train_and_evaluate_through_the_cli",
    "core/review/test_review_representative.py::test_switching_ranking_measures_only_what_is_missing",
    "core/review/test_review_representative.py::test_worklist_ranks_representative_once_the_folder_is_done_and_keeps_it",
    "core/finetune/test_finetune.py::test_finetune_writes_new_versions_and_never_touches_the_base",
    "core/evaluation/test_metrics.py::test_dice_properties",
    "core/inference/test_adapt.py::test_a_volume_adapts_once",
    "core/inference/test_adapt.py::test_prompt_learns_and_warm_starts_from_the_previous_scan",
    "core/inference/test_adapt.py::test_batchnorm_methods_reset_between_scans",
    "core/test_file_schemas.py::test_divergence_is_one_line_naming_the_learning_rate",
    "test_cli_disc.py::test_finetune_learns_from_rois_of_the_corrected_photographs",
    "test_cli_disc.py::test_drishti_crop_is_taken_as_a_crop",
    "test_cli_disc.py::test_adapting_a_whole_photograph_adapts_each_roi_of_the_two_stages",
    "test_cli_disc.py::test_whole_drions_photograph_gives_a_full_size_disc_and_the_vcdr",
    "test_cli_finetune.py::test_finetune_from_files_then_from_the_project",
    "test_bench_speed.py::test_a_child_that_cannot_load_the_model_is_a_failed_case_named_by_its_error",
    "test_cli.py::test_train_predict_evaluate_on_synthetic_data",
    "test_interchange.py::test_bioimageio_package_passes_its_own_test_offline",
    "test_cli_report.py::test_representative_report_ranks_the_folder_from_descriptors_kept_beside_it",
    "test_cli_report.py::test_folder_prediction_writes_a_ranked_report",
    "test_cli_report.py::test_two_scans_of_one_stem_get_two_rows_and_two_masks",
    "test_cli_predict_findings.py::test_the_disc_settings_are_printed_only_with_verbose",
    "test_reliability.py::test_train_predict_evaluate_under_unicode_and_space_paths",
    "test_resume_checks.py::test_the_same_options_and_data_resume_and_finish",
    "test_cli_adapt.py::test_predict_and_evaluate_say_which_settings_they_used",
    "test_cli_adapt.py::test_predict_adapts_a_volume_once", "test_cli_adapt.py::test_evaluate_with_adaptation_records_it",
}


def pytest_collection_modifyitems(config, items):
    root = Path(__file__).parent
    for item in items:
        module = Path(str(item.fspath)).resolve().relative_to(root).as_posix()
        name = f"{module}::{getattr(item, 'originalname', item.name)}"
        if module.startswith("plugin/widgets/"):
            item.add_marker(pytest.mark.gui)
        if module in SUBPROCESS_MODULES or _starts_a_process(item):
            item.add_marker(pytest.mark.subprocess)
        if module in SLOW_MODULES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


def _starts_a_process(item) -> bool:
    function = getattr(item, "function", None)
    try:
        return function is not None and bool(STARTS_A_PROCESS.search(inspect.getsource(function)))
    except (OSError, TypeError):
        return False

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real evaluation data folder; tests using it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def notifications():
    """Messages of the napari notifications dispatched during the test (a function returning the list)."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)
    return lambda: [str(n.message) for n in notification_manager.records[start:]]


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """Two synthetic source domains of 4 cases each, 48x48 RGB with a binary mask."""
    return make_synthetic_domains(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, synthetic_data) -> Path:
    """A run folder with a tiny RAM-DSIR model (base width 4) trained for 3 steps on synthetic data."""
    from napari_ramseg.core.training.job import TrainRequest, run_training

    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_training(TrainRequest(data=synthetic_data, out=out, iterations=3, size=32, batch=4, base_width=4,
                              labels=["blob"], device="cpu", val_every=3))
    return out
