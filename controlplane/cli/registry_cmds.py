"""``register``, ``show``, ``list`` and ``lineage``: the registry from the command line."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table
from rich.tree import Tree

from controlplane.cli.common import (
    DEFAULT_PROJECT_VALUE,
    JsonOpt,
    ProjectOpt,
    TokenOpt,
    UrlOpt,
    client,
    fail,
    handle_errors,
    key_values,
    out,
    print_json,
)
from controlplane.client.api import ApiError
from controlplane.registry.digests import digest_path
from controlplane.registry.refs import KINDS, RELATIONS


def artifact_path(project: str, kind: str, name: str) -> str:
    parts = (quote(part, safe="") for part in (project, kind, name))
    return "/v1/projects/{}/artifacts/{}/{}".format(*parts)


def _split_ref(ref: str) -> tuple[str, str, str]:
    """``kind/name@version`` or ``kind/name`` (latest)."""
    kind, sep, rest = ref.partition("/")
    if not sep or not rest:
        raise ValueError(f"expected KIND/NAME[@VERSION], got {ref!r}")
    name, _, version = rest.partition("@")
    return kind, name, version or "latest"


@handle_errors
def register(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(KINDS)}.")],
    name: Annotated[str, typer.Argument(help="Artifact name, e.g. helpfulness-prefs.")],
    path: Annotated[
        Path,
        typer.Argument(
            help="Dataset JSONL, rubric document, or model file/directory.", exists=True
        ),
    ],
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    uri: Annotated[
        str | None, typer.Option(help="Where the bytes live (default: file URI of PATH).")
    ] = None,
    meta: Annotated[
        list[str] | None, typer.Option(help="Metadata KEY=VALUE (repeatable; JSON values ok).")
    ] = None,
    metadata_file: Annotated[
        Path | None, typer.Option(help="JSON object file merged into the metadata.")
    ] = None,
    trained_on: Annotated[
        list[str] | None, typer.Option(metavar="KIND/NAME@VERSION", help="Data it was trained on.")
    ] = None,
    follows_rubric: Annotated[
        list[str] | None, typer.Option(metavar="KIND/NAME@VERSION", help="Its labelling rubric.")
    ] = None,
    initialized_from: Annotated[
        list[str] | None,
        typer.Option(metavar="KIND/NAME@VERSION", help="The model it started from."),
    ] = None,
    evaluated_on: Annotated[
        list[str] | None,
        typer.Option(metavar="KIND/NAME@VERSION", help="The model an evaluation judges."),
    ] = None,
    derived_from: Annotated[
        list[str] | None, typer.Option(metavar="KIND/NAME@VERSION", help="Any other source.")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a new immutable version of KIND/NAME from PATH, with its lineage.

    Datasets (JSONL lines with prompt, chosen, rejected, optional annotator and rubric) and
    rubrics are uploaded: the server validates them, computes statistics and pseudonymises
    annotators. Models are digested locally (a directory by its sorted manifest).
    """
    if kind not in KINDS:
        fail(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    lineage = []
    given = {
        "trained_on": trained_on,
        "follows_rubric": follows_rubric,
        "initialized_from": initialized_from,
        "evaluated_on": evaluated_on,
        "derived_from": derived_from,
    }
    for relation in RELATIONS:
        for ref in given[relation] or []:
            lineage.append({"relation": relation, "ref": ref})
    body: dict[str, Any] = {
        "metadata": key_values(meta, metadata_file, "--meta"),
        "lineage": lineage,
    }
    resolved = path.resolve()
    if kind in ("dataset", "rubric"):
        if resolved.is_dir():
            fail(f"a {kind} is registered from a file, not a directory")
        data = resolved.read_bytes()
        try:
            body["content"] = data.decode("utf-8")
        except UnicodeDecodeError:
            body["content"] = base64.b64encode(data).decode()
            body["content_encoding"] = "base64"
        body["filename"] = resolved.name
        body["uri"] = uri or resolved.as_uri()
    else:
        body["digest"] = digest_path(resolved)
        body["uri"] = uri or resolved.as_uri()
    with client(url, token) as api:
        try:
            version = api.post(artifact_path(project, kind, name) + "/versions", body)
        except ApiError as exc:
            if exc.status == 422 and kind in ("dataset", "rubric"):
                exc.detail = f"{path}: {exc.detail}"
            raise
    if as_json:
        print_json(version)
        return
    verb = "registered" if version.get("created", True) else "already registered as"
    out.print(f"{verb} {version['ref']}  {version['digest']}  (ledger seq {version['ledger_seq']})")
    for edge in version.get("lineage", []):
        out.print(f"  {edge['relation']} -> {edge['ref']}")
    stats = version.get("metadata", {}).get("stats")
    if stats:
        agreement = stats["agreement"]["pairwise_agreement"]
        out.print(
            f"  rows {stats['rows']}, annotators {stats['distinct_annotators']}, "
            f"agreement {agreement if agreement is not None else 'n/a'}"
        )


@handle_errors
def show(
    ref: Annotated[str, typer.Argument(help="KIND/NAME@VERSION, or KIND/NAME for the latest.")],
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one version: digest, URI, metadata, lineage and what uses it."""
    kind, name, version = _split_ref(ref)
    with client(url, token) as api:
        data = api.get(artifact_path(project, kind, name) + f"/versions/{quote(version)}")
        versions = api.get(artifact_path(project, kind, name))["versions"]
    if as_json:
        print_json(data)
        return
    out.print(f"[bold]{data['ref']}[/bold]  (project {data['project']})")
    out.print(f"  digest      {data['digest']}", markup=False)
    out.print(f"  uri         {data['uri']}", markup=False)
    out.print(f"  created     {data['created_at']} by {data['created_by']}", markup=False)
    out.print(f"  ledger seq  {data['ledger_seq']}")
    out.print(f"  versions    {', '.join(str(v['version']) for v in versions)}")
    for edge in data.get("lineage", []):
        out.print(f"  {edge['relation']} -> {edge['ref']}", markup=False)
    for edge in data.get("used_by", []):
        out.print(f"  used by {edge['ref']} ({edge['relation']})", markup=False)
    if data["metadata"]:
        out.print("  metadata", markup=False)
        out.print(json.dumps(data["metadata"], indent=2, ensure_ascii=False), markup=False)


@handle_errors
def list_(
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    search: Annotated[str | None, typer.Option("--search", "-q", help="Name contains.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List artifacts of a project with their latest version."""
    with client(url, token) as api:
        data = api.get(
            f"/v1/projects/{quote(project, safe='')}/artifacts", kind=kind, q=search, limit=limit
        )
    if as_json:
        print_json(data)
        return
    table = Table("artifact", "latest", "created by", "created at")
    for a in data["data"]:
        table.add_row(
            f"{a['kind']}/{a['name']}",
            str(a["latest_version"]),
            a["created_by"],
            str(a["created_at"]),
        )
    out.print(table)
    out.print(f"{data['count']} artifact(s) in project {project}")


@handle_errors
def lineage(
    ref: Annotated[str, typer.Argument(help="KIND/NAME@VERSION, or KIND/NAME for the latest.")],
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    direction: Annotated[str, typer.Option(help="ancestors, descendants or both.")] = "both",
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what a version came from (ancestors) and what was built from it (descendants)."""
    if direction not in ("ancestors", "descendants", "both"):
        fail("--direction must be ancestors, descendants or both")
    kind, name, version = _split_ref(ref)
    with client(url, token) as api:
        data = api.get(
            artifact_path(project, kind, name) + f"/versions/{quote(version)}/lineage",
            direction=direction,
        )
    if as_json:
        print_json(data)
        return
    parents: dict[str, list[tuple[str, str]]] = {}
    children: dict[str, list[tuple[str, str]]] = {}
    for edge in data["edges"]:
        parents.setdefault(edge["child"], []).append((edge["relation"], edge["parent"]))
        children.setdefault(edge["parent"], []).append((edge["relation"], edge["child"]))
    root = data["root"]
    if direction in ("ancestors", "both"):
        tree = Tree(f"[bold]{root}[/bold] came from")
        _grow(tree, root, parents, set())
        out.print(tree)
    if direction in ("descendants", "both"):
        tree = Tree(f"[bold]{root}[/bold] was used by")
        _grow(tree, root, children, set())
        out.print(tree)


def _grow(tree: Tree, node: str, links: dict[str, list[tuple[str, str]]], seen: set[str]) -> None:
    for relation, other in sorted(links.get(node, [])):
        branch = tree.add(f"{other}  [dim]({relation})[/dim]")
        if other not in seen:
            seen.add(other)
            _grow(branch, other, links, seen)
