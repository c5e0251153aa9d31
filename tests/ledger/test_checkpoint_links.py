"""Chained checkpoints: the ``prev`` extension line and :class:`LinkChain` (pure, no database).

A chain of signed checkpoints is drawn at random sizes; deleting, replacing or stripping any one
of them must be named by its size, while every sample of an honest chain, and every chain that
starts with checkpoints from before links, still verifies.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.ledger.checkpoint import (
    Checkpoint,
    CheckpointLink,
    NoteVerifier,
    note_digest,
    sign_note,
    split_note,
)
from controlplane.ledger.errors import LedgerError, MalformedError
from controlplane.ledger.verify import LinkChain, VerificationReport, open_checkpoints
from tests.ledger.test_checkpoint import private_key

KEY = private_key(5)
ORIGIN = "controlplane.test/chain"
VERIFIER = NoteVerifier.from_public_key(ORIGIN, KEY.public_key())
ROOT = hashlib.sha256(b"root").digest()
HASH_B64 = base64.b64encode(hashlib.sha256(b"note").digest()).decode()

Chain = list[tuple[int, str]]


def root(size: int) -> bytes:
    return hashlib.sha256(size.to_bytes(8, "big")).digest()


def sign(size: int, link: CheckpointLink | None) -> str:
    return Checkpoint.linked(ORIGIN, size, root(size), link).sign(ORIGIN, KEY)


def build(sizes: list[int], legacy: int = 0) -> Chain:
    """Checkpoints at ``sizes`` as ``sign_checkpoint`` makes them; the first ``legacy`` ones
    without links, as signed before links existed."""
    chain: Chain = []
    for index, size in enumerate(sizes):
        link = None
        if chain and index >= legacy:
            link = CheckpointLink.to(*chain[-1])
        chain.append((size, sign(size, link)))
    return chain


def signed_by_us(note: str) -> bool:
    try:
        Checkpoint.open(note, [VERIFIER])
    except LedgerError:
        return False
    return True


def walk(chain: Chain, complete: bool = True) -> VerificationReport:
    report = VerificationReport()
    links = LinkChain(report, complete, signed=signed_by_us)
    for size, note in chain:
        links.feed(size, note)
    links.finish()
    return report


sizes_strategy = st.lists(st.integers(1, 10_000), min_size=3, max_size=25, unique=True).map(sorted)


# --- the extension line ---------------------------------------------------------------------


def test_the_link_line_round_trips_and_is_signed_like_the_rest_of_the_body() -> None:
    previous = sign(3, None)
    link = CheckpointLink.to(3, previous)
    assert link.line() == f"prev 3 {base64.b64encode(note_digest(previous)).decode()}"
    assert link.note_hash == hashlib.sha256(previous.encode()).digest()
    note = sign(7, link)
    text, _ = split_note(note)
    assert text == f"{ORIGIN}\n7\n{base64.b64encode(root(7)).decode()}\n{link.line()}\n"
    opened = Checkpoint.open(note, [VERIFIER])
    assert opened.link == link and opened.extensions == (link.line(),)
    # stripping the line breaks the signature: it covers the whole body
    stripped = note.replace(link.line() + "\n", "")
    with pytest.raises(Exception, match="invalid signature"):
        Checkpoint.open(stripped, [VERIFIER])


def test_notes_without_extension_lines_still_parse() -> None:
    checkpoint = Checkpoint.open(sign(4, None), [VERIFIER])
    assert checkpoint.extensions == () and checkpoint.link is None
    # another application's extension line is kept and is not a link
    other = Checkpoint(ORIGIN, 4, ROOT, ("witness-timestamp 1700000000",))
    assert Checkpoint.open(other.sign(ORIGIN, KEY), [VERIFIER]).link is None


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(["prev"], id="bare-keyword"),
        pytest.param([f"prev five {HASH_B64}"], id="word-size"),
        pytest.param([f"prev 0 {HASH_B64}"], id="size-zero"),
        pytest.param([f"prev 03 {HASH_B64}"], id="leading-zero"),
        pytest.param([f"prev 9 {HASH_B64}"], id="not-smaller"),
        pytest.param([f"prev 12 {HASH_B64}"], id="larger"),
        pytest.param(["prev 3 !!notbase64!!"], id="hash-not-base64"),
        pytest.param([f"prev 3 {HASH_B64[:-4]}"], id="hash-short"),
        pytest.param([f"prev 3 {HASH_B64} extra"], id="trailing-field"),
        pytest.param([f"prev 3 {HASH_B64}", f"prev 2 {HASH_B64}"], id="two-links"),
        pytest.param(["", "other"], id="empty-extension-line"),
    ],
)
def test_malformed_link_lines_are_rejected(lines: list[str]) -> None:
    body = f"{ORIGIN}\n9\n{base64.b64encode(ROOT).decode()}\n" + "".join(f"{x}\n" for x in lines)
    with pytest.raises(MalformedError):
        Checkpoint.parse_body(body)
    with pytest.raises(MalformedError):
        Checkpoint.open(sign_note(body, ORIGIN, KEY), [VERIFIER])


# --- the chain ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_strategy, legacy=st.integers(0, 3), data=st.data())
def test_an_honest_chain_and_any_sample_of_it_verify(
    sizes: list[int], legacy: int, data: st.DataObject
) -> None:
    chain = build(sizes, legacy)
    report = walk(chain)
    assert report.ok, report.problems
    assert report.checkpoint_links_verified == len(sizes) - max(1, legacy)
    picked = data.draw(st.sets(st.sampled_from(range(len(chain)))), label="sample")
    sample = [chain[i] for i in sorted(picked)]
    assert walk(sample, complete=False).ok


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_strategy, data=st.data())
def test_a_deleted_checkpoint_is_named_by_its_size(sizes: list[int], data: st.DataObject) -> None:
    chain = build(sizes)
    gone = data.draw(st.integers(0, len(chain) - 2), label="deleted")  # the newest: elsewhere
    report = walk(chain[:gone] + chain[gone + 1 :])
    after, missing = sizes[gone + 1], sizes[gone]
    assert report.problems == [
        f"checkpoint for size {after} names previous checkpoint at size {missing}, which is "
        "missing (the checkpoint was deleted)"
    ]
    # as a sample the same list is fine: a gap in a sample is no fault
    assert walk(chain[:gone] + chain[gone + 1 :], complete=False).ok


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_strategy, data=st.data())
def test_a_replaced_checkpoint_is_caught_even_validly_signed(
    sizes: list[int], data: st.DataObject
) -> None:
    """The key signs another note for the same size and root but with a different link (to
    an earlier checkpoint, or with another hash): its successor's link no longer names it."""
    chain = build(sizes)
    index = data.draw(st.integers(1, len(chain) - 2), label="replaced")
    size = sizes[index]
    skip = index >= 2 and data.draw(st.booleans(), label="link skips one")
    link = (
        CheckpointLink.to(*chain[index - 2])
        if skip
        else CheckpointLink(sizes[index - 1], b"\x00" * 32)
    )
    forged = sign(size, link)
    tampered = [*chain[:index], (size, forged), *chain[index + 1 :]]
    assert Checkpoint.open(forged, [VERIFIER]).size == size  # a valid signed checkpoint
    for complete in (True, False):
        report = walk(tampered, complete)
        successor = sizes[index + 1]
        assert any(
            p.startswith(
                f"checkpoint for size {successor} names previous checkpoint at size {size}, "
                "which differs"
            )
            for p in report.problems
        ), report.problems


