"""``log``, ``proof``, ``checkpoint``, ``export`` and ``verify``: the ledger, trusted by no one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn

from controlplane.cli.common import (
    EXIT_VERIFY_FAILED,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    client,
    err,
    handle_errors,
    out,
    print_json,
)
from controlplane.client.verify import (
    ExtraCheck,
    StateFile,
    check_inclusion,
    load_bundle,
    signed_checkpoint,
    verify_bundle,
    verify_server,
)
from controlplane.config import Settings
from controlplane.contracts.audit import ContractAuditor
from controlplane.governance.audit import SignoffAuditor
from controlplane.ledger import merkle
from controlplane.ledger.verify import VerificationReport

proof_app = typer.Typer(help="Fetch a Merkle proof and check it against a signed checkpoint.")


@handle_errors
def log(
    start: Annotated[int, typer.Option(min=0, help="First seq.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=5000, help="At most this many entries.")] = 50,
    actor: Annotated[str | None, typer.Option(help="Only entries by this principal.")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. artifact.version_registered")] = None,
    kind: Annotated[str | None, typer.Option(help="Subject kind, e.g. dataset.")] = None,
    name: Annotated[str | None, typer.Option(help="Subject name.")] = None,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only entries about this project.")
    ] = None,
    tail: Annotated[bool, typer.Option(help="Show the last LIMIT entries.")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List ledger entries (who did what, when, to what)."""
    with client(url, token) as api:
        if tail:
            size = api.get("/v1/ledger/checkpoint")["tree_size"]
            start = max(0, size - limit)
        data = api.get(
            "/v1/ledger/entries",
            start=start,
            limit=limit,
            actor=actor,
            action=action,
            kind=kind,
            name=name,
            project=project,
        )
    if as_json:
        print_json(data)
        return
    for e in data["data"]:
        subject = e["subject"]
        label = "/".join(str(subject[k]) for k in ("kind", "name") if k in subject)
        if "version" in subject:
            label += f"@{subject['version']}"
        if subject.get("project"):
            label = f"{subject['project']}:{label}"
        out.print(
            f"{e['seq']:>6}  {e['timestamp']}  {e['entry_hash'][:12]}  {e['actor']:<12} "
            f"{e['action']:<28} {label}",
            markup=False,
        )
    if data.get("next_start") is not None:
        out.print(f"more: --start {data['next_start']}")


