"""Import direction of the project's layers (docs/architecture.md), read from the source with ast.

Every import counts, at module level or inside a function, so a lazy import cannot hide a
dependency; ``if TYPE_CHECKING:`` blocks are left out (they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lab", "drivers", "protocols", "analysis")
FOUNDATIONS = {"lab.clock", "lab.config", "lab.store", "lab.logs", "lab.gelatin", "lab.provenance"}
#: Analysis modules that may open stores (``ddp`` is the torchrun entry point of ``run_train``).
RUNNER_NAMES = {"runners", "ddp"}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(source: str, known: Iterable[str]) -> set[str]:
    """Project modules a source imports (``from pkg import mod`` resolves to ``pkg.mod``)."""
    known = set(known)
    found: set[str] = set()
    todo: list[ast.AST] = [ast.parse(source)]
    while todo:
        node = todo.pop()
        if _is_type_checking(node):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        todo.extend(ast.iter_child_nodes(node))
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _kind(module: str) -> str:
    if module in FOUNDATIONS:
        return "foundation"
    last = module.rsplit(".", 1)[-1]
    if module.startswith("analysis"):
        return "analysis-" + ("runner" if last in RUNNER_NAMES else
                              "synthetic" if last == "synthetic" else "pure")
    return module.split(".")[0]


def violation(module: str, target: str) -> str | None:
    """Why ``module`` may not import ``target`` (None when the layering allows it)."""
    src, dst = _kind(module), _kind(target)
    if src == "foundation" and dst != "foundation":
        return "foundations import only foundations"
    if src == "analysis-pure" and (target == "lab.store" or dst in {
            "drivers", "protocols", "lab", "analysis-runner", "analysis-synthetic"}):
        return "pure analysis imports neither stores, simulators, protocols nor runners"
    if src == "drivers" and dst in {"protocols", "lab", "analysis-runner", "analysis-synthetic"}:
        return "drivers import only drivers, foundations and pure analysis"
    if src.startswith("analysis") and dst in {"protocols", "lab"}:
        return "analysis never imports protocols or the session layer"
    if src == "protocols" and (dst.startswith("analysis") or target in {
            "lab.session", "lab.cli", "lab.devices"} or target.startswith("lab.demo")):
        return "protocols sit below the session, the CLI and analysis"
    return None


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def _project() -> dict[str, set[str]]:
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {m: imported_modules(p.read_text(), files) for m, p in files.items()}


def test_the_project_follows_the_layering() -> None:
    graph = _project()
    assert len(graph) > 80 and "lab.gelatin" in graph
    problems = [f"{m} -> {t}: {why}" for m, targets in sorted(graph.items())
                for t in sorted(targets) if (why := violation(m, t))]
    assert problems == []


def test_the_project_has_no_import_cycle() -> None:
    graph = _project()
    # a package importing its own submodules (``__init__`` re-exports) is not a cycle
    acyclic = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    assert find_cycle(acyclic) is None


@pytest.mark.parametrize(("module", "source"), [
    ("lab.gelatin", "from drivers.sim.world import SimWorld"),
    ("lab.config", "import lab.session"),
    ("lab.store", "def f():\n    from protocols.plan import build_plan"),  # lazy imports count
    ("analysis.tof", "from lab.store import SessionStore"),
    ("analysis.strain.study", "from drivers.ultrasound.sim_compression import RfFrame"),
    ("analysis.labels", "from analysis.runners import run_labels"),
    ("drivers.sim.world", "from protocols.common import MOTION_TIMEOUT_S"),
    ("drivers.ultrasound.sim_system", "from analysis.swei_cnn.runners import run_train"),
    ("protocols.swei", "from analysis.displacement import loupas"),
])
def test_a_wrong_direction_is_caught(module: str, source: str) -> None:
    targets = imported_modules(source, _project())
    assert targets and all(violation(module, t) for t in targets)


@pytest.mark.parametrize(("module", "source"), [
    ("analysis.runners", "from lab.store import SessionStore"),
    ("analysis.strain.synthetic", "from drivers.ultrasound.sim_compression import RfFrame"),
    ("drivers.sim.phantom", "from lab.gelatin import youngs_modulus_kpa"),
    ("analysis.tof", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from lab.store import SessionStore"),
])
def test_an_allowed_direction_passes(module: str, source: str) -> None:
    assert not any(violation(module, t) for t in imported_modules(source, _project()))


def test_a_cycle_is_caught() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
