"""
The package's layering, read from its source: every import of one cliproxyd
module by another must follow an arrow the design allows (README.rst,
"Architecture"). Imports under C{TYPE_CHECKING} and inside functions count
too: a type an upper layer owns is still a dependency on it.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "cliproxyd"

#: Modules anything may use: they import nothing of cliproxyd's but each other.
BASE = {"_version", "logging", "fileio", "jsontext", "modelnames", "service", "outbound", "proxies", "metrics",
        "collector"}

#: layer -> the layers it may import (besides itself and BASE).
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "config": set(),
    "formats": set(),
    "state": set(),
    "credentials": {"config"},
    "replies": {"formats", "credentials"},
    "executors": {"replies", "formats", "credentials", "config"},
    "conductor": {"executors", "replies", "state", "credentials", "formats", "config"},
    # A generation: what one config makes (below the surfaces that serve it).
    "assembly": {"config", "credentials", "executors", "conductor", "state", "replies", "formats"},
    "frontend": {"formats", "conductor", "replies", "config", "assembly"},
    "management": {"conductor", "state", "config", "credentials", "assembly"},
    "runtime": {"config", "credentials", "assembly", "state"},
    # The composition: every part wired (daemon), and the twistd plugin around it (tap).
    "daemon": {"assembly", "conductor", "config", "credentials", "frontend", "management", "replies", "runtime",
               "state", "workers"},
    "tap": {"*"},
    "demo": {"config", "testing", "frontend"},
    "__main__": {"credentials"},
    # Simulated upstreams and servers, for tests, benchmarks and --demo.
    "testing": {"formats", "credentials", "frontend"},
    # --workers N: the parent's supervisor and the workers' shared counters.
    "workers": set(),
    "__init__": set(),
}

#: Who may touch the global reactor: the composition root and the command-line entry points.
GLOBAL_REACTOR_OK = {"tap", "testing.upstream:main", "testing.authserver:main", "credentials.login:main"}

FORMAT_MODULES = {"openai_chat", "claude", "gemini", "responses"}


def layer_of(module: str) -> str:
    head = module.split(".")[0]
    return "base" if head in BASE else head


def modules() -> list[tuple[str, pathlib.Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def imports(path: pathlib.Path, module: str) -> list[tuple[int, str, str]]:
    """C{(line, imported cliproxyd module, enclosing function)} for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str, str]] = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name if not function else function)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append((child.lineno, alias.name, function))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".") if package else []
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(["cliproxyd", *anchor, *([base] if base else [])])
                for alias in child.names:
                    found.append((child.lineno, f"{base}.{alias.name}" if base else alias.name, function))
            visit(child, function)

    visit(tree, "")
    return found


def _internal(name: str) -> str | None:
    if name == "cliproxyd" or not name.startswith("cliproxyd."):
        return None
    return name[len("cliproxyd."):]


def _resolve(target: str) -> str:
    """C{formats.canonical.Request} names the module C{formats.canonical}: the longest module prefix."""
    known = {m for m, _ in modules()}
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return target


def violations() -> list[str]:
    bad = []
    for module, path in modules():
        if module == "":
            continue
        mine = layer_of(module)
        allowed = ALLOWED.get(mine)
        if allowed is None:
            bad.append(f"{module}: layer {mine!r} is not in the layering table")
            continue
        for line, name, function in imports(path, module):
            if name == "twisted.internet.reactor":
                where = f"{module}:{function}" if function else module
                if mine not in GLOBAL_REACTOR_OK and where not in GLOBAL_REACTOR_OK:
                    bad.append(f"{path.relative_to(ROOT.parent)}:{line}: the global reactor, in {where}")
                continue
            inner = _internal(name)
            if inner is None:
                continue
            target = _resolve(inner)
            theirs = layer_of(target)
            if theirs == mine or theirs == "base" or "*" in allowed or theirs in allowed:
                if mine == "formats" and theirs == "formats":
                    me, it = module.split(".")[-1], target.split(".")[-1]
                    if me in FORMAT_MODULES and it in FORMAT_MODULES and me != it:
                        bad.append(f"{path.relative_to(ROOT.parent)}:{line}: format {me} imports format {it}")
                continue
            bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {mine} -> {theirs} ({module} imports {target})")
    return bad


def test_every_import_follows_an_arrow_the_design_allows():
    assert violations() == []


def test_every_layer_of_the_package_is_in_the_table():
    layers = {layer_of(m) for m, _ in modules() if m}
    assert layers <= ALLOWED.keys()


@pytest.mark.parametrize("source, complaint", [
    ("from cliproxyd.conductor.policy import is_request_invalid\n", "executors -> conductor"),
    ("from cliproxyd.frontend import Frontend\n", "executors -> frontend"),
    ("def f():\n    from cliproxyd.management.api import ManagementAPI\n", "executors -> management"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cliproxyd.state import StateStore\n",
     "executors -> state"),
    ("from twisted.internet import reactor\n", "the global reactor"),
])
def test_a_forbidden_arrow_is_caught(tmp_path, monkeypatch, source, complaint):
    """The checker itself: an executor module that reached upward would fail the layering test."""
    fake = tmp_path / "cliproxyd"
    (fake / "executors").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "executors" / "__init__.py").write_text("")
    (fake / "executors" / "bad.py").write_text(source)
    for sub in ("conductor", "frontend", "management", "state"):
        (fake / sub).mkdir()
        (fake / sub / "__init__.py").write_text("")
    (fake / "conductor" / "policy.py").write_text("")
    (fake / "management" / "api.py").write_text("")
    monkeypatch.setitem(globals(), "ROOT", fake)
    found = violations()
    assert any(complaint in v for v in found), found


def test_periodic_work_is_done_by_named_guarded_jobs_only():
    """Every loop is a L{cliproxyd.service.Periodic}: named in the service tree, and one failure never ends it."""
    users = [m for m, path in modules() if m != "service" and "LoopingCall" in path.read_text()]
    assert users == []
