"""CLI progress and logging: no bar before the work starts, plain unwrapped lines in logs."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from lab.logs import setup_logging
from lab.progress import progress_callback


def test_no_bar_when_the_command_fails_before_reporting():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with pytest.raises(ValueError), progress_callback("displacement", console=console):
        raise ValueError("bad store")  # refused before any progress
    assert out.getvalue() == ""


def test_bar_on_a_terminal_once_work_reports():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with progress_callback("displacement", console=console) as update:
        update(3, 10)
    assert "displacement" in out.getvalue() and "3/10" in out.getvalue()


def test_plain_lines_when_not_a_terminal(caplog):
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    with caplog.at_level(logging.INFO, logger="elastolab"), progress_callback(
            "tof", console=console, line_interval_s=float("inf")) as update:
        for k in range(1, 6):
            update(k, 5)
    assert [r.getMessage() for r in caplog.records] == ["tof: 1/5", "tof: 5/5"]
    assert out.getvalue() == ""


def test_log_lines_are_not_wrapped_when_not_a_terminal(capsys):
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        setup_logging()  # pytest captures stderr: not a terminal
        message = "a long log line " + "x" * 300
        logging.getLogger("elastolab.test").warning(message)
        err = capsys.readouterr().err
        (line,) = [x for x in err.splitlines() if "a long log line" in x]
        assert line.endswith(message) and "WARNING" in line
    finally:
        for h in list(root.handlers):
            if h not in before[0]:
                root.removeHandler(h)
        root.setLevel(before[1])


def test_version_and_choices_in_help():
    from typer.testing import CliRunner

    from lab.cli import app
    from lab.store import package_version

    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith(f"elastolab {package_version()}")
    helptext = runner.invoke(app, ["analyze", "displacement", "--help"]).output
    assert "loupas|kasai" in helptext and "fixed|progressive" in helptext


def test_refused_train_leaves_no_models_directory(tmp_path):
    from typer.testing import CliRunner

    from lab.cli import app

    store = tmp_path / "s.zarr"
    store.mkdir()  # not a store: refused
    result = CliRunner().invoke(app, ["train", str(store)])
    assert result.exit_code == 2 and "not a Zarr v3 store" in result.output
    assert not (store / "models").exists()


def test_monitor_refuses_a_path_that_is_not_a_store(tmp_path):
    from typer.testing import CliRunner

    from lab.cli import app

    result = CliRunner().invoke(app, ["monitor", str(tmp_path / "none.zarr"), "--port", "0"])
    assert result.exit_code == 2 and "not a Zarr v3 store" in result.output
