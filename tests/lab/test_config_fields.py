"""Every config field is described and read somewhere outside lab/config.py (issue 16 #4).

A name-only search would call ``[lab.robot] timeout_s`` read because other objects have a
``.timeout_s``, which is how that key went unnoticed. So this test follows the config's types
through the source with :mod:`ast`: a variable or ``self`` attribute gets a model type from a
parameter or assignment annotation naming a config model, from an assignment of an expression of
known type, or from iterating a tuple field (``for p in config.phantoms``); ``x.field`` on a
value of known type records a read of that field on each model of the type that has it. Reads the
analysis cannot follow are listed in ``NOT_FOLLOWED`` with the reason; the test fails when one of
them is no longer needed, too.
"""

from __future__ import annotations

import ast
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

import lab.config as config_module
from lab.config import SessionConfig

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("lab", "protocols", "drivers", "analysis")

#: (model, field): why the typed analysis cannot see its read (each must still be unseen).
NOT_FOLLOWED: dict[tuple[str, str], str] = {}

Typ = frozenset[type[BaseModel]]


def _unwrap(annotation: Any) -> tuple[Typ, bool]:
    """Models an annotation can hold, and whether it is a container of them (tuple, dict)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        parts = [_unwrap(a) for a in get_args(annotation)]
        return frozenset().union(*(p[0] for p in parts)), any(p[1] for p in parts)
    if origin in (tuple, dict):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        inner = _unwrap(args[-1]) if args else (frozenset(), False)
        return (inner[0], True) if inner[0] else (frozenset(), False)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return frozenset({annotation}), False
    return frozenset(), False


def model_tree(root: type[BaseModel]) -> list[type[BaseModel]]:
    """Every model reachable from ``root`` through its fields."""
    seen: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo += _unwrap(field.annotation)[0]
    return seen


def _names() -> dict[str, tuple[Typ, bool]]:
    """Config type names usable in annotations: model classes and the union aliases."""
    out = {}
    for name, value in vars(config_module).items():
        typ = _unwrap(value)
        if typ[0]:
            out[name] = (typ[0], False)
    return out


def _returns() -> dict[str, tuple[Typ, bool]]:
    """Functions of lab.config returning config models (``load_config`` -> SessionConfig)."""
    out = {}
    for name, value in vars(config_module).items():
        if isinstance(value, types.FunctionType) and value.__module__ == config_module.__name__:
            typ = _unwrap(typing.get_type_hints(value).get("return"))
            if typ[0]:
                out[name] = typ
    return out


class _Reads(ast.NodeVisitor):
    """Collects (model, field) reads of one module, following config types (see module doc)."""

    def __init__(self, names: dict[str, tuple[Typ, bool]]) -> None:
        self.names = names
        self.returns = _returns()
        self.reads: set[tuple[type[BaseModel], str]] = set()
        self.self_attrs: dict[str, tuple[Typ, bool]] = {}

    # -- types of expressions
    def annotation_type(self, node: ast.expr | None) -> tuple[Typ, bool]:
        if node is None:
            return frozenset(), False
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = ast.parse(node.value, mode="eval").body
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            return self.names.get(name, (frozenset(), False))
        if isinstance(node, ast.BinOp):  # X | None
            a, b = self.annotation_type(node.left), self.annotation_type(node.right)
            return a[0] | b[0], a[1] or b[1]
        if isinstance(node, ast.Subscript):  # tuple[X, ...], list[X], X | None inside
            inner = self.annotation_type(node.slice if not isinstance(node.slice, ast.Tuple)
                                         else node.slice.elts[0])
            return (inner[0], True) if inner[0] else inner
        return frozenset(), False

    def expr_type(self, node: ast.expr, env: dict[str, tuple[Typ, bool]],
                  record: bool) -> tuple[Typ, bool]:
        if isinstance(node, ast.Name):
            return env.get(node.id, (frozenset(), False))
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return self.self_attrs.get(node.attr, (frozenset(), False))
            base, container = self.expr_type(node.value, env, record)
            if container:
                return frozenset(), False
            out: set[type[BaseModel]] = set()
            container_out = False
            for model in base:
                field = model.model_fields.get(node.attr)
                if field is None:
                    continue
                if record:
                    self.reads.add((model, node.attr))
                typ = _unwrap(field.annotation)
                out |= typ[0]
                container_out = container_out or typ[1]
            return frozenset(out), container_out
        if isinstance(node, ast.Subscript):
            base, container = self.expr_type(node.value, env, record)
            return (base, False) if container else (frozenset(), False)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "getattr" and len(node.args) >= 2 and isinstance(
                    node.args[1], ast.Constant):
                base, _ = self.expr_type(node.args[0], env, record)
                for model in base:
                    if node.args[1].value in model.model_fields and record:
                        self.reads.add((model, node.args[1].value))
            if node.func.id in self.returns:
                return self.returns[node.func.id]
            if node.func.id in ("enumerate", "reversed", "sorted", "list", "tuple"):
                return self.expr_type(node.args[0], env, record) if node.args else (
                    frozenset(), False)
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp):
            elt = self.expr_type(node.elt, env, record)
            return (elt[0], True) if elt[0] and not elt[1] else (frozenset(), False)
        if isinstance(node, ast.IfExp | ast.BoolOp):
            parts = ([node.body, node.orelse] if isinstance(node, ast.IfExp) else node.values)
            typs = [self.expr_type(p, env, record) for p in parts]
            return frozenset().union(*(t[0] for t in typs)), any(t[1] for t in typs)
        return frozenset(), False

    # -- bindings
    def bind(self, target: ast.expr, typ: tuple[Typ, bool], env: dict[str, Any],
             element: bool = False) -> None:
        if element:
            if not typ[1]:
                return
            typ = (typ[0], False)
        if not typ[0]:
            return
        if isinstance(target, ast.Name):
            old = env.get(target.id, (frozenset(), False))
            env[target.id] = (old[0] | typ[0], typ[1])
        elif (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
              and target.value.id == "self"):
            self.self_attrs[target.attr] = typ
        elif isinstance(target, ast.Tuple) and target.elts:  # for i, p in enumerate(...)
            self.bind(target.elts[-1], typ, env)

    def scan_function(self, fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda,
                      outer: dict[str, Any], record: bool) -> None:
        env = dict(outer)
        args = fn.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            self.bind(ast.Name(a.arg), self.annotation_type(a.annotation), env)
        body = fn.body if isinstance(fn.body, list) else [fn.body]
        nested = []
        for _ in range(3):  # propagate assignments made in any order
            for stmt in body:
                for node in ast.walk(stmt):
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                        nested.append(node)
                    elif isinstance(node, ast.Assign):
                        pairs = [(t, node.value) for t in node.targets]
                        if (len(node.targets) == 1 and isinstance(node.targets[0], ast.Tuple)
                                and isinstance(node.value, ast.Tuple)):  # a, b = x.a, x.b
                            pairs = list(zip(node.targets[0].elts, node.value.elts, strict=False))
                        for t, v in pairs:
                            self.bind(t, self.expr_type(v, env, False), env)
                    elif isinstance(node, ast.AnnAssign):
                        typ = self.annotation_type(node.annotation)
                        if not typ[0] and node.value is not None:
                            typ = self.expr_type(node.value, env, False)
                        self.bind(node.target, typ, env)
                    elif isinstance(node, ast.For | ast.comprehension):
                        self.bind(node.target, self.expr_type(node.iter, env, False), env,
                                  element=True)
        if record:
            for stmt in body:
                for node in ast.walk(stmt):
                    if isinstance(node, ast.Attribute | ast.Call):
                        self.expr_type(node, env, True)
        for inner in nested:
            if inner is not fn:
                self.scan_function(inner, env, record)

    def scan_module(self, tree: ast.Module) -> None:
        functions = [n for n in ast.walk(tree)
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        for record in (False, True):  # first learn self attributes, then record reads
            for fn in functions:
                self.scan_function(fn, {}, record)


def config_reads(sources: dict[str, str]) -> set[tuple[type[BaseModel], str]]:
    """(model, field) pairs read by the given sources (path -> text)."""
    reads: set[tuple[type[BaseModel], str]] = set()
    names = _names()
    for text in sources.values():
        visitor = _Reads(names)
        visitor.scan_module(ast.parse(text))
        reads |= visitor.reads
    return reads


def _config_api_source() -> str:
    """The public module-level functions of lab/config.py (bench geometry, rate bounds): code
    that uses the config. Model validators and private helpers only check it, so they are not
    readers."""
    tree = ast.parse((REPO / "lab" / "config.py").read_text())
    public = [n for n in tree.body
              if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    return ast.unparse(ast.Module(body=public, type_ignores=[]))


def project_sources() -> dict[str, str]:
    """Source files outside lab/config.py, plus the config module's public functions."""
    files = [p for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py")
             if p != REPO / "lab" / "config.py"]
    sources = {str(p.relative_to(REPO)): p.read_text() for p in files}
    sources["lab/config.py (public functions)"] = _config_api_source()
    return sources


