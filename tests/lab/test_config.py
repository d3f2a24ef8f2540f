"""Configuration: shipped examples load; bad files are refused naming file, key, value."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli import app
from lab.config import ConfigError, SessionConfig, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, SessionConfig)
    assert cfg.protocols, "an example config should run something"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, '[lab.hexapod]\nbackend = "gcs"\nhots = "10.0.0.2"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "lab.hexapod.hots" in msg and "'10.0.0.2'" in msg
    assert "unknown key" in msg


def test_bad_literal_lists_what_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, '[lab.robot]\nbackend = "real"\n')
    with pytest.raises(ConfigError, match=r"lab\.robot\.backend = 'real': allowed: 'sim' or "
                                          r"'ur_rtde'"):
        load_config(path)


def test_force_limit_above_protocol_limit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[safety]\nindentation_force_limit_n = 5.0\n")
    with pytest.raises(ConfigError, match="above 2 N"):
        load_config(path)


def test_inverted_workspace_box_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[safety]\nworkspace_min_m = [0.5, 0.0, 0.0]\n"
                           "workspace_max_m = [0.1, 0.2, 0.3]\n")
    with pytest.raises(ConfigError, match=r"workspace x: min 0\.5 must be < max 0\.1"):
        load_config(path)


def test_protocol_must_name_existing_phantom_of_right_kind(tmp_path: Path) -> None:
    path = write(tmp_path, '[[phantoms]]\nkind = "block"\nid = "b1"\ngelatin_percent = 7.5\n'
                           '[[protocols]]\nkind = "indentation"\ncylinders = ["b1"]\n')
    with pytest.raises(ConfigError, match="names 'b1', which is not a cylinder phantom"):
        load_config(path)


def test_gelatin_outside_calibration_and_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path, '[[phantoms]]\nkind = "block"\nid = "b"\ngelatin_percent = 30\n')
    with pytest.raises(ConfigError, match=r"phantoms\.0\.block\.gelatin_percent = 30"):
        load_config(path)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[lab\n"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_overrides_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[lab.hexapod]\nbackend = "gcs"\n')
    monkeypatch.setenv("ELASTOLAB__LAB__HEXAPOD__HOST", '"10.1.2.3"')
    cfg = load_config(path, overrides={"lab.hexapod.port": 50001})
    assert cfg.lab.hexapod.host == "10.1.2.3" and cfg.lab.hexapod.port == 50001


def test_config_check_command(tmp_path: Path) -> None:
    runner = CliRunner()
    good = runner.invoke(app, ["config", "check", str(CONFIGS / "sim-lab.toml")])
    assert good.exit_code == 0 and "valid" in good.output
    bad = runner.invoke(app, ["config", "check", str(write(tmp_path, "[lab.robot]\nx = 1\n"))])
    assert bad.exit_code == 2 and "lab.robot.x" in bad.output
