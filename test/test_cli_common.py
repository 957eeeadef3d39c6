"""occ_core.cli: number types, early output checks and the one-line exit-2 convention."""

import argparse
import os

import pytest

from occ_core.cli import (check_input_file, check_output_dir, check_output_file, nonnegative_float, positive_int,
                          run_cli)
from occ_core.errors import OccDataError


@pytest.mark.parametrize("text", ["-1", "0", "x", "1.5"])
def test_positive_int_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError, match="integer >= 1"):
        positive_int(text)


@pytest.mark.parametrize("text", ["-0.1", "nan", "inf", "abc"])
def test_nonnegative_float_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError, match=">= 0"):
        nonnegative_float(text)


def test_output_checks(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OccDataError, match="--out: .* not a folder"):
        check_output_dir(f, "--out")
    with pytest.raises(OccDataError, match="--json: .* is a folder"):
        check_output_file(tmp_path, "--json")
    with pytest.raises(OccDataError, match="--json: .*file.* is not a folder"):
        check_output_file(f / "x.json", "--json")
    assert check_output_dir(tmp_path / "a" / "b", "--out").is_dir()
    with pytest.raises(OccDataError, match="--config: .* does not exist"):
        check_input_file(tmp_path / "missing.yaml", "--config")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(OccDataError, match="cannot write"):
            check_output_dir(ro, "--out")


def test_run_cli_one_line_exit_2(capsys):
    def bad():
        raise OccDataError("--out: /x is not a folder")

    def io():
        open("/nonexistent-dir/x")

    assert run_cli("occ-x", bad) == 2
    assert capsys.readouterr().err == "occ-x: --out: /x is not a folder\n"
    assert run_cli("occ-x", io) == 2
    err = capsys.readouterr().err
    assert err.startswith("occ-x: /nonexistent-dir/x: ") and err.count("\n") == 1
    assert run_cli("occ-x", lambda: 0) == 0
