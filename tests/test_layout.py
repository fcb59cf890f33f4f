"""The code's layout rules (issue #26), checked by reading the source with ``ast``.

Over every module of ``pipeline/``, ``cmcl_model/`` and ``flows/``:

(a) no module imports another module's underscore (private) names;
(b) no import cycles among modules, counting imports inside functions (a cycle held together
    by a deferred import is still a cycle). A package's lazy face (``lazy_loader.attach`` in
    ``__init__.py``) imports nothing itself; ``from pkg import name`` counts as an import of the
    submodule that defines ``name``;
(c) no function (or method) over :data:`MAX_FUNCTION_LINES` lines, ``def`` to last line;
(d) no module over :data:`MAX_MODULE_LINES` lines.

Known exceptions are listed below, each with the reason. Most are modules that other parts of
issue #26 are splitting: remove an entry as soon as its module complies —
:func:`test_allowlists_hold_only_current_exceptions` fails on entries that no longer apply.
Imports under ``if TYPE_CHECKING:`` are ignored: they never run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "cmcl_model", "flows")
MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 700

# (c) functions over MAX_FUNCTION_LINES: "module:qualname" -> reason.
ALLOW_LONG_FUNCTIONS: dict[str, str] = {}

# (d) modules over MAX_MODULE_LINES: "module" -> reason.
ALLOW_LONG_MODULES: dict[str, str] = {}

# (a) underscore names imported across modules: ("importer", "imported module", "name") -> reason.
ALLOW_PRIVATE_IMPORTS: dict[tuple[str, str, str], str] = {}

# (b) import cycles: frozenset of the modules of one strongly connected component -> reason.
ALLOW_CYCLES: dict[frozenset[str], str] = {}


@dataclass
class Module:
    """One parsed module: its dotted name, file, line count, tree and what it imports."""

    name: str
    path: Path
    n_lines: int
    tree: ast.Module
    is_package: bool
    imports: list[tuple[str, str | None]] = field(default_factory=list)  # (module, name or None)


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _resolve(mod: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.name.split(".")
    base = base if mod.is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def modules() -> dict[str, Module]:
    """Every module of :data:`PACKAGES`, parsed, by dotted name."""
    out: dict[str, Module] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            name, is_package = _module_name(path)
            mod = Module(name, path, len(text.splitlines()), ast.parse(text, filename=str(path)), is_package)
            for node in _runtime_nodes(mod.tree):
                if isinstance(node, ast.Import):
                    mod.imports += [(a.name, None) for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    target = _resolve(mod, node)
                    mod.imports += [(target, a.name) for a in node.names]
            out[name] = mod
    return out


@cache
def _lazy_face(name: str) -> dict[str, str]:
    """name -> submodule for package ``name`` whose ``__init__`` calls ``lazy_loader.attach``."""
    mod = modules()[name]
    face: dict[str, str] = {}
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("lazy_loader.attach"):
            for kw in node.keywords:
                if kw.arg == "submod_attrs" and isinstance(kw.value, ast.Dict):
                    for key, names in zip(kw.value.keys, kw.value.values):
                        for n in ast.literal_eval(names):
                            face[n] = f"{mod.name}.{ast.literal_eval(key)}"
    return face


@cache
def _is_lazy(name: str) -> bool:
    mod = modules()[name]
    return mod.is_package and any(
        isinstance(n, ast.Call) and ast.unparse(n.func).endswith("lazy_loader.attach") for n in ast.walk(mod.tree)
    )


def _target(target: str, name: str | None) -> str | None:
    """The project module an import binds to (None outside the project)."""
    mods = modules()
    if name is not None and f"{target}.{name}" in mods:
        return f"{target}.{name}"
    if target in mods:
        face = _lazy_face(target) if _is_lazy(target) else {}
        return face.get(name, target) if name is not None else target
    return None


@cache
def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, at module level or inside functions; a lazy
    package face contributes no edges of its own."""
    graph: dict[str, set[str]] = {}
    for name, mod in modules().items():
        edges: set[str] = set()
        if not _is_lazy(name):
            for target, imported in mod.imports:
                t = _target(target, imported)
                if t is not None and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _cycle_path(graph: dict[str, set[str]], comp: list[str]) -> str:
    """One closed path through ``comp``, for the message (a -> b -> a)."""
    members, start = set(comp), comp[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(graph[path[-1]] & members)
        back = [n for n in nxt if n == start]
        if back and len(path) > 1:
            return " -> ".join(path + [start])
        fresh = [n for n in nxt if n not in seen]
        if not fresh:
            return " -> ".join(path + [nxt[0]])
        path.append(fresh[0])
        seen.add(fresh[0])


@cache
def private_imports() -> dict[tuple[str, str, str], str]:
    """(importer, imported module, name) -> 'file:line' for every underscore name imported from
    another project module."""
    out: dict[tuple[str, str, str], str] = {}
    for name, mod in modules().items():
        for node in _runtime_nodes(mod.tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            target = _resolve(mod, node)
            for a in node.names:
                private = a.name.startswith("_") and not a.name.startswith("__")
                owner = _target(target, a.name)
                if private and owner is not None and owner != name:
                    out[(name, owner, a.name)] = f"{mod.path.relative_to(ROOT)}:{node.lineno}"
    return out


@cache
def long_functions() -> dict[str, tuple[str, int]]:
    """'module:qualname' -> ('file:line', length) for every function over the limit."""
    out: dict[str, tuple[str, int]] = {}
    for name, mod in modules().items():
        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    qual = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        n = child.end_lineno - child.lineno + 1
                        if n > MAX_FUNCTION_LINES:
                            out[f"{name}:{qual}"] = (f"{mod.path.relative_to(ROOT)}:{child.lineno}", n)
                    visit(child, qual + ".")
                else:
                    visit(child, prefix)

        visit(mod.tree, "")
    return out


def long_modules() -> dict[str, tuple[str, int]]:
    """module -> (file, lines) for every module over the limit."""
    return {n: (str(m.path.relative_to(ROOT)), m.n_lines) for n, m in modules().items() if m.n_lines > MAX_MODULE_LINES}


def test_no_private_names_imported_across_modules():
    bad = {k: v for k, v in private_imports().items() if k not in ALLOW_PRIVATE_IMPORTS}
    assert not bad, "private names imported from another module (make them public or keep them beside their user):\n" + "\n".join(
        f"  {where}: {imp} imports {owner}.{n}" for (imp, owner, n), where in sorted(bad.items())
    )


def test_no_import_cycles():
    graph = import_graph()
    bad = [c for c in _cycles(graph) if frozenset(c) not in ALLOW_CYCLES]
    assert not bad, "import cycles (imports inside functions count):\n" + "\n".join(f"  {_cycle_path(graph, c)}" for c in bad)


def test_no_function_over_limit():
    bad = {k: v for k, v in long_functions().items() if k not in ALLOW_LONG_FUNCTIONS}
    assert not bad, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(
        f"  {where}: {qual.split(':')[1]} is {n} lines" for qual, (where, n) in sorted(bad.items())
    )


def test_no_module_over_limit():
    bad = {k: v for k, v in long_modules().items() if k not in ALLOW_LONG_MODULES}
    assert not bad, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(
        f"  {where} is {n} lines" for where, n in sorted(bad.values())
    )


def test_allowlists_hold_only_current_exceptions():
    """An allowlisted exception that no longer occurs is removed from its list, so the lists only shrink."""
    stale = [f"ALLOW_LONG_FUNCTIONS[{k!r}]" for k in ALLOW_LONG_FUNCTIONS if k not in long_functions()]
    stale += [f"ALLOW_LONG_MODULES[{k!r}]" for k in ALLOW_LONG_MODULES if k not in long_modules()]
    stale += [f"ALLOW_PRIVATE_IMPORTS[{k!r}]" for k in ALLOW_PRIVATE_IMPORTS if k not in private_imports()]
    cycles = {frozenset(c) for c in _cycles(import_graph())}
    stale += [f"ALLOW_CYCLES[{sorted(k)!r}]" for k in ALLOW_CYCLES if k not in cycles]
    assert not stale, "these exceptions no longer occur; delete them from tests/test_layout.py:\n  " + "\n  ".join(stale)


def test_checks_see_what_they_check():
    """The scanner finds the modules, the deferred imports and the lazy faces it relies on."""
    mods = modules()
    assert {"pipeline.store.paths", "cmcl_model.evaluation.run", "flows.cli"} <= set(mods)
    graph = import_graph()
    # a deferred (in-function) import is an edge; a lazy face resolves to the defining submodule
    assert "cmcl_model.deploy.export" in graph["cmcl_model.reports.finetune"]
    assert _target("cmcl_model.evaluation", "evaluate") == "cmcl_model.evaluation.run"
    assert graph["cmcl_model.evaluation"] == set()
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycle_path({"a": {"b"}, "b": {"a"}}, ["a", "b"]) == "a -> b -> a"
