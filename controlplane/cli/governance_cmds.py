"""``keys``, ``request``, ``requests``, ``approve``, ``reject``, ``withdraw``, ``rollback``,
``retire`` and ``status``: promotion governance from the command line.

Sign-offs are signed here, on the approver's machine, with a private key that never leaves
it (``controlplane keys generate`` creates it under CONTROLPLANE_KEYS_DIR, mode 0600).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.cli.common import (
    DEFAULT_PROJECT_VALUE,
    JsonOpt,
    ProjectOpt,
    TokenOpt,
    UrlOpt,
    client,
    fail,
    handle_errors,
    out,
    print_json,
)
from controlplane.cli.registry_cmds import artifact_path
from controlplane.client import signoff
from controlplane.client.api import ApiClient
from controlplane.config import Settings
from controlplane.crypto.keys import key_id, load_private_key, public_key_b64, save_private_key

keys_app = typer.Typer(help="Your Ed25519 sign-off keys: generate, list, revoke.")

ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in the ledger).")]


def _split(ref: str, need_version: bool) -> tuple[str, str, int | None]:
    kind, sep, rest = ref.partition("/")
    name, _, version = rest.partition("@")
    if not sep or not name or (need_version and not version.isdigit()):
        fail(f"expected KIND/NAME{'@VERSION' if need_version else ''}, got {ref!r}")
    return kind, name, int(version) if version.isdigit() else None


def _artifact(project: str, kind: str, name: str) -> str:
    return "/v1/projects/{}/artifacts/{}/{}".format(
        *(quote(p, safe="") for p in (project, kind, name))
    )


@keys_app.command("generate")
@handle_errors
def keys_generate(
    name: Annotated[str, typer.Option(help="A label, e.g. the machine.")] = "default",
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate a key pair here, keep the private key locally, register the public key.

    The private key is written to CONTROLPLANE_KEYS_DIR (default
    $XDG_CONFIG_HOME/controlplane/keys), mode 0600, and never sent anywhere.
    """
    private = Ed25519PrivateKey.generate()
    with client(url, token) as api:
        data = api.post(
            "/v1/keys", {"public_key": public_key_b64(private.public_key()), "name": name}
        )
    path = Settings().keys_dir / f"{data['key_id']}.pem"
    save_private_key(private, path)
    data["private_key_file"] = str(path)
    if as_json:
        print_json(data)
        return
    out.print(f"registered key {data['key_id'][:16]} for {data['principal_id']}", markup=False)
    out.print(f"private key kept in {path} (never sent anywhere)", markup=False)


