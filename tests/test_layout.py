"""The import rule of docs/development.md ("Layout"), checked over the source tree.

models <- services/selectors <- views: a model module imports none of our code, views reach
models only through services and selectors, and nothing but a urls module imports a view.
Models, services, selectors and the import's writes (transfer) import no serializer or view.
The pure llm modules (types, tokens, context, providers) import no model and nothing of
conversations. chatengine/ is shared plumbing: apart from its entry points it imports no app.
Imports inside functions count too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# chatengine plus every app of ours (a package with an apps.py): a new app is checked too.
APPS = ("chatengine", *sorted(path.parent.name for path in ROOT.glob("*/apps.py")))
PURE_LLM = ("llm.types", "llm.tokens", "llm.context", "llm.providers")
# Writes, reads and tables: they take and return plain values, never parse a request.
DATA_LAYER = ("models", "services", "selectors", "transfer")
# Known debt, named so it cannot grow: openai_api's service parses the Responses `input` itself
# (serializers.parse_items) and takes its dataclasses from there; the parse belongs in its view.
KNOWN_DEBT = {"openai_api.services -> openai_api.serializers"}
CHATENGINE_ENTRY_POINTS = ("chatengine.asgi", "chatengine.wsgi", "chatengine.urls")


def imported_modules(source: str, module: str) -> set[str]:
    """Every module `source` imports; `from a import b` yields both `a` and `a.b`."""
    package = module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def our_modules() -> dict[str, set[str]]:
    """Module name -> the modules of ours it imports, for every non-test, non-migration file."""
    modules = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "tests" in parts or "migrations" in parts:
                continue
            name = ".".join(parts).removesuffix(".__init__")
            imports = imported_modules(path.read_text(), name)
            modules[name] = {m for m in imports if m.split(".")[0] in APPS}
    return modules


def is_in(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def last_part(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def violations(modules: dict[str, set[str]]) -> list[str]:
    found = []
    for name, imports in sorted(modules.items()):
        for target in sorted(imports):
            kind = last_part(name)
            if kind == "models":
                found.append(f"{name} -> {target}: a models module imports none of our code")
            if kind == "views" and last_part(target) == "models":
                found.append(f"{name} -> {target}: views reach models through services/selectors")
            if (
                kind in DATA_LAYER
                and last_part(target) in ("serializers", "views")
                and f"{name} -> {target}" not in KNOWN_DEBT
            ):
                found.append(f"{name} -> {target}: the data layer knows no HTTP")
            if last_part(target) == "views" and kind != "urls":
                found.append(f"{name} -> {target}: only a urls module imports views")
            if any(is_in(name, p) for p in PURE_LLM) and (
                is_in(target, "conversations") or last_part(target) == "models"
            ):
                found.append(f"{name} -> {target}: the pure llm modules import no model")
            if (
                is_in(name, "chatengine")
                and name not in CHATENGINE_ENTRY_POINTS
                and not is_in(target, "chatengine")
            ):
                found.append(f"{name} -> {target}: chatengine/ imports no app")
    return found


def test_the_source_tree_keeps_the_import_rule():
    modules = our_modules()
    assert {"conversations.models", "conversations.views", "llm.tokens"} <= modules.keys()
    assert violations(modules) == []


@pytest.mark.parametrize(
    ("module", "source", "broken"),
    [
        ("conversations.models", "from conversations import services", "models module"),
        ("conversations.views", "from conversations.models import Message", "views reach"),
        ("conversations.admin", "from conversations import views", "only a urls"),
        ("llm.context", "def f():\n    from conversations.models import Message", "pure llm"),
        ("llm.providers.echo", "from conversations import selectors", "pure llm"),
        ("chatengine.middleware", "import llm.services", "chatengine/ imports no app"),
        ("conversations.cache", "from .views import x", "only a urls"),
        ("conversations.transfer", "from conversations.serializers import x", "knows no HTTP"),
        ("llm.services", "from llm import serializers", "knows no HTTP"),
    ],
)
def test_each_forbidden_import_is_reported(module, source, broken):
    imports = {m for m in imported_modules(source, module) if m.split(".")[0] in APPS}
    messages = violations({module: imports})
    assert messages
    assert all(broken in message for message in messages)


def test_allowed_imports_are_not_reported():
    allowed = {
        "conversations.views": "from conversations import selectors, services, serializers",
        "conversations.services": "from conversations.models import Message\nimport llm.tokens",
        "conversations.urls": "from conversations import views",
        "conversations.import_format": "from conversations import serializers, transfer",
        "llm.context": "from llm.tokens import REPLY_PRIMING_TOKENS",
        "chatengine.wsgi": "from llm.apps import warn_if_echo_provider",
    }
    modules = {
        name: {m for m in imported_modules(src, name) if m.split(".")[0] in APPS}
        for name, src in allowed.items()
    }
    assert violations(modules) == []


def test_make_test_collects_every_apps_tests():
    """pytest.ini's testpaths name every app with a tests/ package: a new app's tests run in
    `make test` (openai_api's and accounting's once did not)."""
    import configparser

    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    testpaths = set(ini["pytest"]["testpaths"].split())
    with_tests = {path.parent.parent.name for path in ROOT.glob("*/tests/__init__.py")}
    assert with_tests - testpaths == set()
