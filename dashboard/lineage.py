"""The lineage graph of a version as Graphviz DOT (rendered in the browser by Streamlit).

Data flows left to right: rubric -> dataset -> reward model -> policy -> evaluation. Each edge
points from the parent to the child and carries the relation the child recorded.
"""

from __future__ import annotations

from typing import Any

KIND_COLOURS = {
    "rubric": "#f6e3b4",
    "dataset": "#cfe8cf",
    "reward_model": "#cddcf3",
    "policy": "#e3d3f1",
    "evaluation": "#f3d0cf",
}
STAGE_MARK = {"production": "★ ", "canary": "◐ ", "approved": "✓ ", "deprecated": "✗ "}


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(graph: dict[str, Any]) -> str:
    """DOT for a lineage answer of the API (``nodes`` with distance, ``edges``)."""
    lines = [
        "digraph lineage {",
        "  rankdir=LR;",
        '  graph [fontname="Helvetica", nodesep=0.3, ranksep=0.6, bgcolor="transparent"];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, color="#555555", fontcolor="#555555"];',
    ]
    for node in graph["nodes"]:
        ref = node["ref"]
        label = (
            f"{node['kind']}\n{node['name']}@{node['version']}\n"
            f"{STAGE_MARK.get(node['stage'], '')}{node['stage']}"
        )
        attrs = [
            f"label={_quote(label)}",
            f'fillcolor="{KIND_COLOURS.get(node["kind"], "#eeeeee")}"',
            f"tooltip={_quote(node['digest'])}",
        ]
        if node.get("distance") == 0 or ref == graph.get("root"):
            attrs += ["penwidth=3", 'color="#1f3a93"']
        lines.append(f"  {_quote(ref)} [{', '.join(attrs)}];")
    for edge in graph["edges"]:
        lines.append(
            f"  {_quote(edge['parent'])} -> {_quote(edge['child'])} "
            f"[label={_quote(edge['relation'])}];"
        )
    lines.append("}")
    return "\n".join(lines)


def ordered_nodes(graph: dict[str, Any]) -> list[dict[str, Any]]:
    """Nodes ancestors first (largest distance), then the root, then descendants."""
    return sorted(graph["nodes"], key=lambda n: (-n.get("distance", 0), n["ref"]))
