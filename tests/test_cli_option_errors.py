"""Issue 29, finding 11: an error in an option names the option, not the scan it was given with."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_ramseg.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "hrf_01_h.jpg"


@pytest.mark.parametrize("options, named", [(["--model", "foo"], "--model foo: no bundled model named 'foo'"),
                                            (["--adapt", "bogus"], "--adapt bogus: unknown adaptation method")])
def test_a_bad_option_is_named_not_the_scan(options, named, tmp_path, capsys):
    code = main(["predict", "--input", str(SAMPLE), "--output", str(tmp_path / "mask.png"), "--device", "cpu", *options])
    err = capsys.readouterr().err
    assert code == 2 and f"ramseg: error: {named}" in err and "hrf_01_h.jpg" not in err
    assert not (tmp_path / "mask.png").exists()
