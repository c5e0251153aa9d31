"""Audit bundles narrowed to an artifact or a time range, and the human-readable report.

A bundle always holds the ledger from its first entry up to a signed checkpoint, because only
the whole prefix lets anyone recompute the hash chain and the Merkle root offline
(``controlplane verify --bundle``). Narrowing adds a ``focus`` section naming the entries that
matter; the verifier ignores it, a reader starts there.
"""

from __future__ import annotations

import json
from typing import Any

from controlplane import clock
from controlplane.client.api import ApiClient
from controlplane.client.verify import check_inclusion, load_bundle_data
from controlplane.ledger.checkpoint import Checkpoint, split_note
from controlplane.ledger.entry import format_timestamp
from controlplane.ledger.errors import LedgerError
from controlplane.ledger.verify import VerificationReport
from controlplane.registry.refs import VersionRef
from dashboard import data


def fetch_bundle(api: ApiClient) -> dict[str, Any]:
    """The server's audit export of the whole ledger (needs the ``export`` permission)."""
    return load_bundle_data(api.request("GET", "/v1/ledger/export").content, "the export")


def _size_of(note: str) -> int:
    return Checkpoint.parse_body(split_note(note)[0]).size


def cut(bundle: dict[str, Any], size: int, note: str) -> dict[str, Any]:
    """The bundle of the first ``size`` entries, ending at the signed checkpoint ``note``."""
    if _size_of(note) != size:
        raise ValueError(f"the checkpoint does not cover exactly {size} entries")
    if len(bundle["entries"]) < size:
        raise ValueError(f"the export holds {len(bundle['entries'])} entries, not {size}")
    notes = {n: _size_of(n) for n in bundle["checkpoints"]}
    kept = sorted((n for n, s in notes.items() if s < size), key=notes.__getitem__)
    return {
        **bundle,
        "tree_size": size,
        "checkpoints": [*kept, note],
        "entries": bundle["entries"][:size],
    }


def time_range_bundle(api: ApiClient, start: str, end: str) -> dict[str, Any]:
    """Entries stamped in ``[start, end]`` (RFC 3339), with the prefix that proves them and
    the first signed checkpoint at or after the range's last entry."""
    bundle = fetch_bundle(api)
    inside = [e["seq"] for e in bundle["entries"] if start <= e["timestamp"] <= end]
    if not inside:
        raise ValueError(f"no ledger entry between {start} and {end}")
    last = inside[-1]
    after = api.get("/v1/ledger/checkpoints", start=last + 1, limit=1)["data"]
    if not after:
        raise ValueError("no signed checkpoint covers the end of that range yet")
    narrowed = cut(bundle, int(after[0]["tree_size"]), after[0]["note"])
    narrowed["focus"] = {
        "from": start,
        "to": end,
        "first_seq": inside[0],
        "last_seq": last,
        "seqs": inside,
    }
    return narrowed


def artifact_bundle(api: ApiClient, project: str, ref: VersionRef) -> dict[str, Any]:
    """The whole ledger, focused on one version and every version in its lineage."""
    graph = data.lineage(api, project, ref, "both")
    refs = {n["ref"] for n in graph["nodes"]}
    bundle = fetch_bundle(api)
    seqs = [
        e["seq"]
        for e in bundle["entries"]
        if e["subject"].get("project") == project and _ref_of(e["subject"]) in refs
    ]
    bundle["focus"] = {
        "project": project,
        "ref": str(ref),
        "lineage": sorted(refs),
        "seqs": seqs,
    }
    return bundle


def _ref_of(subject: dict[str, Any]) -> str | None:
    if not {"kind", "name", "version"} <= set(subject):
        return None
    return f"{subject['kind']}/{subject['name']}@{subject['version']}"


def to_bytes(bundle: dict[str, Any]) -> bytes:
    return (json.dumps(bundle, ensure_ascii=False) + "\n").encode()


# -- the report --------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    return [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
        "",
    ]


