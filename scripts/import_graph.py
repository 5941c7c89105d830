"""Draw chatapp's import graph: `python scripts/import_graph.py` prints it as text, layer by layer,
`--mermaid` as a Mermaid flowchart (GitHub renders it in Markdown). Read from the source, nothing is
imported; tests/test_layers.py checks the same graph."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.import_graph import Module, cycles, importers, modules  # noqa: E402

LAYERS = [
    ("entry", lambda name: name in {"chatapp", "chatapp.__main__"}),
    ("web/ (the only Quart importer)", lambda name: name.startswith("chatapp.web")),
    ("llm/ (the only openai importer)", lambda name: name.startswith("chatapp.llm")),
    ("domain", lambda name: True),
]


def short(name: str) -> str:
    return name.removeprefix("chatapp.") if name != "chatapp" else "chatapp"


def layer_of(name: str) -> str:
    return next(title for title, belongs in LAYERS if belongs(name))


def as_text(graph: dict[str, Module]) -> str:
    lines = []
    for title, _ in LAYERS:
        lines.append(f"{title}:")
        for name in sorted(n for n in graph if layer_of(n) == title):
            targets = ", ".join(short(t) for t in sorted(graph[name].imports)) or "-"
            lines.append(f"  {short(name):24} -> {targets}")
    lines.append("")
    lines.append(f"circles: {len(cycles(graph))}")
    for package in ("quart", "werkzeug", "openai", "httpx2"):
        lines.append(f"imports {package}: {', '.join(short(n) for n in sorted(importers(graph, package)))}")
    return "\n".join(lines)


def as_mermaid(graph: dict[str, Module]) -> str:
    lines = ["flowchart LR"]
    for index, (title, _) in enumerate(LAYERS):
        lines.append(f'  subgraph L{index}["{title}"]')
        lines.extend(f'    {_node(n)}["{short(n)}"]' for n in sorted(graph) if layer_of(n) == title)
        lines.append("  end")
    for name in sorted(graph):
        lines.extend(f"  {_node(name)} --> {_node(target)}" for target in sorted(graph[name].imports))
    return "\n".join(lines)


def _node(name: str) -> str:
    return name.replace(".", "_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mermaid", action="store_true", help="a Mermaid flowchart instead of text")
    graph = modules()
    print(as_mermaid(graph) if parser.parse_args().mermaid else as_text(graph))


if __name__ == "__main__":
    main()
