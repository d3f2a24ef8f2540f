"""The README's offline walk-through runs as written on the shipped simulated config.

The commands are read from the README's code block under "Analysing a dataset offline", so this
test fails when the README drifts from what the CLI accepts (an option renamed, a model path
changed, a config removed). They run in a fresh directory holding a copy of ``configs/``, as a
user would run them from a checkout.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lab.cli import app
from lab.store import SessionStore
from lab.verify import verify_store

# Whole demo runs: minutes on a quiet machine, about ten times that with 12 busy processes
# (`../shared/tools/under-load`); the suite-wide timeout (pyproject) is for everything else.
pytestmark = pytest.mark.timeout(2400)

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Analysing a dataset offline"


def walkthrough_commands(readme: str) -> list[list[str]]:
    """The ``elastolab`` commands of the first bash block after :data:`SECTION`, as argv lists
    (comments dropped, ``a && b`` split)."""
    start = readme.index(SECTION)
    block = re.search(r"```bash\n(.*?)```", readme[start:], re.S)
    assert block is not None, f"no bash block under {SECTION!r} in README.md"
    commands = []
    for line in block.group(1).splitlines():
        for part in line.split("&&"):
            argv = shlex.split(part, comments=True)
            if argv:
                assert argv[0] == "elastolab", f"README walk-through runs {argv[0]!r}: {line}"
                commands.append(argv[1:])
    return commands


def test_walkthrough_parser_reads_the_block() -> None:
    readme = f"x\n{SECTION}\n\n```bash\nelastolab a S && elastolab b  # note\n\nelastolab c " \
             "--o 'x y'\n```\n```bash\nelastolab never\n```\n"
    assert walkthrough_commands(readme) == [["a", "S"], ["b"], ["c", "--o", "x y"]]


@pytest.mark.slow
def test_readme_offline_walkthrough_runs_as_written(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    commands = walkthrough_commands((ROOT / "README.md").read_text())
    assert commands[0][:2] == ["session", "run"], "the walk-through starts by making a store"
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    output = {}
    for argv in commands:
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, (f"`elastolab {shlex.join(argv)}` exited "
                                       f"{result.exit_code}:\n{result.output[-3000:]}"
                                       f"\n{result.exception!r}")
        output[argv[0]] = result.output
    assert "2 strain PNGs (mm) beside the simulated truth" in output["strain"]
    train = next(a for a in commands if a[0] == "train")
    epochs = int(train[train.index("--epochs") + 1]) if "--epochs" in train else 12
    card = json.loads((tmp_path / "S.zarr/models/swei-cnn-w33.json").read_text())
    assert card["profile"]["epochs"] == epochs == len(card["metrics"]["history"])

    store = SessionStore.open(tmp_path / "S.zarr")
    assert verify_store(tmp_path / "S.zarr").clean
    labels = {round(lab["gelatin_percent"], 1): lab["youngs_modulus_kpa"]
              for lab in store.root["labels"].attrs["labels"]}
    assert set(labels) == {7.5, 15.0} and labels[15.0] > 2 * labels[7.5]
    # ToF ran on the labels' calibration, not the paper's default alpha, and mapped something.
    tof = store.root["maps/tof_kpa"]
    assert "calibrated" in tof.attrs["alpha_source"]
    assert np.isfinite(store.read_array("maps/tof_kpa")).any()
    cnn = store.read_array("maps/cnn_kpa")
    assert cnn.shape[0] == len(store.table("swei")) and np.isfinite(cnn).all(axis=0).any()
    assert np.isfinite(store.read_array("strain/dp/axial_strain")).any()
    pngs = [tmp_path / "labels.png", *sorted((tmp_path / "maps").glob("*.png")),
            *sorted((tmp_path / "strain").glob("*.png"))]
    assert len(list((tmp_path / "maps").glob("*.png"))) >= 1
    assert len(list((tmp_path / "strain").glob("*.png"))) == 2  # one per compression pair
    for png in pngs:
        with Image.open(png) as im:
            im.verify()
