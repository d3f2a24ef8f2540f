"""No stale pointers: the files and ``module.symbol`` names that docs, configs and docstrings
mention exist.

Checked: every ``lab/...``, ``drivers/...`` (and the other top-level folders) path in README.md,
docs/*.md and the comments of configs/*.toml; every backticked dotted name
(```lab.store.SessionStore```, ``:func:`analysis.metrics.failure_rate```) there and in the
docstrings and comments of the project's Python files, and in those files the Sphinx references
without a package (``:meth:`SessionStore.append```), looked up in the module itself. Names are
resolved statically (``ast``): a module file, then top-level definitions or imports, then class
members, so nothing is imported.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from lab.config import LabConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lab", "drivers", "protocols", "analysis")
FOLDERS = (*PACKAGES, "tests", "bench", "configs", "docs")
#: Paths mentioned on purpose that a checkout does not hold: written at run time.
GENERATED = {"bench/results"}  # and what is under it (written by the benchmarks)
PATH_RE = re.compile(r"(?<![\w/.])((?:" + "|".join(FOLDERS) + r")/[\w./-]*\w)")
NAME_RE = re.compile(r"`~?((?:" + "|".join(PACKAGES) + r")(?:\.\w+)+)(?:\(\))?`")
LOCAL_RE = re.compile(r":(?:func|meth|class|attr|data|const|exc):`~?([A-Za-z_][\w.]*)`")


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "configs").glob("*.toml"))]


def _py_files() -> list[Path]:
    return sorted(p for pkg in (*PACKAGES, "bench", "tests") for p in (ROOT / pkg).rglob("*.py")
                  if p != Path(__file__).resolve())


def stale_paths(text: str) -> list[str]:
    """Folder paths in ``text`` that do not exist (placeholders ``<x>`` and globs skipped)."""
    out = []
    for m in PATH_RE.finditer(text):
        path = m.group(1).rstrip(".")
        generated = path in GENERATED or path.startswith(tuple(g + "/" for g in GENERATED))
        if any(c in text[m.end():m.end() + 1] for c in "<*{") or generated:
            continue
        if not (ROOT / path).exists():
            out.append(path)
    return out


@functools.cache
def _module_tree(module: str) -> ast.Module | None:
    base = ROOT / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return ast.parse(path.read_text())
    return None


def _members(node: ast.AST) -> dict[str, ast.AST]:
    """Names a module or class body defines, assigns or imports."""
    names: dict[str, ast.AST] = {}
    for stmt in getattr(node, "body", []):
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[stmt.name] = stmt
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names[n.id] = stmt
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            for alias in stmt.names:
                names[(alias.asname or alias.name).split(".")[0]] = stmt
        elif isinstance(stmt, ast.If | ast.Try):  # TYPE_CHECKING blocks, optional imports
            names.update(_members(stmt))
    return names


def resolves(name: str, within: ast.Module | None = None) -> bool:
    """Whether dotted ``name`` is a project module, or a module's (class's) member; with
    ``within``, a member of that module."""
    parts = name.split(".")
    if within is not None:
        node: ast.AST = within
        return _member_path(node, parts)
    for i in range(len(parts), 0, -1):
        tree = _module_tree(".".join(parts[:i]))
        if tree is not None:
            break
    else:
        return False
    return _member_path(tree, parts[i:])


def _member_path(node: ast.AST, parts: list[str]) -> bool:
    for part in parts:
        members = _members(node)
        if part not in members:
            return False
        node = members[part]
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Assign | ast.AnnAssign):
            return True  # defined elsewhere or a value: its attributes are not followed
    return True


def stale_names(text: str) -> list[str]:
    """Backticked dotted project names in ``text`` that do not resolve. ``lab.<instrument>``
    (a config key path such as ``lab.robot.host``) is not a module name and is skipped."""
    keys = set(LabConfig.model_fields)
    return [m.group(1) for m in NAME_RE.finditer(text)
            if not (m.group(1).split(".")[1] in keys and m.group(1).startswith("lab."))
            and not resolves(m.group(1))]


def stale_local_names(text: str) -> list[str]:
    """Package-less Sphinx references (``:meth:`SessionStore.append```) in a module's source that
    the module neither defines nor imports. Names of other libraries (a dotted name whose first
    part the module does not know, ``numpy.ndarray``) are not checked."""
    tree = ast.parse(text)
    known = _members(tree)
    anywhere = _defined_anywhere(tree)
    out = []
    for m in LOCAL_RE.finditer(text):
        name = m.group(1)
        first = name.split(".")[0]
        if first in PACKAGES or ("." in name and first not in known):
            continue
        if "." not in name and name in anywhere:  # a method of the class the text is in
            continue
        if not resolves(name, within=tree):
            out.append(name)
    return out


def _defined_anywhere(tree: ast.Module) -> set[str]:
    """Every function, class and ``self.<name>`` attribute defined at any depth of a module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)  # dataclass fields
    return names


def test_the_checks_catch_stale_pointers() -> None:
    text = ("see `lab/store.py`, configs/paper.toml, `lab.store.Table.append`, "
            ":func:`analysis.tof.ALPHA_OLD`, `lab.demo.STAGES_OLD`, `lab.robot.host`, "
            "`drivers.ultrasound.sim_*`, `strain/<coarse>/x`, lab/nothing.py and bench/results")
    assert stale_paths(text) == ["configs/paper.toml", "lab/nothing.py"]
    assert stale_names(text) == ["analysis.tof.ALPHA_OLD", "lab.demo.STAGES_OLD"]
    module = ('"""Rows go in with :meth:`Store.append` or :meth:`Table.append`, see\n'
              ':func:`numpy.mean`, :class:`Path`, :func:`guard_devices`."""\n'
              "from pathlib import Path\n\n\nclass Table:\n    def append(self):\n"
              '        """Unlike :meth:`extend`, like :meth:`append`."""\n\n\n'
              "class Store:\n    pass\n")
    assert stale_local_names(module) == ["Store.append", "guard_devices", "extend"]


@pytest.mark.parametrize("path", _doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_and_configs_point_at_what_exists(path: Path) -> None:
    text = path.read_text()
    assert stale_paths(text) == [], f"{path.name} mentions paths that do not exist"
    assert stale_names(text) == [], f"{path.name} mentions names that do not exist"


def test_docstrings_and_comments_name_what_exists() -> None:
    stale = {p.relative_to(ROOT).as_posix(): names for p in _py_files()
             if (names := stale_names(p.read_text()) + stale_local_names(p.read_text()))}
    assert stale == {}