def _all_fields() -> list[tuple[type[BaseModel], str]]:
    return [(m, f) for m in model_tree(SessionConfig) for f in m.model_fields]


def test_every_config_field_is_described() -> None:
    missing = [f"{m.__name__}.{f}" for m, f in _all_fields() if not m.model_fields[f].description]
    assert not missing, f"fields without Field(description=...): {missing}"


def test_every_config_field_is_read_outside_the_config_module() -> None:
    reads = config_reads(project_sources())
    # a field read on a common base class counts for every subclass that inherits it
    read_names = {(m.__name__, f) for m, f in reads}
    unread = sorted(f"{m.__name__}.{f}" for m, f in _all_fields()
                    if (m.__name__, f) not in read_names and (m.__name__, f) not in NOT_FOLLOWED)
    assert not unread, f"config fields read nowhere (wire them or remove them): {unread}"
    stale = sorted(f"{m}.{f}" for m, f in NOT_FOLLOWED if (m, f) in read_names)
    assert not stale, f"NOT_FOLLOWED entries now seen by the analysis (remove them): {stale}"


def read_names(src: str) -> set[tuple[str, str]]:
    return {(m.__name__, f) for m, f in config_reads({"snippet.py": src})}


def test_the_analysis_tells_apart_fields_of_the_same_name() -> None:
    """``.timeout_s`` of the hexapod section does not count as the robot's (the old bug)."""
    src = ("from lab.config import SessionConfig\n"
           "def connect(config: SessionConfig, other):\n"
           "    hx = config.lab.hexapod\n"
           "    other.timeout_s\n"
           "    return hx.timeout_s\n")
    reads = read_names(src)
    assert ("GcsHexapodConfig", "timeout_s") in reads
    assert ("LabConfig", "hexapod") in reads
    assert not any(m.endswith("RobotConfig") for m, _ in reads)
    src_loop = ("from lab.config import SessionConfig, BlockConfig\n"
                "class Runner:\n"
                "    def __init__(self, config: SessionConfig):\n"
                "        self.config = config\n"
                "    def run(self):\n"
                "        return [p.speckle_seed for p in self.config.phantoms]\n")
    reads = read_names(src_loop)
    assert ("BlockConfig", "speckle_seed") in reads
    assert ("CylinderConfig", "speckle_seed") not in reads


@pytest.mark.parametrize("section", ["robot", "hexapod", "probe_force_sensor", "ultrasound"])
def test_instrument_sections_are_discriminated_by_backend(section: str) -> None:
    union = typing.get_type_hints(config_module.LabConfig, include_extras=True)[section]
    members = _unwrap(union)[0]
    assert len(members) >= 2, f"lab.{section} should be one model per backend"
    names_per_member = [set(m.model_fields) for m in members]
    assert all("backend" in n for n in names_per_member)