@settings(max_examples=40, deadline=None)
@given(sizes=sizes_strategy, data=st.data())
def test_a_stripped_link_is_caught(sizes: list[int], data: st.DataObject) -> None:
    """After the first linked checkpoint every one must be linked: one served without its
    line (so without a valid signature: only the server's key could re-sign it) is named."""
    chain = build(sizes)
    index = data.draw(st.integers(2, len(chain) - 1), label="stripped")
    note = chain[index][1]
    stripped = "\n".join(line for line in note.split("\n") if not line.startswith("prev "))
    tampered = [*chain[:index], (sizes[index], stripped), *chain[index + 1 :]]
    report = walk(tampered)
    assert report.problems[0] == (
        f"checkpoint for size {sizes[index]} has no link to its previous checkpoint, but every "
        f"checkpoint from size {sizes[1]} on must: its link line was stripped (and the note's "
        "signature does not verify)"
    )


@settings(max_examples=40, deadline=None)
@given(sizes=sizes_strategy, data=st.data())
def test_a_signed_unlinked_checkpoint_restarts_the_chain(
    sizes: list[int], data: st.DataObject
) -> None:
    """A replica of an earlier version, during a rolling upgrade, signs checkpoints without
    links among linked ones; the next linked ones name it as it is: an honest chain."""
    index = data.draw(st.integers(2, len(sizes) - 1), label="unlinked")
    chain: Chain = []
    for position, size in enumerate(sizes):
        link = CheckpointLink.to(*chain[-1]) if chain and position != index else None
        chain.append((size, sign(size, link)))
    report = walk(chain)
    assert report.ok, report.problems
    assert report.checkpoint_links_verified == len(sizes) - 2


