"""Witnessing: signed checkpoints copied, write-once, to a place the server cannot rewrite.

A server's operator (or whoever owns its database and its signing key) can rewrite history
and re-sign every checkpoint; a client that never verified the server before cannot tell.
A witness directory holds a copy of each checkpoint as it was signed, so that anyone who can
read it checks the server's present history against its past:

- **Writing** (:class:`CheckpointWitness`): after each committed append, the signed note of
  the new tree size goes into ``DIR/<size, 20 digits>.checkpoint``, created with a hard link
  from a fully written, fsynced temporary file, so a file appears whole or not at all and an
  existing file is never replaced. Finding a file that differs from the note just signed means
  the server's history now disagrees with what it once signed: that is logged as an error and
  counted (metric ``controlplane_verification_failures_total{check="witness"}``).
- **Checking** (:class:`WitnessCheck`, ``controlplane verify --witness DIR``): every witnessed
  checkpoint must carry a valid signature of the ledger, and the root of the first ``size``
  entries the server serves must equal the witnessed root; the server's own consistency proof
  from the newest witnessed size to its latest must verify too. A disagreement fails the
  verification and names the size (and the file).

The directory is one per ledger and should live where the API's host cannot delete or edit
files: another machine's mount, a WORM or object-locked bucket mounted as a directory, or a
directory made append-only (``chattr +a``). The writer needs only to create files; it never
opens an existing one for writing.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from controlplane.ledger import merkle
from controlplane.ledger.checkpoint import Checkpoint, NoteVerifier, split_note
from controlplane.ledger.entry import Entry
from controlplane.ledger.errors import LedgerError
from controlplane.ledger.verify import VerificationReport
from controlplane.store.ledger_store import LedgerStore
from controlplane.store.models import CheckpointRow

log = logging.getLogger("controlplane.witness")

SUFFIX = ".checkpoint"
_FILE = re.compile(r"(\d{1,20})\.checkpoint")


def file_name(size: int) -> str:
    """``00000000000000000042.checkpoint``: sorts by size in any directory listing."""
    return f"{size:020d}{SUFFIX}"


class CheckpointWitness:
    """Writes each new signed checkpoint to the witness directory (a post-commit listener).

    Runs in the committing thread, after the commit, before the API answers: once a client
    sees its action acknowledged, the checkpoint covering it is on the witness (unless writing
    failed, which is logged and counted, and repaired by :meth:`sync` at the next start).
    """

    def __init__(self, directory: Path, store: LedgerStore) -> None:
        self.directory = directory
        self.store = store
        self._lock = threading.Lock()
        self.written = 0
        self.conflicts = 0
        self.errors = 0

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def on_commit(self, entries: list[Entry]) -> None:
        size = entries[-1].seq + 1
        with self.store.db.read() as session:
            row = session.get(CheckpointRow, size)
            note = row.note if row is not None else None
        if note is None:
            log.error("no signed checkpoint at size %d to witness", size)
            self._count("errors")
            return
        self.publish(size, note)

    def sync(self) -> None:
        """Witness the latest checkpoint if it is not yet (a missed write, a new witness)."""
        with self.store.db.read() as session:
            latest = self.store.latest_checkpoint(session)
            if latest is None:
                return
            size, note = latest.tree_size, latest.note
        if not (self.directory / file_name(size)).exists():
            self.publish(size, note)

    def publish(self, size: int, note: str) -> bool:
        """Create the file for ``size`` holding ``note``; never overwrite. True if written."""
        target = self.directory / file_name(size)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            created = _create_once(target, note.encode())
        except OSError as exc:
            log.error("cannot witness checkpoint %d in %s: %s", size, self.directory, exc)
            self._count("errors")
            return False
        if created:
            self._count("written")
            return True
        try:
            existing = target.read_bytes()
        except OSError as exc:
            log.error("cannot read witnessed checkpoint %s: %s", target, exc)
            self._count("errors")
            return False
        if existing != note.encode():
            log.error(
                "the witnessed checkpoint at size %d (%s) differs from the one just signed: "
                "the ledger's history disagrees with what it signed before",
                size,
                target,
                extra={"tree_size": size, "witness_file": str(target)},
            )
            self._count("conflicts")
        return False


def _create_once(target: Path, data: bytes) -> bool:
    """Atomically create ``target`` with ``data`` unless it exists. True if created."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, target)  # fails if target exists: never replaces a witnessed note
        except FileExistsError:
            return False
        _fsync_dir(target.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- checking ------------------------------------------------------------------------------


class ProofSource(Protocol):
    """Where the check gets a consistency proof: the server's API (none for a bundle)."""

    def consistency(self, first: int, second: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Witnessed:
    size: int
    note: str
    path: Path
    checkpoint: Checkpoint  # the parsed body (its signature is checked by WitnessCheck)


def read_witness(directory: Path) -> tuple[list[Witnessed], list[str]]:
    """Every ``*.checkpoint`` file in ``directory`` by size, and problems with the files."""
    if not directory.is_dir():
        raise ValueError(f"witness directory {directory} does not exist")
    found: list[Witnessed] = []
    problems: list[str] = []
    for path in sorted(directory.iterdir()):
        match = _FILE.fullmatch(path.name)
        if match is None:
            continue
        size = int(match.group(1))
        try:
            note = path.read_text(encoding="utf-8")
            text, _ = split_note(note)
            checkpoint = Checkpoint.parse_body(text)
        except (OSError, UnicodeDecodeError, LedgerError) as exc:
            problems.append(f"witnessed checkpoint file {path} is unreadable: {exc}")
            continue
        if checkpoint.size != size:
            problems.append(
                f"witnessed checkpoint file {path} holds a checkpoint of size {checkpoint.size}"
            )
            continue
        found.append(Witnessed(size, note, path, checkpoint))
    return sorted(found, key=lambda w: w.size), problems


class WitnessCheck:
    """Compares a ledger, entry by entry as it is verified, with a witness directory.

    Use as an extra check of :func:`controlplane.client.verify.verify_server` (or
    ``verify_bundle``): :meth:`observe` sees every served entry and compares the running
    Merkle root with the witnessed root at each witnessed size; :meth:`finish` checks the
    signatures and origin of the witnessed notes, sizes beyond the served ledger, and the
    server's consistency proof from the newest witnessed size to the verified one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.witnessed, self._file_problems = read_witness(directory)
        self._roots = {w.size: w for w in self.witnessed if w.size > 0}
        self._compact = merkle.CompactRange()
        self._last_agreeing = 0
        self.checked = 0
        self.disagreed: list[int] = []

    def observe(self, entry: Mapping[str, Any], report: VerificationReport) -> None:
        entry_hash = entry.get("entry_hash") if isinstance(entry, Mapping) else None
        try:
            raw = bytes.fromhex(entry_hash) if isinstance(entry_hash, str) else b"\x00" * 32
        except ValueError:
            raw = b"\x00" * 32
        self._compact.append(merkle.leaf_hash(raw))
        size = self._compact.size
        witnessed = self._roots.get(size)
        if witnessed is None:
            return
        self.checked += 1
        actual = self._compact.root()
        if actual == witnessed.checkpoint.root_hash:
            self._last_agreeing = size
            return
        self.disagreed.append(size)
        first, last = self._last_agreeing, size - 1
        where = f"seq {first}" if first == last else f"an entry in seq {first}..{last}"
        report.fail(
            f"the server's history disagrees with the witnessed checkpoint at size {size} "
            f"({witnessed.path.name}): the first {size} entries served have root {actual.hex()} "
            f"but the witness holds {witnessed.checkpoint.root_hash.hex()}; {where} was "
            "rewritten",
            first if report.first_bad_seq is None else None,
        )

    def finish(
        self,
        report: VerificationReport,
        origin: str,
        verifiers: Sequence[NoteVerifier],
        proofs: ProofSource | None = None,
    ) -> None:
        for problem in self._file_problems:
            report.fail(problem)
        if not self.witnessed and not self._file_problems:
            report.fail(f"the witness directory {self.directory} holds no checkpoint")
            return
        for witnessed in self.witnessed:
            try:
                opened = Checkpoint.open(witnessed.note, list(verifiers))
            except LedgerError as exc:
                report.fail(
                    f"witnessed checkpoint at size {witnessed.size} ({witnessed.path.name}) is "
                    f"not signed by a key of this ledger: {exc}"
                )
                continue
            if opened.origin != origin:
                report.fail(
                    f"witnessed checkpoint at size {witnessed.size} is of ledger "
                    f"{opened.origin!r}, not {origin!r}: wrong witness directory?"
                )
        beyond = [w.size for w in self.witnessed if w.size > report.size]
        if beyond:
            report.fail(
                f"the witness holds a checkpoint at size {beyond[-1]} but the server serves "
                f"only {report.size} entries: history was truncated or rolled back"
            )
        self._check_proof(report, proofs)

    def _check_proof(self, report: VerificationReport, proofs: ProofSource | None) -> None:
        """The server's consistency proof from the newest witnessed size to the verified one.

        The entries already matched the witness; this checks that the proofs the server hands
        to clients that do not download everything (``controlplane proof consistency``) agree
        with the witness as well.
        """
        covered = [w for w in self.witnessed if 0 < w.size <= report.size]
        if proofs is None or not covered or self.disagreed or not report.root_hash:
            return
        newest = covered[-1]
        if newest.size == report.size:
            return  # compared with the served entries' root in observe()
        try:
            proof = proofs.consistency(newest.size, report.size)
            merkle.verify_consistency(
                newest.size,
                report.size,
                newest.checkpoint.root_hash,
                bytes.fromhex(report.root_hash),
                [bytes.fromhex(h) for h in proof["hashes"]],
            )
        except (LedgerError, ValueError, KeyError, TypeError) as exc:
            report.fail(
                f"the server's consistency proof from the witnessed checkpoint at size "
                f"{newest.size} to size {report.size} does not verify: {exc}"
            )

    def summary(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "witnessed_checkpoints": len(self.witnessed),
            "compared": self.checked,
            "disagreeing_sizes": self.disagreed,
        }


__all__ = [
    "CheckpointWitness",
    "ProofSource",
    "WitnessCheck",
    "Witnessed",
    "file_name",
    "read_witness",
]
