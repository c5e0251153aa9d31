"""``contract create|sign|register|show|list|revoke|verify`` and ``annotator erase|resolve``.

A contract is written (``create``: a JSON statement with the digests the registry serves),
signed on the data owner's machine with their sign-off key (``sign``: the private key never
leaves it), then registered (``register``), where the server checks it again. ``verify``
re-checks a contract here, trusting the server for nothing but public keys and digests, or
with ``--public-key`` and no server at all.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controlplane import clock
from controlplane.cli.common import (
    DEFAULT_PROJECT_VALUE,
    EXIT_VERIFY_FAILED,
    JsonOpt,
    ProjectOpt,
    TokenOpt,
    UrlOpt,
    client,
    err,
    fail,
    handle_errors,
    out,
    print_json,
    read_json,
)
from controlplane.cli.registry_cmds import artifact_path
from controlplane.client.api import ApiClient, ApiError
from controlplane.config import Settings
from controlplane.contracts import statement as st
from controlplane.contracts.signatures import SignatureProblem, check_signature, open_envelope
from controlplane.crypto.keys import key_id, load_private_key, public_key_from_b64

contract_app = typer.Typer(
    help="Signed data contracts: create, sign, register, show, list, revoke, verify."
)
annotator_app = typer.Typer(
    help="Annotator identities: erasure on request; resolution where a contract allows it."
)

RETENTION_UNITS = {"d": "days", "m": "months", "y": "years"}


def _version_ref(text: str, default_kind: str) -> tuple[str, str, int]:
    """``[kind/]name@version``."""
    kind, sep, rest = text.partition("/")
    if not sep:
        kind, rest = default_kind, text
    name, _, version = rest.partition("@")
    if not name or not version.isdigit() or int(version) < 1:
        fail(f"expected {default_kind}/NAME@VERSION, got {text!r}")
    if kind != default_kind:
        fail(f"expected a {default_kind} version, got {text!r}")
    return kind, name, int(version)


def _subject(api: ApiClient, project: str, text: str, kind: str) -> tuple[st.Subject, str]:
    kind, name, version = _version_ref(text, kind)
    data = api.get(artifact_path(project, kind, name) + f"/versions/{version}")
    digest = str(data["digest"])
    return st.Subject(project, kind, name, version, digest.split(":", 1)[1]), str(data["stage"])


def _retention(text: str) -> tuple[int, str]:
    value, unit = text[:-1], text[-1:]
    if not value.isdigit() or unit not in RETENTION_UNITS:
        fail(f"--retention expects a number and d, m or y (e.g. 90d, 12m, 1y), got {text!r}")
    return int(value), RETENTION_UNITS[unit]


@contract_app.command("create")
@handle_errors
def create(
    dataset: Annotated[
        list[str],
        typer.Option("--dataset", "-d", metavar="[dataset/]NAME@VERSION", help="Covered data."),
    ],
    purpose: Annotated[str, typer.Option(help=f"One of {', '.join(st.PURPOSES)}.")],
    consumer: Annotated[
        list[str] | None,
        typer.Option("--consumer", "-c", help="Runner principal allowed to use the data."),
    ] = None,
    consumer_project: Annotated[
        list[str] | None, typer.Option(help="Project whose jobs may use the data.")
    ] = None,
    rubric: Annotated[
        str | None, typer.Option(metavar="[rubric/]NAME@VERSION", help="The labelling rubric.")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=36500, help="Valid for this many days.")] = 90,
    expires: Annotated[
        str | None,
        typer.Option(help="Expiry instead of --days (RFC 3339, e.g. 2027-01-31T00:00:00Z)."),
    ] = None,
    retention: Annotated[str, typer.Option(help="How long consumers may keep copies.")] = "90d",
    annotator_ids: Annotated[
        str, typer.Option(help="pseudonymised (as registered) or absent.")
    ] = "pseudonymised",
    resolver: Annotated[
        list[str] | None,
        typer.Option(help="Principal allowed to resolve annotator pseudonyms (default: nobody)."),
    ] = None,
    contract_id: Annotated[str | None, typer.Option("--id", help="Default: a new UUID.")] = None,
    name: Annotated[str | None, typer.Option(help="A human-readable name.")] = None,
    version: Annotated[str, typer.Option(help="Contract version.")] = "1.0.0",
    usage: Annotated[str | None, typer.Option(help="How the data may be used (free text).")] = None,
    limitations: Annotated[str | None, typer.Option(help="Limitations (free text).")] = None,
    terms: Annotated[str | None, typer.Option(help="Further terms (free text).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag.")] = None,
    owner: Annotated[str | None, typer.Option(help="Data owner (default: you).")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Default: <id>.contract.json.")
    ] = None,
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a contract statement for approved dataset (and rubric) versions, to sign next."""
    value, unit = _retention(retention)
    now = clock.now()
    with client(url, token) as api:
        me = owner or api.get("/v1/whoami")["id"]
        covered = [_subject(api, project, d, "dataset") for d in dataset]
        if rubric is not None:
            covered.append(_subject(api, project, rubric, "rubric"))
    for subject, stage in covered:
        if stage != "approved":
            err.print(
                f"warning: {subject.ref} is {stage}; registration needs it approved", markup=False
            )
    until = st.parse_time(expires, "--expires") if expires else now + timedelta(days=days)
    statement = st.build(
        contract_id=contract_id or str(uuid.uuid4()),
        project=project,
        owner=me,
        purpose=purpose,
        subjects=[s for s, _ in covered],
        consumers=consumer or [],
        consumer_projects=consumer_project or [],
        rubric=covered[-1][0].full_name if rubric is not None else None,
        annotator_ids=annotator_ids,
        identity_resolution="allowed" if resolver else "forbidden",
        resolvers=resolver or [],
        retention_value=value,
        retention_unit=unit,
        expires=until,
        created_at=now,
        version=version,
        name=name,
        usage=usage,
        limitations=limitations,
        terms=terms,
        tags=tag or [],
    )
    path = output or Path(f"{statement.id}.contract.json")
    path.write_text(json.dumps(statement.to_dict(), indent=2) + "\n")
    if as_json:
        print_json({"id": statement.id, "file": str(path), "statement": statement.to_dict()})
        return
    out.print(f"wrote contract {statement.id} to {path}; sign it with:", markup=False)
    out.print(f"  controlplane contract sign {path}", markup=False)


