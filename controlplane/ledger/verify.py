"""Client-side verification of a ledger: the chain, the Merkle roots and signed checkpoints.

Streaming (O(log n) memory) so that a million entries verify without holding them. The report
names the first bad ``seq`` and why; it never stops at the first problem silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.ledger.checkpoint import Checkpoint, CheckpointLink, NoteVerifier, split_note
from controlplane.ledger.entry import GENESIS_HASH, Entry, compute_entry_hash
from controlplane.ledger.errors import LedgerError, MalformedError
from controlplane.ledger.merkle import CompactRange, leaf_hash

Observer = Callable[[Mapping[str, Any], "VerificationReport"], None]

#: Ledger actions that make a checkpoint signing key current (and retire the one before).
SERVER_KEY_ACTIONS = frozenset({"server_key.registered", "server_key.rotated"})

#: Appended by the server when, signing a checkpoint, it finds the one its transaction began at
#: missing (deleted from the database): the newest checkpoint's deletion is otherwise lost, as
#: the next checkpoint links to the one before it. Verification fails on it from then on.
CHECKPOINT_MISSING_ACTION = "ledger.checkpoint_missing"


def missing_checkpoints(entry: Mapping[str, Any], report: VerificationReport) -> None:
    """Observer: fail on every ``ledger.checkpoint_missing`` entry the server recorded."""
    if not isinstance(entry, Mapping) or entry.get("action") != CHECKPOINT_MISSING_ACTION:
        return  # a malformed entry is the chain verifier's to report
    payload = entry.get("payload")
    payload = payload if isinstance(payload, Mapping) else {}
    found = payload.get("previous_checkpoint_size")
    report.fail(
        f"the server found the signed checkpoint for size "
        f"{payload.get('expected_checkpoint_size')} deleted from its database (the previous one "
        f"it still had was for size {found if found is not None else 'none'})",
        entry.get("seq") if isinstance(entry.get("seq"), int) else None,
    )


@dataclass
class VerificationReport:
    """Outcome of a verification; ``ok`` is false as soon as any problem was found."""

    size: int = 0
    root_hash: str = ""
    last_entry_hash: str = GENESIS_HASH
    checkpoints_verified: int = 0
    checkpoint_links_verified: int = 0
    signoffs_verified: int = 0
    contracts_verified: int = 0
    first_bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, reason: str, seq: int | None = None) -> None:
        if seq is not None and self.first_bad_seq is None:
            self.first_bad_seq = seq
        self.problems.append(reason if seq is None else f"seq {seq}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root_hash": self.root_hash,
            "last_entry_hash": self.last_entry_hash,
            "checkpoints_verified": self.checkpoints_verified,
            "checkpoint_links_verified": self.checkpoint_links_verified,
            "signoffs_verified": self.signoffs_verified,
            "contracts_verified": self.contracts_verified,
            "first_bad_seq": self.first_bad_seq,
            "problems": self.problems,
        }


class ChainVerifier:
    """Feed entries in order; checks seq, prev_hash, entry_hash and roots at checkpoint sizes."""

    def __init__(self, expected_roots: Mapping[int, bytes] | None = None) -> None:
        self.report = VerificationReport()
        self._compact = CompactRange()
        self._prev = GENESIS_HASH
        self._expected_roots = dict(expected_roots or {})
        self._last_good_size = 0

    def feed(self, data: Mapping[str, Any]) -> None:
        seq = self._compact.size
        report = self.report
        try:
            if not isinstance(data, Mapping):
                raise MalformedError(f"expected an object, got {type(data).__name__}")
            entry = Entry.from_dict(data)
            recomputed = compute_entry_hash(entry.hashed_fields())
        except LedgerError as exc:
            report.fail(f"malformed entry: {exc}", seq)
            entry_hash = data.get("entry_hash") if isinstance(data, Mapping) else None
            self._advance(entry_hash if isinstance(entry_hash, str) else "0" * 64)
            return
        if entry.seq != seq:
            report.fail(f"expected seq {seq} but found seq {entry.seq} (gap or reordering)", seq)
        if entry.prev_hash != self._prev:
            report.fail(
                f"prev_hash {entry.prev_hash} does not link to the previous entry_hash "
                f"{self._prev}",
                seq,
            )
        if recomputed != entry.entry_hash:
            report.fail(
                f"entry_hash {entry.entry_hash} does not match its content (recomputed "
                f"{recomputed}): the entry was altered",
                seq,
            )
        self._advance(entry.entry_hash)

    def _advance(self, entry_hash: str) -> None:
        try:
            raw = bytes.fromhex(entry_hash)
        except ValueError:
            raw = b"\x00" * 32
        self._compact.append(leaf_hash(raw))
        self._prev = entry_hash
        size = self._compact.size
        expected = self._expected_roots.get(size)
        if expected is not None:
            actual = self._compact.root()
            if actual != expected:
                self.report.fail(
                    f"Merkle root over the first {size} entries is {actual.hex()} but the signed "
                    f"checkpoint says {expected.hex()}: an entry in seq {self._last_good_size}.."
                    f"{size - 1} was rewritten",
                    self._last_good_size if self.report.first_bad_seq is None else None,
                )
            else:
                self._last_good_size = size

    def finish(self) -> VerificationReport:
        report = self.report
        report.size = self._compact.size
        report.root_hash = self._compact.root().hex()
        report.last_entry_hash = self._prev
        missing = sorted(size for size in self._expected_roots if size > report.size)
        for size in missing:
            report.fail(
                f"a signed checkpoint covers {size} entries but only {report.size} were "
                "served: the ledger was truncated or rolled back"
            )
        return report


class LinkChain:
    """Checks the ``prev`` links between checkpoints fed in increasing size order.

    Each linked checkpoint must name the checkpoint just before it, by size and by the hash of
    its whole signed note; so, as with the entry chain, verifying the signature of the latest
    checkpoint protects every earlier one, and checking a link is one SHA-256. The chain starts
    at the first linked checkpoint (older ones predate links, and a ledger's first checkpoint
    has nothing to name). After it, a checkpoint without a link is either signed by the server
    (a replica of an earlier version, during a rolling upgrade: the chain starts again after
    it, ``restarts`` counts them) or a stripped one: ``signed`` tells which, as the walk over
    every row does not verify each signature.

    ``complete`` says every checkpoint is fed (the database check): a named size that was not
    fed is then missing. Otherwise (a sample: a bundle, the server's spread) only the links
    between neighbours that are both present can be checked, and a gap is not a fault. In
    both cases a link that skips a fed checkpoint shows that one is not on the chain.
    Problems go to ``report`` (and ``checkpoint_links_verified`` counts the links whose hash
    was compared); at most ``limit`` problems are named, the rest counted.
    """

    def __init__(
        self,
        report: VerificationReport,
        complete: bool,
        limit: int = 10,
        signed: Callable[[str], bool] = lambda _note: True,
    ) -> None:
        self.report = report
        self.complete = complete
        self.limit = limit
        self.signed = signed
        self.broken = 0
        self.restarts = 0
        self._previous: tuple[int, str] | None = None
        self._first_linked: int | None = None

    def feed(self, size: int, note: str, checkpoint: Checkpoint | None = None) -> None:
        """The stored note of the checkpoint for ``size`` (``checkpoint``: parsed already).

        A note that does not parse has no readable link; it is still what the next link's
        hash is compared with (its own row is named by whoever parses it)."""
        if checkpoint is None:
            try:
                checkpoint = Checkpoint.parse_body(split_note(note)[0])
            except LedgerError:
                checkpoint = None
        link = checkpoint.link if checkpoint is not None else None
        previous, self._previous = self._previous, (size, note)
        if checkpoint is None:
            return
        if link is None:
            if self._first_linked is not None and self.signed(note):
                self._first_linked = None  # signed without a link: an earlier version's
                self.restarts += 1
            elif self._first_linked is not None:
                self._fail(
                    f"checkpoint for size {size} has no link to its previous checkpoint, but "
                    f"every checkpoint from size {self._first_linked} on must: its link line "
                    "was stripped (and the note's signature does not verify)"
                )
            return
        if self._first_linked is None:
            self._first_linked = size
        self._check(size, link, previous)

    def _check(self, size: int, link: CheckpointLink, previous: tuple[int, str] | None) -> None:
        named = f"checkpoint for size {size} names previous checkpoint at size {link.size}"
        if previous is not None and link.size < previous[0]:
            self._fail(
                f"{named}, but there is a checkpoint at size {previous[0]} between them: that "
                "one is not on the chain (inserted or replaced)"
            )
        elif previous is not None and link.size == previous[0]:
            self.report.checkpoint_links_verified += 1
            if not link.names(previous[1]):
                self._fail(
                    f"{named}, which differs from the one linked (the checkpoint at size "
                    f"{link.size} was replaced)"
                )
        elif self.complete:
            self._fail(f"{named}, which is missing (the checkpoint was deleted)")

    def _fail(self, reason: str) -> None:
        self.broken += 1
        if self.broken <= self.limit:
            self.report.fail(reason)

    def finish(self) -> None:
        if self.broken > self.limit:
            self.report.fail(f"... and {self.broken - self.limit} more broken checkpoint links")


def open_checkpoints(
    notes: Iterable[str],
    verifiers: list[NoteVerifier],
    origin: str,
    report: VerificationReport,
    signed_by: list[tuple[int, set[str]]] | None = None,
    links: bool = True,
) -> dict[int, bytes]:
    """Verify signed checkpoint notes; return ``{size: root}`` of those that verified.

    ``signed_by``, if given, receives for each verified note its size and the trusted
    verifier keys (``str(NoteVerifier)``) whose signatures it carries, for :class:`KeyHistory`.
    With ``links``, the links between verified notes that are neighbours in the chain are
    checked too (the notes are taken as a sample: see :class:`LinkChain`).
    """
    roots: dict[int, bytes] = {}
    opened: dict[int, tuple[str, Checkpoint]] = {}
    for note in notes:
        try:
            checkpoint = Checkpoint.open(note, verifiers)
        except LedgerError as exc:
            report.fail(f"checkpoint rejected{_claimed_size(note)}: {exc}")
            continue
        if checkpoint.origin != origin:
            report.fail(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
            continue
        if checkpoint.size in roots and (
            roots[checkpoint.size] != checkpoint.root_hash
            or (links and opened[checkpoint.size][1].link != checkpoint.link)
        ):
            report.fail(f"two signed checkpoints disagree about size {checkpoint.size}: split view")
            continue
        roots[checkpoint.size] = checkpoint.root_hash
        if links:
            opened.setdefault(checkpoint.size, (note, checkpoint))
        report.checkpoints_verified += 1
        if signed_by is not None:
            signed_by.append((checkpoint.size, checkpoint_signers(note, verifiers)))
    if links:
        chain = LinkChain(report, complete=False)
        for size in sorted(opened):
            chain.feed(size, *opened[size])
        chain.finish()
    return roots


def _claimed_size(note: str) -> str:
    """`` (size N)`` as a rejected note claims it, to say which checkpoint failed."""
    try:
        return f" (size {Checkpoint.parse_body(split_note(note)[0]).size})"
    except (LedgerError, AttributeError, TypeError):
        return ""


def checkpoint_signers(note: str, verifiers: list[NoteVerifier]) -> set[str]:
    """The trusted keys that signed ``note`` (already verified by :meth:`Checkpoint.open`)."""
    _, signatures = split_note(note)
    marks = {(name, key_id) for name, key_id, _ in signatures}
    return {str(v) for v in verifiers if (v.name, v.key_id) in marks}


class KeyHistory:
    """Which checkpoint signing key was current at which tree size, read from the ledger.

    Each ``server_key.registered`` or ``server_key.rotated`` entry at seq ``s`` makes its key
    current and retires the one before, so the old key signs trees of at most ``s`` entries
    and the new key trees of more than ``s`` (the rotation entry included). The first key
    covers every size up to its successor. Because the history comes from the verified chain
    itself, a checkpoint signed with a retired (perhaps stolen) key for a size after its
    retirement is refused, while every checkpoint it signed before stays valid.
    """

    def __init__(self, keys: Iterable[tuple[int, str]] = ()) -> None:
        self.keys: list[tuple[int, str]] = sorted(keys)
        """``(registered_seq, verifier)`` in ledger order."""

    def __call__(self, entry: Mapping[str, Any], report: VerificationReport) -> None:
        if not isinstance(entry, Mapping) or entry.get("action") not in SERVER_KEY_ACTIONS:
            return
        payload = entry.get("payload")
        seq = entry.get("seq")
        text = payload.get("verifier") if isinstance(payload, Mapping) else None
        try:
            verifier = NoteVerifier.parse(str(text))
        except LedgerError as exc:
            report.fail(f"server key entry carries a malformed verifier key: {exc}", seq)
            return
        if self.keys and self.keys[-1][1] == str(verifier):
            return  # the same key announced again: still current
        self.keys.append((int(seq) if isinstance(seq, int) else len(self.keys), str(verifier)))

    def window(self, verifier: str) -> list[tuple[int, int | None]]:
        """The ``(first, last)`` tree sizes (last None: still current) ``verifier`` may sign."""
        spans = []
        for index, (seq, text) in enumerate(self.keys):
            if text == verifier:
                first = 1 if index == 0 else seq + 1
                last = self.keys[index + 1][0] if index + 1 < len(self.keys) else None
                spans.append((first, last))
        return spans

    def check(self, signed_by: Iterable[tuple[int, set[str]]], report: VerificationReport) -> None:
        """Fail every checkpoint none of whose signers was current at its size."""
        if not self.keys:
            return  # a ledger from before key entries: nothing to hold checkpoints to
        for size, signers in sorted(signed_by, key=lambda item: item[0]):
            if any(
                first <= size and (last is None or size <= last)
                for signer in signers
                for first, last in self.window(signer)
            ):
                continue
            names = []
            for signer in sorted(signers):
                spans = self.window(signer)
                key = signer.split("+")[1] if "+" in signer else signer
                if not spans:
                    names.append(f"key {key}, which no server_key entry of the ledger registered")
                else:
                    names.append(
                        f"key {key}, valid for sizes "
                        + ", ".join(
                            f"{first}..{'' if last is None else last}" for first, last in spans
                        )
                        + (" (retired at seq " + str(spans[-1][1]) + ")" if spans[-1][1] else "")
                    )
            report.fail(
                f"checkpoint for size {size} is signed by {'; '.join(names)}: not the key "
                "that was current at that size (a retired key cannot sign later checkpoints)"
            )


def verify_ledger(
    entries: Iterable[Mapping[str, Any]],
    checkpoint_notes: Iterable[str],
    verifiers: list[NoteVerifier],
    origin: str,
    pinned: Mapping[int, bytes] | None = None,
    observers: Iterable[Observer] = (),
    links: bool = True,
) -> VerificationReport:
    """Verify a whole ledger: every entry, every signed checkpoint, and any pinned roots.

    ``pinned`` maps sizes to roots the caller verified earlier (a local state file), so that a
    server that rewrites or truncates history is caught even if it re-signs everything.
    ``observers`` see every entry too (for checks of what entries say, such as sign-offs).
    ``links=False`` leaves the checkpoint links to a caller that walks every checkpoint
    itself (the database check, with a complete :class:`LinkChain`).
    """
    seed = VerificationReport()
    signed_by: list[tuple[int, set[str]]] = []
    roots = open_checkpoints(checkpoint_notes, verifiers, origin, seed, signed_by, links)
    for size, root in (pinned or {}).items():
        if size in roots and roots[size] != root:
            seed.fail(
                f"the server's checkpoint for size {size} differs from the one pinned locally: "
                "history was rewritten"
            )
        roots.setdefault(size, root)
    roots.pop(0, None)
    verifier = ChainVerifier(roots)
    verifier.report = seed
    history = KeyHistory()
    watchers = [history, missing_checkpoints, *observers]
    for entry in entries:
        verifier.feed(entry)
        for watch in watchers:
            watch(entry, verifier.report)
    report = verifier.finish()
    history.check(signed_by, report)
    return report
