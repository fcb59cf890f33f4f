"""Fingerprints of the code that produced a result, for cache keys ("inputs + task source").

A stage's cache key combines a fingerprint of its inputs with :func:`code_fingerprint` of the
modules that compute it, so editing the logic of a stage redoes its work on the next run while
unrelated edits do not. The fingerprint is taken over each module's syntax tree with docstrings
removed (comments never reach the tree), so a comment or docstring fix leaves every result
current; and it covers every module of the project a stage can run, found by following its
imports (those inside functions too: ``pipeline.images.segmentation.classical`` imports ``pipeline.images.segmentation.cellpose``
only when cellpose is asked for).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
from functools import cache
from pathlib import Path

__all__ = ["code_fingerprint", "module_closure", "normalized_source"]

#: Top-level packages of cmcl whose modules a closure follows (besides the roots' own packages).
PROJECT_PACKAGES = ("pipeline", "cmcl_model", "flows")


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalized_source(source: str) -> str:
    """The syntax tree of ``source`` without docstrings, as text: what the code does, not how it
    is commented or laid out.

    Raises
    ------
    SyntaxError
        If ``source`` does not parse.
    """
    return _dump(ast.parse(source))


def _dump(tree: ast.Module) -> str:
    """:func:`normalized_source` of a parsed module (its docstrings are removed in place)."""
    return ast.dump(_strip_docstrings(tree), annotate_fields=False, include_attributes=False)


@cache
def _origin(name: str) -> Path | None:
    """The source file of module ``name``, found on disk without importing anything but, at
    most, locating its top-level package."""
    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    if not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        here = Path(base).joinpath(*rest[:-1])
        for cand in (here / f"{rest[-1]}.py", here / rest[-1] / "__init__.py"):
            if cand.is_file():
                return cand
    return None


def _source(name: str) -> str:
    path = _origin(name)
    if path is None:
        raise ModuleNotFoundError(f"no Python source for module {name!r}")
    return path.read_text(encoding="utf-8")


def _imported(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """Absolute names of the modules ``tree`` (module ``name``) imports, anywhere in its body."""
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import module`
    return out


def module_closure(*modules: str, packages: tuple[str, ...] = PROJECT_PACKAGES) -> list[str]:
    """The named modules plus every module of ``packages`` (and of the roots' own top-level
    packages) they import, directly or not; sorted.

    Raises
    ------
    ModuleNotFoundError
        If a named module has no Python source.
    """
    return sorted(_closure(modules, packages))


def _closure(modules: tuple[str, ...], packages: tuple[str, ...]) -> dict[str, tuple[str, list[str]]]:
    """Each module of the closure of ``modules`` (:func:`module_closure`) -> its :func:`_record`."""
    tops = set(packages) | {m.split(".")[0] for m in modules}
    records: dict[str, tuple[str, list[str]]] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in records:
            continue
        path = _origin(name)
        if path is None:
            if name in modules:
                raise ModuleNotFoundError(f"no Python source for module {name!r}")
            continue  # `from pkg import function`: not a module
        records[name] = _record(name, path)
        todo += [dep for dep in records[name][1] if dep.split(".")[0] in tops and dep not in records]
    _save_records()
    return records


@cache
def code_fingerprint(*modules: str) -> str:
    """SHA-256 over the docstring-free syntax trees (:func:`normalized_source`) of the named
    modules and of every project module they import (:func:`module_closure`).

    Each file's tree is parsed once per content: its digest and imports are kept by content
    hash in ``$CMCL_CACHE_DIR`` (default ``~/.cache/cmcl``) ``/code-fingerprints.json``, so a
    command does not parse the ~50 modules of a stage again (~0.3 s) while their files are
    unchanged. The cache can be deleted at any time; an unwritable one is not used.

    Raises
    ------
    ModuleNotFoundError
        If a named module has no Python source.
    """
    h = hashlib.sha256()
    for name, (digest, _) in sorted(_closure(modules, PROJECT_PACKAGES).items()):
        h.update(name.encode() + b"\0" + digest.encode() + b"\0")
    return h.hexdigest()


#: Entries the cache keeps at most (the newest; one per module version seen).
CACHE_ENTRIES = 4000
_new_records: dict[str, list] = {}


def _cache_path() -> Path | None:
    """The cache file, or None where no home folder can be found (then nothing is cached)."""
    try:
        root = os.environ.get("CMCL_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cmcl"
    except (RuntimeError, KeyError):  # Path.home() without $HOME or a passwd entry
        return None
    return Path(root) / "code-fingerprints.json"


@cache
def _cached_records() -> dict[str, list]:
    path = _cache_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8")) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _record(name: str, path: Path) -> tuple[str, list[str]]:
    """(SHA-256 of module ``name``'s :func:`normalized_source`, the modules it imports), looked
    up by the SHA-256 of its name and bytes, parsed only when not seen before."""
    source = _source(name).encode("utf-8")
    is_package = path.name == "__init__.py"
    key = hashlib.sha256(f"{name}\0{int(is_package)}\0".encode() + source).hexdigest()
    hit = _cached_records().get(key) or _new_records.get(key)
    if not (isinstance(hit, list) and len(hit) == 2):
        tree = ast.parse(source.decode("utf-8"))
        imports = sorted(_imported(tree, name, is_package))
        hit = _new_records[key] = [hashlib.sha256(_dump(tree).encode()).hexdigest(), imports]
    return hit[0], list(hit[1])


def _save_records() -> None:
    """Merge the records parsed in this process into the cache file (atomically; best effort)."""
    if not _new_records:
        return
    from pipeline.store.atomic import write_text_atomic

    path = _cache_path()
    if path is None:
        return
    try:
        current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        current = current if isinstance(current, dict) else {}
    except (OSError, ValueError):
        current = {}
    current.update(_new_records)
    keep = dict(list(current.items())[-CACHE_ENTRIES:])
    try:
        write_text_atomic(json.dumps(keep), path)
    except OSError:
        return  # a read-only home: parse again next time
    _cached_records().update(_new_records)
    _new_records.clear()