def _my_key(api: ApiClient, me: str) -> Ed25519PrivateKey:
    keys_dir = Settings().keys_dir
    for key in reversed(api.get("/v1/keys", principal=me)["data"]):
        path = keys_dir / f"{key['key_id']}.pem"
        if key["active"] and path.exists():
            private = load_private_key(path)
            if key_id(private.public_key()) == key["key_id"]:
                return private
    fail(f"no active sign-off key of {me} on this machine: run `controlplane keys generate`", 3)


@contract_app.command("sign")
@handle_errors
def sign(
    statement_file: Annotated[Path, typer.Argument(help="The statement written by create.")],
    key: Annotated[
        Path | None, typer.Option(help="Private key file (default: your key on this machine).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Default: <file>.dsse.json.")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign a contract statement here, with the data owner's private key (DSSE envelope)."""
    statement = st.validate(read_json(statement_file), now=clock.now())
    if key is not None:
        private = load_private_key(key)
    else:
        with client(url, token) as api:
            me = api.get("/v1/whoami")["id"]
            if me != statement.owner:
                fail(f"the contract's owner is {statement.owner}, but you are {me}", 3)
            private = _my_key(api, me)
    envelope = st.sign(statement, private)
    path = output or statement_file.with_name(
        statement_file.name.removesuffix(".json") + ".dsse.json"
    )
    path.write_text(json.dumps(envelope, indent=2) + "\n")
    if as_json:
        print_json({"id": statement.id, "file": str(path), "envelope": envelope})
        return
    out.print(
        f"signed contract {statement.id} with key {key_id(private.public_key())[:16]}: {path}",
        markup=False,
    )
    out.print(f"  controlplane contract register {path}", markup=False)


def _load_envelope(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a DSSE envelope")
    return data


@contract_app.command("register")
@handle_errors
def register(
    envelope_file: Annotated[Path, typer.Argument(help="The envelope written by sign.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a signed contract (the server re-checks the signature and the data)."""
    envelope = _load_envelope(envelope_file)
    project = open_envelope(envelope).statement.project
    with client(url, token) as api:
        data = api.post(f"/v1/projects/{quote(project, safe='')}/contracts", {"envelope": envelope})
    if as_json:
        print_json(data)
        return
    out.print(
        f"registered contract {data['id']} (seq {data['registered_seq']}), {data['state']} "
        f"until {data['expires_at']}",
        markup=False,
    )


def _print_contract(c: dict[str, Any], detail: bool) -> None:
    predicate = c["statement"]["predicate"]
    out.print(
        f"{c['id']}  [{c['state']}]  {c['purpose']}  owner {c['owner']}  expires {c['expires_at']}",
        markup=False,
    )
    if not detail:
        return
    for s in c["subjects"]:
        out.print(f"  covers   {s['name']}  {s['digest']}", markup=False)
    consumers = predicate["consumers"]
    out.print(
        f"  consumers: principals {', '.join(consumers.get('principals', [])) or '-'}; "
        f"projects {', '.join(consumers.get('projects', [])) or '-'}",
        markup=False,
    )
    pii = predicate["piiHandling"]
    resolvers = ", ".join(pii.get("resolvers", [])) or "nobody"
    out.print(
        f"  annotators {pii['annotatorIds']}; identity resolution {pii['identityResolution']} "
        f"(by {resolvers})",
        markup=False,
    )
    retention = predicate["retention"]
    out.print(f"  retention {retention['value']} {retention['unit']}", markup=False)
    if predicate.get("terms"):
        out.print(f"  terms: {predicate['terms']}", markup=False)
    out.print(
        f"  signed with key {c['key_id'][:16]}; registered at seq {c['registered_seq']}; "
        f"envelope {c['envelope_digest']}",
        markup=False,
    )
    if c.get("revoked_seq") is not None:
        out.print(f"  revoked at seq {c['revoked_seq']}: {c['revoked_reason']}", markup=False)


@contract_app.command("show")
@handle_errors
def show(
    contract_id: Annotated[str, typer.Argument(help="Contract id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A registered contract: what it covers, who may use it, for what, until when."""
    with client(url, token) as api:
        data = api.get(f"/v1/contracts/{quote(contract_id, safe='')}")
    if as_json:
        print_json(data)
        return
    _print_contract(data, detail=True)


@contract_app.command("list")
@handle_errors
def list_(
    state: Annotated[str | None, typer.Option(help="active, revoked or expired.")] = None,
    purpose: Annotated[str | None, typer.Option(help="Only this purpose.")] = None,
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The contracts of a project, newest first."""
    with client(url, token) as api:
        data = api.get(
            f"/v1/projects/{quote(project, safe='')}/contracts", state=state, purpose=purpose
        )
    if as_json:
        print_json(data)
        return
    for c in data["data"]:
        _print_contract(c, detail=False)
    if not data["data"]:
        out.print("no contracts")


@contract_app.command("revoke")
@handle_errors
def revoke(
    contract_id: Annotated[str, typer.Argument(help="Contract id.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in the ledger).")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a contract: from now on no job may use it."""
    with client(url, token) as api:
        data = api.post(f"/v1/contracts/{quote(contract_id, safe='')}/revoke", {"reason": reason})
    if as_json:
        print_json(data)
        return
    out.print(f"revoked contract {data['id']} (seq {data['revoked_seq']})", markup=False)


def _public_key(text: str) -> Ed25519PublicKey:
    try:
        return public_key_from_b64(text)
    except (ValueError, TypeError, binascii.Error):
        fail("--public-key must be a base64 raw Ed25519 public key")


@contract_app.command("verify")
@handle_errors
def verify(
    target: Annotated[str, typer.Argument(help="A contract id, or an envelope file.")],
    public_key: Annotated[
        str | None,
        typer.Option(help="The owner's base64 public key: verify a file with no server."),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-check a contract here: signature, statement, registration, revocation, expiry, and
    that each subject's digest is the registry's. Exit 1 if anything fails."""
    path = Path(target)
    problems: list[str] = []
    checks: list[str] = []
    envelope = _load_envelope(path) if path.is_file() else None
    if envelope is None and public_key is not None:
        fail(f"{target} is not a file; --public-key verifies an envelope file")
    if envelope is not None and public_key is not None:
        opened = open_envelope(envelope)
        checks.append("statement is a valid data contract")
        key = _public_key(public_key)
        _signature(opened, {key_id(key): key}, {}, checks, problems)
        if opened.statement.expires <= clock.now():
            problems.append(f"expired at {opened.statement.predicate['expires']}")
        _finish(opened.statement.id, checks, problems, as_json, "offline")
        return
    with client(url, token) as api:
        registered: dict[str, Any] | None = None
        if envelope is None:
            registered = api.get(f"/v1/contracts/{quote(target, safe='')}")
            envelope = registered["envelope"]
        opened = open_envelope(envelope)
        statement = opened.statement
        checks.append("statement is a valid data contract")
        keys: dict[str, Ed25519PublicKey] = {}
        revoked: dict[str, str] = {}
        for k in api.get("/v1/keys", principal=statement.owner)["data"]:
            keys[k["key_id"]] = public_key_from_b64(k["public_key"])
            if not k["active"]:
                revoked[k["key_id"]] = f"at seq {k['revoked_seq']}"
        _signature(opened, keys, revoked, checks, problems)
        if registered is None:
            try:
                registered = api.get(f"/v1/contracts/{quote(statement.id, safe='')}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                problems.append(f"contract {statement.id} is not registered")
        if registered is not None:
            same = base64.b64decode(registered["envelope"]["payload"]) == opened.payload
            if not same:
                problems.append(f"the envelope differs from the one registered as {statement.id}")
            elif registered["state"] == "revoked":
                problems.append(
                    f"revoked at seq {registered['revoked_seq']}: {registered['revoked_reason']}"
                )
            else:
                checks.append(f"registered at seq {registered['registered_seq']}, not revoked")
        if statement.expires <= clock.now():
            problems.append(f"expired at {statement.predicate['expires']}")
        for subject in statement.subjects:
            try:
                served = api.get(
                    artifact_path(subject.project, subject.kind, subject.name)
                    + f"/versions/{subject.version}"
                )
            except ApiError as exc:
                if exc.status != 404:
                    raise
                problems.append(f"{subject.ref} does not exist")
                continue
            if served["digest"] != subject.digest:
                problems.append(
                    f"{subject.ref} has digest {served['digest']}, not {subject.digest}"
                )
            elif served["stage"] != "approved":
                problems.append(f"{subject.ref} is {served['stage']}, not approved")
            else:
                checks.append(f"{subject.ref} is approved with digest {subject.digest}")
    _finish(statement.id, checks, problems, as_json, "server")


def _signature(
    opened: Any,
    keys: dict[str, Ed25519PublicKey],
    revoked: dict[str, str],
    checks: list[str],
    problems: list[str],
) -> None:
    try:
        check_signature(opened, keys, revoked)
    except SignatureProblem as exc:
        problems.append(exc.reason)
    else:
        checks.append(f"signed by {opened.statement.owner} with key {opened.key_id[:16]}")


def _finish(
    contract_id: str, checks: list[str], problems: list[str], as_json: bool, mode: str
) -> None:
    ok = not problems
    if as_json:
        print_json(
            {"id": contract_id, "ok": ok, "mode": mode, "checks": checks, "problems": problems}
        )
    elif ok:
        out.print(f"OK: contract {contract_id} verifies", markup=False)
        for line in checks:
            out.print(f"  {line}", markup=False)
    else:
        err.print(f"FAILED: contract {contract_id}", markup=False)
        for line in problems:
            err.print(f"  {line}", markup=False)
    if not ok:
        raise typer.Exit(EXIT_VERIFY_FAILED)


# -- annotators ---------------------------------------------------------------------------------


@annotator_app.command("erase")
@handle_errors
def erase(
    annotator: Annotated[
        str | None, typer.Option(help="The person's annotator id, as in the data.")
    ] = None,
    pseudonym: Annotated[str | None, typer.Option(help="Or their pseudonym.")] = None,
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Right to erasure: delete a person's pseudonym mapping (the ledger entry names no one)."""
    if (annotator is None) == (pseudonym is None):
        fail("give exactly one of --annotator or --pseudonym")
    body = {"annotator": annotator} if annotator is not None else {"pseudonym": pseudonym}
    with client(url, token) as api:
        data = api.post(f"/v1/projects/{quote(project, safe='')}/annotators/erasures", body)
    if as_json:
        print_json(data)
        return
    out.print(
        f"erased {data['mappings_erased']} mapping(s) in project {data['project']} "
        f"(seq {data['seq']})",
        markup=False,
    )


@annotator_app.command("resolve")
@handle_errors
def resolve(
    pseudonym: Annotated[str, typer.Argument(help="The pseudonym to resolve.")],
    contract: Annotated[str, typer.Option(help="The contract that allows it.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Who is behind a pseudonym, where a contract names you as a resolver (ledgered)."""
    with client(url, token) as api:
        data = api.post(
            f"/v1/contracts/{quote(contract, safe='')}/annotators/resolve",
            {"pseudonym": pseudonym},
        )
    if as_json:
        print_json(data)
        return
    out.print(f"{data['pseudonym']} is {data['annotator']} (seq {data['seq']})", markup=False)


__all__ = ["annotator_app", "contract_app"]
