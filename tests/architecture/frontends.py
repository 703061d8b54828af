"""Static reading of the front ends: every CLI command, HTTP route and console handler, and the
library calls each makes (directly or through helpers of its own front end).

A call is resolved through the handler's module globals and its function-level imports; a
call on a local object (``ledger.append(...)``) is kept as its attribute chain. Front-end
helpers are followed; library functions are not (what they do is the library's business).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

FRONT_ENDS = ("clinical_mlops.cli", "clinical_mlops.console", "clinical_mlops.http")


@dataclass(frozen=True)
class Handler:
    """One entry point of a front end: a CLI command, an HTTP route or a console route."""

    kind: str  # "cli" | "http" | "console"
    name: str  # "registry suspend", "POST /v1/overrides", ...
    function: Callable[..., Any]


@dataclass
class Calls:
    """What a handler calls: resolved library callables and unresolved attribute chains."""

    library: set[tuple[str, str]] = field(default_factory=set)  # (module, qualname)
    chains: set[tuple[str, ...]] = field(default_factory=set)  # ("cx", "ledger", "append")
    where: dict[Any, str] = field(default_factory=dict)  # call -> "module:function"


def _front_end(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.startswith(FRONT_ENDS)


def cli_handlers() -> Iterator[Handler]:
    """Every leaf command of ``clinical-mlops``, loading lazily registered groups."""
    import click
    import typer

    from clinical_mlops.cli import app

    # typer may carry its own copy of click: recognise commands and groups by their shape
    root = typer.main.get_command(app) if isinstance(app, typer.Typer) else app
    ctx = type(root).context_class(root) if hasattr(root, "context_class") else click.Context(root)

    def walk(cmd: Any, path: list[str]) -> Iterator[Handler]:
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, f"{' '.join([*path, name])} cannot be loaded"
                yield from walk(sub, [*path, name])
        elif cmd.callback is not None:
            fn = inspect.unwrap(cmd.callback)
            yield Handler("cli", " ".join(path), fn)

    yield from walk(root, [])


def _routes(router: Any, kind: str) -> Iterator[Handler]:
    for route in router.routes:
        endpoint = getattr(route, "endpoint", None)
        if endpoint is None or not _front_end(endpoint):
            continue
        methods = ",".join(sorted(getattr(route, "methods", None) or ["*"]))
        yield Handler(kind, f"{methods} {route.path}", endpoint)


def http_handlers() -> Iterator[Handler]:
    """Every route of the HTTP front end's routers (prediction API, CDS Hooks, probes)."""
    import pkgutil

    import clinical_mlops.http.routers as routers

    for info in pkgutil.iter_modules(routers.__path__):
        module = importlib.import_module(f"{routers.__name__}.{info.name}")
        router = getattr(module, "router", None)
        if router is not None:
            yield from _routes(router, "http")


def console_handlers() -> Iterator[Handler]:
    """Every route of the console's pages (forms and views)."""
    from clinical_mlops.console.pages import ROUTERS

    for router in ROUTERS:
        yield from _routes(router, "console")


def _local_imports(tree: ast.AST) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            module = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(module, alias.name, None)
                if value is None:
                    value = importlib.import_module(f"{node.module}.{alias.name}")
                found[alias.asname or alias.name] = value
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found[alias.asname or alias.name.split(".")[0]] = importlib.import_module(
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
    return found


def _chain(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def calls_of(
    fn: Callable[..., Any], calls: Calls | None = None, seen: set[Any] | None = None
) -> Calls:
    """Return every library call reachable from ``fn`` through its own front end's helpers."""
    calls = calls if calls is not None else Calls()
    seen = seen if seen is not None else set()
    fn = inspect.unwrap(fn)
    if fn in seen:
        return calls
    seen.add(fn)
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return calls
    tree = ast.parse(source)
    names = {**getattr(fn, "__globals__", {}), **_local_imports(tree)}
    here = f"{fn.__module__}:{fn.__qualname__}"
    for node in ast.walk(tree):
        # a call, or a function handed to something that calls it (Depends(x), map(x, ...))
        targets: list[ast.AST] = []
        if isinstance(node, ast.Call):
            targets.append(node.func)
            targets.extend(a for a in node.args if isinstance(a, ast.Name | ast.Attribute))
        for target in targets:
            chain = _chain(target)
            if not chain:
                continue
            obj: Any = names.get(chain[0], _MISSING)
            resolved = obj is not _MISSING
            rest = chain[1:]
            while resolved and rest and isinstance(obj, types.ModuleType | type):
                obj = getattr(obj, rest[0], _MISSING)
                resolved = obj is not _MISSING
                rest = rest[1:]
            if not resolved or (rest and not isinstance(obj, types.ModuleType | type)):
                if (len(chain) > 1 and chain[0] not in names) or rest:
                    key = tuple(chain)
                    calls.chains.add(key)
                    calls.where.setdefault(key, here)
                continue
            if isinstance(obj, types.ModuleType):
                continue
            if _front_end(obj) and callable(obj):
                if isinstance(obj, type):
                    continue
                calls_of(obj, calls, seen)
                continue
            module = getattr(obj, "__module__", None) or ""
            if module.startswith("clinical_mlops."):
                qual = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
                key2 = (module, qual)
                calls.library.add(key2)
                calls.where.setdefault(key2, here)
    return calls


_MISSING = object()


def all_handlers() -> list[Handler]:
    return [*cli_handlers(), *http_handlers(), *console_handlers()]
