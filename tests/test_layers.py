"""The package's layers, read from its imports: web/ is the only code that knows Quart, llm/ the
only code that knows the openai SDK, nothing imports in a circle, and every third-party package
the code imports is declared in pyproject.toml (so that an install brings it, whatever else moves)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from tests.support.import_graph import Module, cycles, importers, modules

ROOT = Path(__file__).resolve().parent.parent
GRAPH = modules()
WEB_FRAMEWORK = {"quart", "werkzeug", "hypercorn"}
# An import name that differs from its distribution's name.
DISTRIBUTION = {"dotenv": "python-dotenv", "prometheus_client": "prometheus-client", "argon2": "argon2-cffi"}


def test_the_graph_is_read_from_the_source() -> None:
    assert {"chatapp.web.chat", "chatapp.llm.openai_server", "chatapp.storage"} <= set(GRAPH)
    assert "chatapp.storage" in GRAPH["chatapp.web.chat"].imports
    assert "quart" in GRAPH["chatapp.web.chat"].external
    assert "chatapp.llm.base" in GRAPH["chatapp.llm.demo"].imports


def test_nothing_imports_in_a_circle() -> None:
    assert cycles(GRAPH) == []


def test_a_circle_is_found() -> None:
    """The checker itself: two modules that import each other are a circle."""
    a, b = Module("a", Path("a.py"), imports={"b"}), Module("b", Path("b.py"), imports={"a"})
    assert cycles({"a": a, "b": b}) == [["a", "b", "a"]]


def test_only_web_knows_the_web_framework() -> None:
    """Quart (and the Werkzeug under it) stays at the edge; the command line starts Hypercorn."""
    for framework in ("quart", "werkzeug"):
        outside = {name for name in importers(GRAPH, framework) if not name.startswith("chatapp.web")}
        assert outside == set(), framework
    assert importers(GRAPH, "hypercorn") <= {"chatapp.__main__", "chatapp.logs"}


def test_only_llm_knows_the_model_sdk() -> None:
    for sdk in ("openai", "httpx2"):
        outside = {name for name in importers(GRAPH, sdk) if not name.startswith("chatapp.llm")}
        if sdk == "httpx2":  # also the HTTP client of OpenID sign-in, which talks to the provider
            outside -= {"chatapp.openid"}
        assert outside == set(), sdk


def test_the_domain_does_not_reach_up_into_the_web() -> None:
    """The modules between the two packages know neither the routes nor the request."""
    for name, module in GRAPH.items():
        if name.startswith("chatapp.llm"):
            assert {target for target in module.imports if not target.startswith("chatapp.llm")} == set(), name
        elif not name.startswith("chatapp.web") and name not in {"chatapp", "chatapp.__main__"}:
            assert {target for target in module.imports if target.startswith("chatapp.web")} == set(), name


def test_every_imported_package_is_declared() -> None:
    declared = {re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower()
                for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    imported = set().union(*(module.external for module in GRAPH.values())) - set(sys.stdlib_module_names)
    missing = {name for name in imported if DISTRIBUTION.get(name, name).lower() not in declared}
    assert missing == set()
