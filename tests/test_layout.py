"""The layout's two promises: no import cycle among our packages, and nothing under testbed/ names a broker.

Import cycles: a static walk (``ast``) of every module of testbed/, brokers/ and stages/, counting the
imports at module level and inside functions alike (a function-level import that closes a cycle still
ties the two modules together). ``import a.b`` and ``from a.b import c`` are edges to the module
named (``a.b.c`` where that is a module, else ``a.b``). A module importing one of its own parent
packages is not an edge: Python has run the parent before any of its submodules, so that import cannot
close a cycle (``stages/vision/__init__.py`` making its stages lazily, the stages reading its constants).

Broker names: every broker of the registry, each of its implementations, the programs their recipes
start, and a few words only a broker's folder has business knowing (case-insensitive, whole words), must
not appear in any file under testbed/: what a broker is lives in brokers/<name>/.
"""
from __future__ import annotations

import ast
import os
import re

import brokers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("testbed", "brokers", "stages")
#: words of one broker that its folder knows and nothing else should
BROKER_WORDS = ("tansu", "epmd", "kraft", "jetstream", "amqp", "zmq", "pika", "librdkafka", "mnesia")


def modules() -> dict[str, str]:
    """dotted name -> path, for every module of our packages."""
    out = {}
    for pkg in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, pkg)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    out[".".join(rel)] = os.path.join(folder, f)
    return out


def imports(name: str, path: str, known: dict) -> list[tuple[str, int]]:
    """(module imported, line) for every import in the module, anywhere in it."""
    with open(path) as fh:
        tree = ast.parse(fh.read(), path)
    is_pkg = path.endswith("__init__.py")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                parts = parts if is_pkg else parts[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                out.append((t, node.lineno))
    return out


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: dict(imports(name, path, known)) for name, path in known.items()}


def cycles(g: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    g = graph()
    assert len(g) > 40 and "testbed.launchers.local" in g and "brokers.spec" in g, "the walk found our modules"
    found = cycles(g)
    detail = ["; ".join(f"{a} -> {b} (line {g[a][b]})" for a in comp for b in g[a] if b in comp) for comp in found]
    assert not found, "import cycles: " + " | ".join(detail)


def test_the_walk_sees_a_cycle():
    """The check itself: a made-up cycle through a function-level import is found."""
    g = {"a": {"b": 1}, "b": {"c": 3}, "c": {"a": 7}, "d": {"a": 1}}
    assert cycles(g) == [["a", "b", "c"]]


def broker_words() -> list[str]:
    words = set(BROKER_WORDS)
    for spec in brokers.specs():
        words.add(spec.name)
        for impl in spec.impls:
            if impl.name:
                words.add(impl.name)
            if impl.local is not None:
                for b in (impl.local.server, *impl.local.helpers):
                    words.add(os.path.basename(b.path))
    return sorted(words)


def test_nothing_under_testbed_names_a_broker():
    words = broker_words()
    assert {"redis", "kafka", "tansu", "redis-server"} <= set(words)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, words)) + r")(?![\w-])", re.IGNORECASE)
    found = []
    for folder, dirs, files in os.walk(os.path.join(ROOT, "testbed")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            path = os.path.join(folder, f)
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except (UnicodeDecodeError, OSError):
                continue
            for no, line in enumerate(text.splitlines(), 1):
                for m in pattern.finditer(line):
                    found.append(f"{os.path.relpath(path, ROOT)}:{no}: {m.group(0)}")
    assert not found, "broker names under testbed/ (they belong in brokers/<name>/): " + "; ".join(found[:20])


def test_every_command_line_uses_the_one_parser():
    """One ``OneLineParser`` (testbed/cli.py) for every ``python -m testbed.X``: no other module defines an
    argparse parser class, and every CLI module builds its parser from the shared one."""
    own, users = [], []
    for name, path in modules().items():
        with open(path) as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                    (isinstance(b, ast.Attribute) and b.attr == "ArgumentParser")
                    or (isinstance(b, ast.Name) and b.id == "ArgumentParser") for b in node.bases):
                own.append(f"{name}.{node.name}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr == "ArgumentParser":
                own.append(f"{name}: argparse.ArgumentParser(...) at line {node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "testbed.cli" and \
                    any(a.name == "OneLineParser" for a in node.names):
                users.append(name)
    assert own == ["testbed.cli.OneLineParser"], own
    clis = [n for n, p in modules().items() if n.count(".") == 1 and n.startswith("testbed.")
            and "build_parser" in open(p).read()]
    assert clis and all(n in users for n in clis), (clis, users)