def report(
    api: ApiClient,
    project: str,
    ref: VersionRef,
    checkpoint: Checkpoint,
    verification: VerificationReport | None = None,
    reader: str = "",
) -> str:
    """Markdown: the lineage, approvals, evaluations and contracts behind one version, and
    proofs that the entries saying so are in the signed ledger."""
    target = data.version(api, project, ref)
    graph = data.lineage(api, project, ref, "ancestors")
    ancestors = [n for n in graph["nodes"] if n["distance"] > 0]
    events = data.history(api, project, ref)
    lines = [
        f"# Audit report: {ref} (project {project})",
        "",
        f"Generated {format_timestamp(clock.now())} from {api.url}"
        + (f" for {reader}" if reader else "")
        + f". Ledger `{checkpoint.origin}`, signed checkpoint of {checkpoint.size} entries, "
        f"root `{checkpoint.root_hash.hex()}`.",
        "",
        "## The version",
        "",
        *_table(
            ["field", "value"],
            [
                ["stage", target["stage"]],
                ["digest", f"`{target['digest']}`"],
                ["uri", target["uri"]],
                ["created by", target["created_by"]],
                ["created at", target["created_at"]],
                ["registered in ledger entry", target["ledger_seq"]],
            ],
        ),
        "## Stage history",
        "",
        *_table(
            ["time", "stage", "by", "reason", "ledger seq"],
            [
                [s["time"], s["stage"], s["by"], s["reason"], s["seq"]]
                for s in data.stage_timeline(events)
            ],
        ),
        "## Approvals",
        "",
    ]
    lines += _approvals(api, events)
    lines += ["## Lineage (everything it was built from)", ""]
    if ancestors:
        lines += _table(
            ["kind", "version", "stage", "digest", "created by", "depth"],
            [
                [
                    n["kind"],
                    n["ref"],
                    n["stage"],
                    f"`{n['digest']}`",
                    n["created_by"],
                    n["distance"],
                ]
                for n in ancestors
            ],
        )
        lines += _table(
            ["child", "relation", "parent"],
            [[e["child"], e["relation"], e["parent"]] for e in graph["edges"]],
        )
    else:
        lines += ["No recorded ancestors.", ""]
    for node in ancestors:
        if node["kind"] not in ("dataset", "rubric"):
            continue
        ancestor = VersionRef.parse(node["ref"])
        lines += [f"### {node['ref']}", ""]
        full = data.version(api, project, ancestor)
        stats = (full.get("metadata") or {}).get("stats")
        if isinstance(stats, dict):
            lines += [
                "Statistics: "
                + ", ".join(f"{k} {v}" for k, v in stats.items() if not isinstance(v, dict)),
                "",
            ]
        lines += _approvals(api, data.history(api, project, ancestor))
        contracts = data.contracts_for(api, project, node["digest"])
        if contracts is None:
            lines += ["Data contracts: none recorded (this server keeps no contracts).", ""]
        elif not contracts:
            lines += ["Data contracts: **none covers this digest**.", ""]
        else:
            lines += _table(
                ["contract", "purpose", "owner", "state", "expires", "envelope digest"],
                [
                    [
                        c["id"],
                        c["purpose"],
                        c["owner"],
                        c["state"],
                        c["expires_at"],
                        f"`{c['envelope_digest']}`",
                    ]
                    for c in contracts
                ],
            )
    lines += ["## Evaluations", ""]
    evaluations = data.evaluations_of(api, project, target)
    if evaluations:
        lines += _table(
            ["evaluation", "mode", "metrics", "created at"],
            [
                [
                    e["ref"],
                    (e.get("metadata") or {}).get("mode", ""),
                    json.dumps((e.get("metadata") or {}).get("metrics", {}), sort_keys=True),
                    e["created_at"],
                ]
                for e in evaluations
            ],
        )
    else:
        lines += ["No evaluation is linked to this version.", ""]
    lines += ["## Is the record intact?", ""]
    if verification is not None:
        verdict = "**intact**" if verification.ok else "**FAILED**"
        lines += [
            f"Full client-side verification: {verdict}: {verification.size} entries, root "
            f"`{verification.root_hash}`, {verification.checkpoints_verified} signed "
            f"checkpoint(s), {verification.signoffs_verified} sign-off signature(s) checked.",
            "",
            *(f"- {p}" for p in verification.problems[:20]),
            "",
        ]
    proven = [
        target["ledger_seq"],
        *(e["seq"] for e in events if e["action"] != "artifact.version_registered"),
    ]
    rows = []
    for seq in dict.fromkeys(proven):
        if seq >= checkpoint.size:
            rows.append([seq, "", "after the checkpoint: not yet provable"])
            continue
        try:
            proof = check_inclusion(api, seq, checkpoint)
            rows.append(
                [seq, proof["entry"]["action"], f"included ({len(proof['hashes'])} hashes)"]
            )
        except LedgerError as exc:
            rows.append([seq, "", f"**NOT PROVEN**: {exc}"])
    lines += [
        f"Inclusion proofs of the entries above, checked against the signed checkpoint of "
        f"{checkpoint.size} entries:",
        "",
        *_table(["ledger seq", "action", "proof"], rows),
        "Re-check everything offline: download the audit bundle and run "
        "`controlplane verify --bundle <file>`.",
        "",
    ]
    return "\n".join(lines)


def _approvals(api: ApiClient, events: list[dict[str, Any]]) -> list[str]:
    signed = data.signatures(api, events)
    if not signed:
        return ["No sign-offs recorded.", ""]
    rows = [s.row() for s in signed]
    return _table(list(rows[0]), [list(r.values()) for r in rows])
