"""``elastolab session run/resume`` through typer's CliRunner."""

from __future__ import annotations

from session_testkit import disk_full, write_toml
from typer.testing import CliRunner

from lab.session_cli import session_app
from lab.store import SessionStore
from lab.verify import verify_store
from protocols.testing import tiny_config_dict

runner = CliRunner()


def test_dry_run_lists_checks_estimates_and_plots(tmp_path):
    config = write_toml(tiny_config_dict(positions=3), tmp_path / "s.toml")
    png = tmp_path / "positions.png"
    result = runner.invoke(session_app, ["run", str(config), "--store", str(tmp_path / "s.zarr"),
                                         "--dry-run", "--plot-positions", str(png)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    for unit in ("indentation/cyl-7.5", "swei/block-a/pos002", "compression/block-a/step01"):
        assert unit in out
    assert "units: indentation 2, swei 3, compression 2 (total 7)" in out
    assert "estimated duration" in out and "within the safety limits" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "s.zarr").exists()  # a dry run creates nothing


def test_dry_run_reports_limit_problems_with_exit_code_1(tmp_path):
    data = tiny_config_dict()
    data["protocols"][1]["contact_force_n"] = 3.0
    data["safety"]["workspace_max_m"] = [0.35, -0.15, 0.105]
    config = write_toml(data, tmp_path / "bad.toml")
    result = runner.invoke(session_app, ["run", str(config), "--store", str(tmp_path / "s.zarr"),
                                         "--dry-run"])
    assert result.exit_code == 1
    out = " ".join(result.output.split())  # undo the console's line wrapping
    assert "contact force set-point 3.0 N" in out
    assert "outside the robot workspace" in out


def test_run_then_resume_a_complete_session(tmp_path):
    data = tiny_config_dict(protocols=("indentation",))
    config = write_toml(data, tmp_path / "s.toml")
    store = tmp_path / "s.zarr"
    result = runner.invoke(session_app, ["run", str(config), "--store", str(store),
                                         "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and "2/2 units" in result.output
    assert verify_store(store).clean
    assert SessionStore.open(store).table("indentation").keys() == ["cyl-7.5", "cyl-17.5"]
    again = runner.invoke(session_app, ["resume", str(store), "--no-progress"])
    assert again.exit_code == 0 and "already complete" in again.output
    clash = runner.invoke(session_app, ["run", str(config), "--store", str(store)])
    assert clash.exit_code == 2 and "already exists" in clash.output


def test_bad_config_and_missing_store_give_clear_errors(tmp_path):
    bad = tmp_path / "typo.toml"
    bad.write_text('name = "x"\nmax_retrys = 3\n')
    result = runner.invoke(session_app, ["run", str(bad), "--store", str(tmp_path / "s.zarr")])
    assert result.exit_code == 2 and "max_retrys" in result.output
    missing = runner.invoke(session_app, ["resume", str(tmp_path / "nope.zarr")])
    assert missing.exit_code == 2 and "not a Zarr v3 store" in missing.output


def test_a_full_disk_exits_1_with_one_line_and_resume_completes(tmp_path, monkeypatch):
    config = write_toml(tiny_config_dict(protocols=("indentation",)), tmp_path / "s.toml")
    store = tmp_path / "s.zarr"
    free = disk_full(monkeypatch, "indentation")
    result = runner.invoke(session_app, ["run", str(config), "--store", str(store),
                                         "--no-progress"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "No space left on device" in result.output
    assert SessionStore.open(store).attrs["status"] == "failed"
    assert "Traceback" in (store / "logs" / "session.log").read_text()
    free()
    again = runner.invoke(session_app, ["resume", str(store), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert verify_store(store).clean