@keys_app.command("list")
@handle_errors
def keys_list(
    principal: Annotated[str | None, typer.Option(help="Only this principal's keys.")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List registered sign-off keys and whether this machine holds their private half."""
    with client(url, token) as api:
        page = api.get("/v1/keys", principal=principal)
    local = Settings().keys_dir
    for key in page["data"]:
        key["local"] = (local / f"{key['key_id']}.pem").exists()
    if as_json:
        print_json(page)
        return
    for key in page["data"]:
        state = "active" if key["active"] else f"revoked {key['revoked_at']}"
        here = "  (private key here)" if key["local"] else ""
        out.print(
            f"{key['key_id'][:16]}  {key['principal_id']:<14} {key['name']:<12} {state}{here}",
            markup=False,
        )


@keys_app.command("revoke")
@handle_errors
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id (or a unique prefix of it).")],
    reason: ReasonOpt,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key: later sign-offs with it are refused; earlier ones remain valid."""
    with client(url, token) as api:
        full = _resolve_key(api, key)
        data = api.post(f"/v1/keys/{full}/revoke", {"reason": reason})
    if as_json:
        print_json(data)
        return
    out.print(f"revoked key {full[:16]}", markup=False)


def _resolve_key(api: ApiClient, prefix: str) -> str:
    matches = [k["key_id"] for k in api.get("/v1/keys")["data"] if k["key_id"].startswith(prefix)]
    if len(matches) != 1:
        fail(f"{len(matches)} keys match {prefix!r}", 4 if not matches else 2)
    return matches[0]


@handle_errors
def request(
    ref: Annotated[str, typer.Argument(help="KIND/NAME@VERSION to promote.")],
    to: Annotated[str, typer.Option("--to", help="Target stage, e.g. staging.")],
    justification: Annotated[str, typer.Option("--justification", "-j", help="Why.")],
    traffic_share: Annotated[
        float | None, typer.Option(help="Canary traffic share in (0, 1].")
    ] = None,
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open a promotion request (refused at once, and recorded, if evidence is missing)."""
    kind, name, version = _split(ref, need_version=True)
    body = {
        "kind": kind,
        "name": name,
        "version": version,
        "target_stage": to,
        "justification": justification,
        "traffic_share": traffic_share,
    }
    with client(url, token) as api:
        data = api.post(f"/v1/projects/{quote(project, safe='')}/requests", body)
    if as_json:
        print_json(data)
        return
    _print_request(data)


def _print_request(r: dict[str, Any]) -> None:
    out.print(
        f"request {r['id']}: {r['ref']} {r['from_stage']} -> {r['target_stage']}  [{r['state']}]",
        markup=False,
    )
    quorum = r.get("quorum")
    if quorum:
        need = f"{quorum['approvals']}/{quorum['required']} approvals"
        if quorum["missing_roles"]:
            need += f", still needs a {' and a '.join(quorum['missing_roles'])}"
        out.print(
            f"  {need}; requested by {r['requester']}; expires {r['expires_at']}", markup=False
        )
    for s in r.get("signoffs", []):
        revoked = f"  (key revoked {s['key_revoked_at']})" if s.get("key_revoked_at") else ""
        out.print(
            f"  {s['decision']:<8} {s['signer']}  key {s['key_id'][:16]}  {s['comment']}{revoked}",
            markup=False,
        )
    if r.get("closed_reason"):
        out.print(f"  closed: {r['closed_reason']}", markup=False)


@handle_errors
def requests(
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    state: Annotated[str | None, typer.Option(help="open, approved, rejected, ...")] = "open",
    kind: Annotated[str | None, typer.Option(help="Only this artifact kind, e.g. policy.")] = None,
    name: Annotated[str | None, typer.Option(help="Only this artifact name.")] = None,
    all_states: Annotated[bool, typer.Option("--all", help="Every state.")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The request queue of a project (open requests by default)."""
    with client(url, token) as api:
        data = api.get(
            f"/v1/projects/{quote(project, safe='')}/requests",
            state=None if all_states else state,
            kind=kind,
            name=name,
        )
    if as_json:
        print_json(data)
        return
    for r in data["data"]:
        _print_request(r)
    if not data["data"]:
        out.print("no requests")


def _sign_off(
    request_id: int,
    decision: str,
    comment: str,
    key_file: Path | None,
    url: str | None,
    token: str | None,
) -> dict[str, Any]:
    with client(url, token) as api:
        me = api.get("/v1/whoami")["id"]
        private = _my_key(api, me, key_file)
        return signoff.sign_off(api, request_id, decision, comment, private, signer=me)


def _my_key(api: ApiClient, me: str, key_file: Path | None) -> Ed25519PrivateKey:
    if key_file is not None:
        return load_private_key(key_file)
    keys_dir = Settings().keys_dir
    for key in reversed(api.get("/v1/keys", principal=me)["data"]):
        path = keys_dir / f"{key['key_id']}.pem"
        if key["active"] and path.exists():
            private = load_private_key(path)
            if key_id(private.public_key()) == key["key_id"]:
                return private
    fail(f"no active sign-off key of {me} on this machine: run `controlplane keys generate`", 3)


@handle_errors
def approve(
    request_id: Annotated[int, typer.Argument(help="Request id.")],
    comment: Annotated[
        str, typer.Option("--comment", "-m", help="A comment, signed and recorded with it.")
    ] = "",
    key: Annotated[
        Path | None,
        typer.Option(help="Private key file to sign with (default: your key on this machine)."),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a request with your signature; at quorum the promotion happens at once."""
    data = _sign_off(request_id, "approve", comment, key, url, token)
    if as_json:
        print_json(data)
        return
    _print_request(data)


@handle_errors
def reject(
    request_id: Annotated[int, typer.Argument(help="Request id.")],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (required).")],
    key: Annotated[Path | None, typer.Option(help="Private key file to sign with.")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a request with your signature; a rejection closes it."""
    data = _sign_off(request_id, "reject", comment, key, url, token)
    if as_json:
        print_json(data)
        return
    _print_request(data)


@handle_errors
def withdraw(
    request_id: Annotated[int, typer.Argument(help="Request id.")],
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why (recorded in the ledger).")
    ] = "withdrawn by the requester",
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw your own open request."""
    with client(url, token) as api:
        data = api.post(f"/v1/requests/{request_id}/withdraw", {"reason": reason})
    if as_json:
        print_json(data)
        return
    _print_request(data)


@handle_errors
def rollback(
    ref: Annotated[str, typer.Argument(help="KIND/NAME whose production version goes back.")],
    reason: ReasonOpt,
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put the previous production version back, now (an emergency action, ledgered)."""
    kind, name, _ = _split(ref, need_version=False)
    with client(url, token) as api:
        data = api.post(artifact_path(project, kind, name) + "/rollback", {"reason": reason})
    if as_json:
        print_json(data)
        return
    out.print(
        f"rolled back {kind}/{name}: production is version {data['to_version']} again "
        f"(version {data['from_version']} retired)",
        markup=False,
    )


@handle_errors
def retire(
    ref: Annotated[str, typer.Argument(help="KIND/NAME@VERSION to retire.")],
    reason: ReasonOpt,
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retire a model version (an emergency action, ledgered)."""
    kind, name, version = _split(ref, need_version=True)
    with client(url, token) as api:
        data = api.post(
            artifact_path(project, kind, name) + f"/versions/{version}/retire", {"reason": reason}
        )
    if as_json:
        print_json(data)
        return
    out.print(f"retired {data['ref']}", markup=False)


@handle_errors
def status(
    ref: Annotated[str, typer.Argument(help="KIND/NAME.")],
    at: Annotated[
        str | None, typer.Option(help="A past moment (RFC 3339, e.g. 2026-11-01T12:00:00Z).")
    ] = None,
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Which version was in each stage (now or --at a moment), who approved it under which
    rules, and which data and rubric it was trained on: from the ledger alone."""
    kind, name, _ = _split(ref, need_version=False)
    with client(url, token) as api:
        data = api.get(artifact_path(project, kind, name) + "/status", at=at)
    if as_json:
        print_json(data)
        return
    out.print(f"{kind}/{name} in project {project} at {data['at']}", markup=False)
    for stage, holders in data["stages"].items():
        for h in holders:
            line = f"  {stage:<11} {h['ref']}"
            if h.get("traffic_share") is not None:
                line += f" ({h['traffic_share']:.0%} traffic)"
            if h.get("since"):
                line += f"  since {h['since']}"
            if h.get("reason") and h["reason"] != "promoted":
                line += f"  ({h['reason']})"
            out.print(line, markup=False)
            if h.get("restored"):
                out.print(
                    f"      back without a new request; first put here by request "
                    f"{h['request_id']}",
                    markup=False,
                )
            for a in h.get("approvals", []):
                out.print(
                    f"      {a['decision']} by {a['signer']} (key {a['key_id'][:16]}"
                    + (f", revoked {a['key_revoked_at']}" if a.get("key_revoked_at") else "")
                    + f") under rules of seq {h.get('rules_seq')}",
                    markup=False,
                )
            if h.get("trained_on"):
                out.print(f"      lineage: {', '.join(h['trained_on'])}", markup=False)
