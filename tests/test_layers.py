"""The layers keep their order (docs/architecture.md): a module imports only from its own layer
or the layers below, never a web framework below the web layer, and never our own modules inside
a function (the lazy import that hides a cycle). Read from the source with ``ast``: no import runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# source folder -> the package it installs as (pyproject.toml's package-dir)
FOLDERS = {"provider": "qr_oidc.provider", "grants": "qr_oidc.grants", "keys": "qr_oidc.keys"}

# lowest first; a module's layer is the longest prefix that names it
LAYERS = [
    ("base", ["qr_oidc.provider", "qr_oidc.provider.settings", "qr_oidc.provider.security",
              "qr_oidc.provider.seal", "qr_oidc.provider.audit"]),
    ("storage", ["qr_oidc.provider.storage"]),
    ("keys", ["qr_oidc.keys"]),
    ("grants", ["qr_oidc.grants"]),
    ("web", ["qr_oidc.provider.web"]),
    ("runtime", ["qr_oidc.provider.runtime"]),
]
WEB_FRAMEWORKS = ("flask", "werkzeug", "a2wsgi", "uvicorn", "gunicorn",
                  "authlib.integrations")
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}


def layer_of(module: str) -> str:
    best, length = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = name, len(prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS and the docs"
    return best


def modules():
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            yield name, path


def imports(path: Path, module: str):
    """(imported module, line, inside a function?) for each import of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nested = {id(node) for fn in ast.walk(tree)
              if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn) if node is not fn}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in nested
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno, id(node) in nested
            for alias in node.names:  # ``from qr_oidc.provider import audit`` imports a module
                yield f"{target}.{alias.name}", node.lineno, id(node) in nested


ALL = list(modules())


def test_every_module_has_a_layer():
    assert len(ALL) > 30
    for name, _ in ALL:
        layer_of(name)


@pytest.mark.parametrize("module, path", ALL, ids=[name for name, _ in ALL])
def test_no_import_reaches_up(module, path):
    mine = RANK[layer_of(module)]
    known = {name for name, _ in ALL}
    for target, line, _ in imports(path, module):
        packages = {n.rpartition(".")[0] for n in known}
        if target.startswith("qr_oidc.") and target in known | packages:
            assert RANK[layer_of(target)] <= mine, (
                f"{path.relative_to(ROOT)}:{line}: {layer_of(module)} imports {target} "
                f"({layer_of(target)}), a higher layer")
        if mine < RANK["web"]:
            assert not target.startswith(WEB_FRAMEWORKS), (
                f"{path.relative_to(ROOT)}:{line}: {layer_of(module)} imports {target}: "
                "no web framework below the web layer")


@pytest.mark.parametrize("module, path", ALL, ids=[name for name, _ in ALL])
def test_no_lazy_import_of_our_own_modules(module, path):
    for target, line, inside in imports(path, module):
        assert not (inside and target.startswith("qr_oidc")), (
            f"{path.relative_to(ROOT)}:{line}: {target} imported inside a function")


def test_the_checks_would_catch_a_violation(tmp_path):
    """The rules above fail on what they forbid (a test that could not fail proves nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from flask import g\nfrom qr_oidc.provider.web import app\n"
                   "def f():\n    from qr_oidc.grants import tickets\n")
    found = list(imports(bad, "qr_oidc.provider.storage.bad"))
    assert ("flask", 1, False) in found
    web, storage = layer_of("qr_oidc.provider.web.app"), layer_of("qr_oidc.provider.storage.bad")
    assert RANK[web] > RANK[storage]
    assert ("qr_oidc.grants", 4, True) in found