@handle_errors
def checkpoint(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Show the latest signed checkpoint after checking its signature."""
    with client(url, token) as api:
        latest, parsed = signed_checkpoint(api)
    if as_json:
        print_json({**latest, "signature_verified": True})
        return
    out.print(latest["note"], end="", markup=False)
    out.print(f"signature verified; tree size {parsed.size}, root {parsed.root_hash.hex()}")


@proof_app.command("inclusion")
@handle_errors
def proof_inclusion(
    seq: Annotated[int, typer.Argument(min=0, help="Entry seq.")],
    tree_size: Annotated[int | None, typer.Option(help="Default: latest checkpoint.")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Prove that entry SEQ is in the ledger, against the signed checkpoint."""
    with client(url, token) as api:
        _, signed = signed_checkpoint(api)
        proof = check_inclusion(api, seq, signed, tree_size)
    entry = proof.pop("entry")
    size = proof["tree_size"]
    if as_json:
        print_json(proof)
        return
    out.print(f"entry {seq} ({entry['action']}) is included in the tree of size {size}")
    out.print(f"  leaf  {proof['leaf_hash']}")
    for position, h in enumerate(proof["hashes"]):
        out.print(f"  [{position}]   {h}")
    out.print(f"  root  {proof['root_hash']}")
    if proof["against_signed_checkpoint"]:
        out.print("verified against the signed checkpoint")
    else:
        out.print("verified against the served root (not the latest signed checkpoint)")


@proof_app.command("consistency")
@handle_errors
def proof_consistency(
    first: Annotated[int, typer.Argument(min=1, help="Older tree size.")],
    second: Annotated[int | None, typer.Argument(help="Newer tree size (default: latest).")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Prove that the ledger of SECOND entries extends the ledger of FIRST entries."""
    with client(url, token) as api:
        _, signed = signed_checkpoint(api)
        size = second or signed.size
        proof = api.get("/v1/ledger/proofs/consistency", first=first, second=size)
    second_root = signed.root_hash if size == signed.size else bytes.fromhex(proof["second_root"])
    merkle.verify_consistency(
        first,
        size,
        bytes.fromhex(proof["first_root"]),
        second_root,
        [bytes.fromhex(h) for h in proof["hashes"]],
    )
    if as_json:
        print_json({**proof, "verified": True})
        return
    out.print(f"the ledger of {size} entries extends the ledger of {first} entries")
    out.print(f"  first root   {proof['first_root']}")
    out.print(f"  second root  {proof['second_root']}")
    out.print(f"  {len(proof['hashes'])} proof hashes verified")


@handle_errors
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="Bundle file to write.")] = Path(
        "controlplane-audit-bundle.json"
    ),
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download an audit bundle (entries, checkpoints, keys) that verifies offline."""
    tmp = output.with_name(output.name + ".part")
    try:
        with client(url, token) as api, tmp.open("wb") as handle, _progress() as bar:
            task = bar.add_task("downloading", total=None)
            for written in api.stream_to("/v1/ledger/export", handle):
                bar.update(task, completed=written)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    bundle = load_bundle(output)
    info = {
        "output": str(output),
        "entries": len(bundle["entries"]),
        "tree_size": bundle["tree_size"],
    }
    if as_json:
        print_json(info)
        return
    out.print(
        f"wrote {output}: {info['entries']} entries, {len(bundle['checkpoints'])} checkpoints"
    )
    out.print(f"check it anywhere with: controlplane verify --bundle {output}")


def _progress() -> Progress:
    """A transient bar on stderr, drawn only on a terminal: elsewhere rich cannot erase it and
    leaves a newline behind, so ``--json`` runs in scripts would not have an empty stderr."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@handle_errors
def verify(
    bundle: Annotated[
        Path | None, typer.Option(help="Verify an exported bundle offline (no server).")
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option(help="Trusted note verifier key for --bundle (default: the bundle's)."),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(help="Where the last verified checkpoint is kept.", show_default=False),
    ] = None,
    database: Annotated[
        bool,
        typer.Option(
            "--database",
            help="Operator check on the database itself (CONTROLPLANE_DATABASE_URL or the data "
            "directory): also Merkle nodes, index columns and a replay of the projections.",
        ),
    ] = False,
    witness: Annotated[
        Path | None,
        typer.Option(
            help="Also compare with the checkpoints witnessed in this directory "
            "(CONTROLPLANE_WITNESS_DIR of the server): a history that disagrees with one fails.",
            show_default=False,
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify the whole ledger client-side: every hash, the Merkle root, the signatures, and
    consistency with the checkpoint verified last time. Exit 1 if anything is wrong."""
    checks: list[ExtraCheck] = []
    summaries: list[Callable[[], dict[str, Any]]] = []
    if witness is not None:
        if database:
            raise typer.BadParameter(
                "--witness works with a server or --bundle", param_hint="--witness"
            )
        from controlplane.ops.witness import WitnessCheck

        witnessed = WitnessCheck(witness)
        checks.append(witnessed)
        summaries.append(witnessed.summary)
    if database:
        report, source = _verify_database()
    elif bundle is not None:
        report = verify_bundle(load_bundle(bundle), key, checks)
        source = str(bundle)
    else:
        state_file = StateFile(state or Settings().verify_state_file)
        with client(url, token) as api, _progress() as bar:
            task = bar.add_task("verifying entries", total=None)
            report = verify_server(api, state_file, lambda n: bar.update(task, completed=n), checks)
            source = api.url
    _report(report, source, as_json, [summary() for summary in summaries])


def _verify_database() -> tuple[VerificationReport, str]:
    from controlplane.core import ControlPlane
    from controlplane.store.integrity import check_database

    cp = ControlPlane(Settings())
    auditor, contracts = SignoffAuditor(), ContractAuditor()
    try:
        with _progress() as bar:
            task = bar.add_task("checking", total=None)
            report = check_database(
                cp.store,
                progress=lambda what, n: bar.update(task, description=what, completed=n),
                observers=[auditor, contracts],
            )
        report.signoffs_verified = auditor.checked
        report.contracts_verified = contracts.checked
        return report, cp.db.url.split("@")[-1]
    finally:
        cp.close()


def _report(
    report: VerificationReport,
    source: str,
    as_json: bool,
    witnesses: list[dict[str, Any]] | None = None,
) -> None:
    if as_json:
        extra = {"witness": witnesses[0]} if witnesses else {}
        print_json({"source": source, **report.to_dict(), **extra})
    elif report.ok:
        out.print(
            f"OK: {report.size} entries verified from {source}; root {report.root_hash}; "
            f"{report.checkpoints_verified} signed checkpoint(s) "
            f"({report.checkpoint_links_verified} link(s) to the previous one), "
            f"{report.signoffs_verified} sign-off signature(s) and "
            f"{report.contracts_verified} data contract(s) checked"
        )
        for seen in witnesses or []:
            out.print(
                f"witness {seen['directory']}: {seen['compared']} of "
                f"{seen['witnessed_checkpoints']} witnessed checkpoint(s) match the served history"
            )
    else:
        where = f" first bad seq {report.first_bad_seq}" if report.first_bad_seq is not None else ""
        err.print(f"FAILED:{where} ({source})", markup=False)
        for problem in report.problems[:20]:
            err.print(f"  {problem}", markup=False)
        if len(report.problems) > 20:
            err.print(f"  ... and {len(report.problems) - 20} more", markup=False)
    if not report.ok:
        raise typer.Exit(EXIT_VERIFY_FAILED)


__all__ = ["checkpoint", "export", "log", "proof_app", "verify"]