@settings(max_examples=40, deadline=None)
@given(sizes=sizes_strategy, data=st.data())
def test_an_inserted_checkpoint_is_off_the_chain(sizes: list[int], data: st.DataObject) -> None:
    chain = build(sizes)
    index = data.draw(st.integers(1, len(chain) - 1), label="inserted before")
    if sizes[index] - sizes[index - 1] < 2:
        return
    extra = sizes[index - 1] + 1
    tampered = [*chain[:index], (extra, sign(extra, None)), *chain[index:]]
    for complete in (True, False):
        problems = walk(tampered, complete).problems
        assert any(f"there is a checkpoint at size {extra} between them" in p for p in problems)


def test_legacy_checkpoints_start_the_chain_at_the_first_linked_one() -> None:
    chain = build([1, 4, 9, 16, 25], legacy=3)
    assert walk(chain).ok
    assert walk(chain[1:]).ok, "a deletion among legacy checkpoints cannot be seen"
    assert walk([chain[0], chain[1], chain[3], chain[4]]).problems == [
        "checkpoint for size 16 names previous checkpoint at size 9, which is missing (the "
        "checkpoint was deleted)"
    ], "the last legacy one is linked by the first linked one"


def test_problems_beyond_the_limit_are_counted() -> None:
    chain = build(list(range(1, 40)))
    report = walk(chain[::2])  # every other checkpoint deleted
    assert len(report.problems) == 11
    assert report.problems[-1] == "... and 9 more broken checkpoint links"


def test_open_checkpoints_checks_links_between_verified_neighbours() -> None:
    chain = build([2, 5, 8, 13])
    forged = sign(8, CheckpointLink(5, b"\x02" * 32))
    notes = [chain[3][1], chain[0][1], forged, chain[1][1]]  # any order
    report = VerificationReport()
    roots = open_checkpoints(notes, [VERIFIER], ORIGIN, report)
    assert sorted(roots) == [2, 5, 8, 13]
    assert report.problems == [
        "checkpoint for size 8 names previous checkpoint at size 5, which differs from the one "
        "linked (the checkpoint at size 5 was replaced)",
        "checkpoint for size 13 names previous checkpoint at size 8, which differs from the one "
        "linked (the checkpoint at size 8 was replaced)",
    ]
    honest = VerificationReport()
    open_checkpoints([n for _, n in chain], [VERIFIER], ORIGIN, honest)
    assert honest.ok and honest.checkpoint_links_verified == 3
    unchecked = VerificationReport()
    open_checkpoints(notes, [VERIFIER], ORIGIN, unchecked, links=False)
    assert unchecked.ok


def test_two_signed_checkpoints_with_other_links_for_one_size_are_a_split_view() -> None:
    chain = build([2, 5, 8])
    other = sign(8, CheckpointLink(2, note_digest(chain[0][1])))
    report = VerificationReport()
    open_checkpoints([n for _, n in chain] + [other], [VERIFIER], ORIGIN, report)
    assert report.problems == ["two signed checkpoints disagree about size 8: split view"]
