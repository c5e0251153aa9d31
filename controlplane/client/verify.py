"""Trust-nothing verification of a server or of an exported audit bundle.

Against a server: download the signing keys, checkpoints and every entry, recompute every hash
and the Merkle root, check the signatures, and check consistency with the checkpoint verified
last time (kept in a local state file), so that a server that later rewrites or truncates
history fails. A bundle verifies the same way with no server and no database. Both see a
sample of the signed checkpoints and check the links (``prev`` lines) between neighbours in it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from controlplane.client.api import ApiClient
from controlplane.contracts.audit import ContractAuditor
from controlplane.governance.audit import SignoffAuditor
from controlplane.ledger import merkle
from controlplane.ledger.checkpoint import Checkpoint, NoteVerifier, split_note
from controlplane.ledger.entry import Entry
from controlplane.ledger.errors import ChainError, LedgerError, SignatureError
from controlplane.ledger.verify import (
    KeyHistory,
    VerificationReport,
    checkpoint_signers,
    verify_ledger,
)

BUNDLE_FORMAT = "controlplane-audit-bundle/v1"
Progress = Callable[[int], None]


@dataclass
class Pinned:
    """The last checkpoint this client verified for one ledger origin."""

    size: int
    root_hash: str
    note: str
    verifiers: list[str]


class ProofSource(Protocol):
    """Where an extra check gets a consistency proof (the server's API)."""

    def consistency(self, first: int, second: int) -> dict[str, Any]: ...


class ExtraCheck(Protocol):
    """A check that runs alongside verification (for example against a witness directory,
    :class:`controlplane.ops.witness.WitnessCheck`): it sees every entry as it is verified,
    then finishes with the trusted keys before anything is pinned, so a failure of it keeps
    the pin where it was."""

    def observe(self, entry: Mapping[str, Any], report: VerificationReport) -> None: ...

    def finish(
        self,
        report: VerificationReport,
        origin: str,
        verifiers: Sequence[NoteVerifier],
        proofs: ProofSource | None = None,
    ) -> None: ...


class _ServerProofs:
    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        proof: dict[str, Any] = self.client.get(
            "/v1/ledger/proofs/consistency", first=first, second=second
        )
        return proof


class PinStore(Protocol):
    """Where a client keeps the last checkpoint it verified, per ledger origin."""

    def get(self, origin: str) -> Pinned | None: ...

    def put(self, origin: str, pinned: Pinned) -> None: ...


class MemoryPins:
    """Pins held in memory: a dashboard session pins what it verified for as long as it lives,
    so a server that rewrites history between two checks in one session still fails."""

    def __init__(self) -> None:
        self._pins: dict[str, Pinned] = {}

    def get(self, origin: str) -> Pinned | None:
        return self._pins.get(origin)

    def put(self, origin: str, pinned: Pinned) -> None:
        self._pins[origin] = pinned


class StateFile:
    """JSON file: origin -> last verified checkpoint and the keys trusted then."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except ValueError as exc:
            raise ValueError(f"state file {self.path} is corrupt: {exc}") from None
        return data if isinstance(data, dict) else {}

    def get(self, origin: str) -> Pinned | None:
        entry = self._load().get(origin)
        if not isinstance(entry, dict):
            return None
        return Pinned(entry["size"], entry["root_hash"], entry["note"], entry["verifiers"])

    def put(self, origin: str, pinned: Pinned) -> None:
        data = self._load()
        data[origin] = pinned.__dict__
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(self.path)


def _verifiers(texts: Iterable[str], report: VerificationReport) -> list[NoteVerifier]:
    out = []
    for text in texts:
        try:
            out.append(NoteVerifier.parse(text))
        except LedgerError as exc:
            report.fail(f"signing key {text!r} is malformed: {exc}")
    return out


def _counted(entries: Iterable[dict[str, Any]], progress: Progress | None) -> Iterator[dict]:
    for count, entry in enumerate(entries, start=1):
        if progress is not None and count % 1000 == 0:
            progress(count)
        yield entry


def verify_server(
    client: ApiClient,
    state: PinStore | None,
    progress: Progress | None = None,
    checks: Sequence[ExtraCheck] = (),
) -> VerificationReport:
    """Verify everything the server serves; update ``state`` only when it all verifies
    (``checks`` included)."""
    keys = client.get("/v1/ledger/keys")
    origin = keys["origin"]
    latest = client.get("/v1/ledger/checkpoint")
    sampled = client.get("/v1/ledger/checkpoints", sample=1000)["data"]
    notes = list(dict.fromkeys([c["note"] for c in sampled] + [latest["note"]]))
    pinned = state.get(origin) if state else None

    seed = VerificationReport()
    verifiers = _verifiers([k["verifier"] for k in keys["data"]], seed)
    if pinned is not None:
        served = {str(v) for v in verifiers}
        missing = set(pinned.verifiers) - served
        if missing:
            seed.fail(
                "the server no longer lists a signing key trusted at the last verification: "
                + ", ".join(sorted(missing))
            )
        verifiers += [v for v in _verifiers(pinned.verifiers, seed) if str(v) not in served]
    size = int(latest["tree_size"])
    pinned_roots = {}
    if pinned is not None:
        pinned_roots[pinned.size] = bytes.fromhex(pinned.root_hash)
    auditor, contracts = SignoffAuditor(), ContractAuditor()
    report = verify_ledger(
        _counted(client.entries(size), progress),
        notes,
        verifiers,
        origin,
        pinned_roots,
        observers=[auditor, contracts, *(check.observe for check in checks)],
    )
    report.signoffs_verified = auditor.checked
    report.contracts_verified = contracts.checked
    report.problems[:0] = seed.problems
    if report.first_bad_seq is None and seed.first_bad_seq is not None:
        report.first_bad_seq = seed.first_bad_seq
    # a consistency proof to an altered size or root would only fail less clearly
    if _check_served_checkpoint(latest, report) and pinned is not None:
        _check_consistency(client, pinned, latest, report)
    if report.ok and report.size != size:
        report.fail(f"the checkpoint covers {size} entries but {report.size} were served")
    for check in checks:
        check.finish(report, origin, verifiers, _ServerProofs(client))
    if report.ok and state is not None:
        state.put(
            origin,
            Pinned(size, latest["root_hash"], latest["note"], [str(v) for v in verifiers]),
        )
    return report


def _check_served_checkpoint(latest: dict[str, Any], report: VerificationReport) -> bool:
    """``tree_size`` and ``root_hash`` are served beside the signed note, unsigned, and the
    size decides how many entries are verified and the root is what gets pinned: both must be
    what the note says (its signature is checked with the other notes)."""
    try:
        signed = Checkpoint.parse_body(split_note(latest["note"])[0])
    except LedgerError:
        return True  # rejected, and named, by the signature check
    served = (int(latest["tree_size"]), str(latest["root_hash"]))
    if served != (signed.size, signed.root_hash.hex()):
        report.fail(
            f"the latest checkpoint is served as size {served[0]}, root {served[1]} but its "
            f"signed note says size {signed.size}, root {signed.root_hash.hex()}: the "
            "checkpoint row was altered"
        )
        return False
    return True


def _check_consistency(
    client: ApiClient, pinned: Pinned, latest: dict[str, Any], report: VerificationReport
) -> None:
    size = int(latest["tree_size"])
    if size < pinned.size:
        report.fail(
            f"the server's ledger has {size} entries but {pinned.size} were verified before: "
            "history was truncated or rolled back"
        )
        return
    if size == pinned.size:
        if latest["root_hash"] != pinned.root_hash:
            report.fail(f"the root at size {size} changed since the last verification")
        return
    try:
        proof = client.get("/v1/ledger/proofs/consistency", first=pinned.size, second=size)
        merkle.verify_consistency(
            pinned.size,
            size,
            bytes.fromhex(pinned.root_hash),
            bytes.fromhex(latest["root_hash"]),
            [bytes.fromhex(h) for h in proof["hashes"]],
        )
    except (LedgerError, ValueError, KeyError) as exc:
        report.fail(
            f"consistency proof from the pinned checkpoint (size {pinned.size}) to size "
            f"{size} failed: {exc}: history was rewritten"
        )


def trusted_keys(client: ApiClient) -> tuple[str, list[NoteVerifier]]:
    """The ledger's origin and its checkpoint signing keys, as the server lists them."""
    keys = client.get("/v1/ledger/keys")
    return keys["origin"], [NoteVerifier.parse(k["verifier"]) for k in keys["data"]]


def signed_checkpoint(client: ApiClient) -> tuple[dict[str, Any], Checkpoint]:
    """The latest checkpoint, served and opened: its signature checked, its origin ours."""
    keys = client.get("/v1/ledger/keys")
    origin, verifiers = keys["origin"], [NoteVerifier.parse(k["verifier"]) for k in keys["data"]]
    latest = client.get("/v1/ledger/checkpoint")
    checkpoint = Checkpoint.open(latest["note"], verifiers)
    if checkpoint.origin != origin:
        raise ValueError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    # signed by the key current at its size, not by a retired one (see KeyHistory)
    history = KeyHistory(
        (int(k["registered_seq"]), str(v)) for k, v in zip(keys["data"], verifiers, strict=True)
    )
    report = VerificationReport()
    history.check([(checkpoint.size, checkpoint_signers(latest["note"], verifiers))], report)
    if not report.ok:
        raise SignatureError(report.problems[0])
    return latest, checkpoint


def check_inclusion(
    client: ApiClient, seq: int, checkpoint: Checkpoint, tree_size: int | None = None
) -> dict[str, Any]:
    """Prove that entry ``seq``, as served, is in the tree of ``checkpoint`` (already opened).

    The entry's hash is recomputed from its fields, so what is shown is what is proven. With a
    ``tree_size`` other than the checkpoint's, the proof is checked against the served root of
    that size only (``against_signed_checkpoint`` is then False). Raises ``LedgerError``.
    """
    size = tree_size or checkpoint.size
    proof = client.get("/v1/ledger/proofs/inclusion", seq=seq, tree_size=size)
    entry = client.get(f"/v1/ledger/entries/{seq}")
    parsed = Entry.from_dict(entry)
    if parsed.seq != seq:
        raise ChainError(seq, f"the server sent entry {parsed.seq} instead")
    if not parsed.hash_is_valid():
        raise ChainError(seq, "entry_hash does not match its fields")
    leaf = merkle.leaf_hash(parsed.leaf_input)
    root = checkpoint.root_hash if size == checkpoint.size else bytes.fromhex(proof["root_hash"])
    merkle.verify_inclusion(seq, size, leaf, [bytes.fromhex(h) for h in proof["hashes"]], root)
    return {
        **proof,
        "entry": entry,
        "verified": True,
        "against_signed_checkpoint": size == checkpoint.size,
    }


def load_bundle(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read bundle {path}: {exc}") from None
    return load_bundle_data(text, str(path))


def load_bundle_data(text: str | bytes, source: str = "the bundle") -> dict[str, Any]:
    """Parse an audit bundle and check its shape (``source`` names it in errors)."""
    try:
        bundle = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"cannot read bundle {source}: {exc}") from None
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{source} is not a {BUNDLE_FORMAT} bundle")
    for key in ("origin", "keys", "checkpoints", "entries"):
        if key not in bundle:
            raise ValueError(f"bundle {source} has no {key!r}")
    return bundle


def verify_bundle(
    bundle: dict[str, Any],
    trusted_keys: list[str] | None = None,
    checks: Sequence[ExtraCheck] = (),
) -> VerificationReport:
    """Verify an audit bundle offline. ``trusted_keys`` (note verifier keys) override the
    bundle's own keys, which otherwise are trusted as shipped.

    The bundle carries a sample of the checkpoints (all of them for a small ledger), so their
    ``prev`` links are checked between neighbours that are both in it (and a bundled
    checkpoint that a link skips is off the chain); a link naming one left out is no fault.
    So a bundle proves its entries against its signed checkpoints and that the bundled
    checkpoints are one chain, not that the server still holds every checkpoint: that is
    ``verify --database``, which walks them all."""
    seed = VerificationReport()
    verifiers = _verifiers(trusted_keys or bundle["keys"], seed)
    auditor, contracts = SignoffAuditor(), ContractAuditor()
    report = verify_ledger(
        bundle["entries"],
        bundle["checkpoints"],
        verifiers,
        bundle["origin"],
        observers=[auditor, contracts, *(check.observe for check in checks)],
    )
    report.signoffs_verified = auditor.checked
    report.contracts_verified = contracts.checked
    report.problems[:0] = seed.problems
    if not bundle["checkpoints"]:
        report.fail("the bundle has no signed checkpoint")
    else:
        try:
            last = Checkpoint.open(bundle["checkpoints"][-1], verifiers)
            if last.size != report.size:
                report.fail(
                    f"the bundle's latest checkpoint covers {last.size} entries but it holds "
                    f"{report.size}"
                )
        except LedgerError as exc:
            report.fail(f"latest checkpoint rejected: {exc}")
    for check in checks:
        check.finish(report, bundle["origin"], verifiers)
    return report
