"""C2SP signed notes and checkpoints: the reference vector and our own checkpoints."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.ledger.checkpoint import (
    Checkpoint,
    NoteVerifier,
    note_key_id,
    sign_note,
    split_note,
    verify_note,
)
from controlplane.ledger.errors import LedgerError, MalformedError, SignatureError

# ---------------------------------------------------------------------------------------------
# The C2SP signed-note reference vector
# ---------------------------------------------------------------------------------------------

REF_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
REF_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
REF_SIG_LINE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngot"
    "pRZb6KE6RyyBwJnAM="
)
REF_NOTE = REF_TEXT + "\n" + REF_SIG_LINE + "\n"


def private_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def reference_verifier() -> NoteVerifier:
    return NoteVerifier.parse(REF_VKEY)


def test_reference_note_verifies() -> None:
    assert verify_note(REF_NOTE, [reference_verifier()]) == REF_TEXT


def test_reference_verifier_key_round_trips() -> None:
    verifier = reference_verifier()
    assert verifier.name == "PeterNeumann"
    assert verifier.key_id_hex == "c74f20a3"
    assert str(verifier) == REF_VKEY
    assert NoteVerifier.parse(str(verifier)) == verifier
    assert NoteVerifier.parse(f"  {REF_VKEY}\n") == verifier


def test_reference_key_id_is_the_c2sp_formula() -> None:
    raw = base64.b64decode(REF_VKEY.split("+")[2])
    assert raw[0] == 0x01
    expected = hashlib.sha256(b"PeterNeumann" + b"\n" + raw).digest()[:4]
    verifier = reference_verifier()
    assert expected.hex() == "c74f20a3"
    assert note_key_id("PeterNeumann", verifier.public_key) == expected


def test_reference_split_note() -> None:
    text, signatures = split_note(REF_NOTE)
    assert text == REF_TEXT
    assert len(signatures) == 1
    name, key_id, signature = signatures[0]
    assert (name, key_id.hex(), len(signature)) == ("PeterNeumann", "c74f20a3", 64)


@pytest.mark.parametrize(
    "note",
    [
        pytest.param(REF_NOTE.replace("cryptography", "Cryptography"), id="text-changed"),
        pytest.param(REF_NOTE.replace("is.\n", "is!\n"), id="last-text-line-changed"),
        pytest.param("x" + REF_NOTE, id="text-prefixed"),
        pytest.param(REF_TEXT + "extra line\n\n" + REF_SIG_LINE + "\n", id="text-extended"),
    ],
)
def test_reference_note_with_modified_text_is_rejected(note: str) -> None:
    with pytest.raises(SignatureError):
        verify_note(note, [reference_verifier()])


def test_reference_note_with_wrong_key_is_rejected() -> None:
    other = private_key(7)
    same_name_other_key = NoteVerifier.from_public_key("PeterNeumann", other.public_key())
    other_name_same_key = NoteVerifier.from_public_key(
        "PeterNeumann2", reference_verifier().public_key
    )
    # Right name and key id but a different public key: the signature itself fails.
    impostor = NoteVerifier("PeterNeumann", reference_verifier().key_id, other.public_key())
    for verifiers in ([same_name_other_key], [other_name_same_key], [impostor], []):
        with pytest.raises(SignatureError):
            verify_note(REF_NOTE, verifiers)


@pytest.mark.parametrize("byte", [0, 3, 4, 20, 67])
def test_reference_note_with_tampered_signature_is_rejected(byte: int) -> None:
    blob = bytearray(base64.b64decode(REF_SIG_LINE.split(" ")[2]))
    blob[byte] ^= 0x01
    line = f"\u2014 PeterNeumann {base64.b64encode(bytes(blob)).decode()}"
    with pytest.raises(SignatureError):
        verify_note(REF_TEXT + "\n" + line + "\n", [reference_verifier()])


@pytest.mark.parametrize(
    "note",
    [
        pytest.param(REF_TEXT, id="no-signature-block"),
        pytest.param(REF_TEXT + "\n", id="empty-signature-block"),
        pytest.param(REF_TEXT + "\n" + REF_SIG_LINE[2:] + "\n", id="no-em-dash"),
        pytest.param(REF_TEXT + "\n" + REF_SIG_LINE.replace("\u2014", "-") + "\n", id="hyphen"),
        pytest.param(REF_TEXT + "\n" + REF_SIG_LINE[:-4] + "!!!=\n", id="bad-base64"),
        pytest.param(REF_TEXT + "\n\u2014 PeterNeumann AAAA\n", id="too-short"),
        pytest.param(REF_TEXT + "\n" + REF_SIG_LINE.replace(" x08", "  x08") + "\n", id="spaces"),
    ],
)
def test_malformed_notes_are_rejected(note: str) -> None:
    with pytest.raises(MalformedError):
        verify_note(note, [reference_verifier()])


REF_NAME, REF_ID, REF_KEY_B64 = REF_VKEY.split("+")
REF_RAW = base64.b64decode(REF_KEY_B64)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"{REF_NAME}+c74f20a4+{REF_KEY_B64}", id="wrong-key-id"),
        pytest.param(f"{REF_NAME}+c74f20+{REF_KEY_B64}", id="short-key-id"),
        pytest.param(f"{REF_NAME}+c74f20a3ff+{REF_KEY_B64}", id="long-key-id"),
        pytest.param(f"{REF_NAME}+zz4f20a3+{REF_KEY_B64}", id="key-id-not-hex"),
        pytest.param(f"{REF_NAME}+{REF_ID}+{REF_KEY_B64[:-1]}", id="key-not-base64"),
        pytest.param(f"{REF_NAME}+{REF_ID}+{b64(REF_RAW[1:])}", id="key-without-alg"),
        pytest.param(f"{REF_NAME}+{REF_ID}+{b64(REF_RAW + b'x')}", id="key-too-long"),
        pytest.param(f"{REF_NAME}+{REF_ID}+{b64(bytes([2]) + REF_RAW[1:])}", id="alg-not-ed25519"),
        pytest.param(f"Other+{REF_ID}+{REF_KEY_B64}", id="name-changed"),
        pytest.param(f"{REF_NAME}+{REF_ID}", id="two-parts"),
        pytest.param(f"Peter+Neumann+{REF_ID}+{REF_KEY_B64}", id="plus-in-name"),
        pytest.param(f"+{REF_ID}+{REF_KEY_B64}", id="empty-name"),
        pytest.param(f"Peter Neumann+{REF_ID}+{REF_KEY_B64}", id="space-in-name"),
    ],
)
def test_malformed_verifier_keys_are_rejected(text: str) -> None:
    with pytest.raises(MalformedError):
        NoteVerifier.parse(text)


# ---------------------------------------------------------------------------------------------
# Our own checkpoints
# ---------------------------------------------------------------------------------------------

LOG_KEY = private_key(1)
LOG_NAME = "controlplane.test/log"
LOG = NoteVerifier.from_public_key(LOG_NAME, LOG_KEY.public_key())
WITNESS_KEY = private_key(2)
WITNESS_NAME = "witness.example"
ROOT = hashlib.sha256(b"root").digest()

line_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), min_size=1
)


def signature_line(note: str) -> str:
    """The last signature line of a signed note (without its newline)."""
    return note.rstrip("\n").rsplit("\n", 1)[1]


def test_sign_and_open_round_trip() -> None:
    checkpoint = Checkpoint("controlplane.test/ledger", 42, ROOT)
    note = checkpoint.sign(LOG_NAME, LOG_KEY)
    assert note.startswith(
        f"controlplane.test/ledger\n42\n{base64.b64encode(ROOT).decode()}\n\n\u2014 {LOG_NAME} "
    )
    assert Checkpoint.open(note, [LOG]) == checkpoint
    # The verifier key string that would be published round-trips too.
    assert Checkpoint.open(note, [NoteVerifier.parse(str(LOG))]) == checkpoint


@settings(max_examples=75, deadline=None)
@given(
    origin=line_text,
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(line_text, max_size=3).map(tuple),
)
def test_any_checkpoint_round_trips(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    checkpoint = Checkpoint(origin, size, root, extensions)
    assert Checkpoint.parse_body(checkpoint.body()) == checkpoint
    assert Checkpoint.open(checkpoint.sign(LOG_NAME, LOG_KEY), [LOG]) == checkpoint


def test_sign_note_requires_a_final_newline() -> None:
    with pytest.raises(MalformedError):
        sign_note("no newline", LOG_NAME, LOG_KEY)
    with pytest.raises(MalformedError):
        sign_note("text\n", "bad name", LOG_KEY)
    with pytest.raises(MalformedError):
        sign_note("text\n", "bad+name", LOG_KEY)


ROOT_B64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(f"\n5\n{ROOT_B64}\n", id="empty-origin"),
        pytest.param(f"origin\n\n{ROOT_B64}\n", id="empty-size"),
        pytest.param(f"origin\nfive\n{ROOT_B64}\n", id="word-size"),
        pytest.param(f"origin\n-5\n{ROOT_B64}\n", id="negative-size"),
        pytest.param(f"origin\n+5\n{ROOT_B64}\n", id="signed-size"),
        pytest.param(f"origin\n05\n{ROOT_B64}\n", id="leading-zero"),
        pytest.param(f"origin\n5 \n{ROOT_B64}\n", id="trailing-space"),
        pytest.param(f"origin\n0x5\n{ROOT_B64}\n", id="hex-size"),
        pytest.param("origin\n5\n!!notbase64!!\n", id="root-not-base64"),
        pytest.param(f"origin\n5\n{base64.b64encode(ROOT[:31]).decode()}\n", id="root-31-bytes"),
        pytest.param(f"origin\n5\n{base64.b64encode(ROOT + b'x').decode()}\n", id="root-33-bytes"),
        pytest.param("origin\n5\n\n", id="root-empty"),
        pytest.param(f"origin\n5\n{ROOT_B64}", id="no-final-newline"),
        pytest.param("origin\n5\n", id="no-root-line"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_checkpoint_bodies_are_rejected(body: str) -> None:
    with pytest.raises(MalformedError):
        Checkpoint.parse_body(body)
    # ... also when they arrive properly signed.
    if body.endswith("\n"):
        with pytest.raises(MalformedError):
            Checkpoint.open(sign_note(body, LOG_NAME, LOG_KEY), [LOG])


@pytest.mark.parametrize("size_text", ["\u0661\u0662", "\u00b2", "\uff15"])
def test_checkpoint_size_must_be_ascii_decimal(size_text: str) -> None:
    with pytest.raises(MalformedError):
        Checkpoint.parse_body(f"origin\n{size_text}\n{ROOT_B64}\n")


def test_checkpoint_signed_only_by_an_unknown_key_is_rejected() -> None:
    note = Checkpoint("origin", 3, ROOT).sign(WITNESS_NAME, WITNESS_KEY)
    with pytest.raises(SignatureError):
        Checkpoint.open(note, [LOG])
    # A key with the trusted name but another key id is just as unknown.
    with pytest.raises(SignatureError):
        Checkpoint.open(Checkpoint("origin", 3, ROOT).sign(LOG_NAME, WITNESS_KEY), [LOG])


def test_extra_cosignature_by_an_unknown_key_is_tolerated() -> None:
    checkpoint = Checkpoint("origin", 3, ROOT)
    note = checkpoint.sign(LOG_NAME, LOG_KEY)
    cosignature = signature_line(sign_note(checkpoint.body(), WITNESS_NAME, WITNESS_KEY))
    cosigned = note + cosignature + "\n"
    assert len(split_note(cosigned)[1]) == 2
    assert Checkpoint.open(cosigned, [LOG]) == checkpoint
    # Either order, and a garbage-but-well-formed signature by an unknown key, are fine too.
    witness_first = checkpoint.body() + "\n" + cosignature + "\n" + signature_line(note) + "\n"
    assert Checkpoint.open(witness_first, [LOG]) == checkpoint
    junk = "\u2014 stranger " + base64.b64encode(b"\x01\x02\x03\x04" + b"\x00" * 64).decode()
    assert Checkpoint.open(note + junk + "\n", [LOG]) == checkpoint
    # The witness alone, if trusted, verifies it as well.
    witness = NoteVerifier.from_public_key(WITNESS_NAME, WITNESS_KEY.public_key())
    assert Checkpoint.open(cosigned, [witness]) == checkpoint


def test_a_bad_signature_by_a_trusted_key_fails_even_with_a_good_one() -> None:
    checkpoint = Checkpoint("origin", 3, ROOT)
    note = checkpoint.sign(LOG_NAME, LOG_KEY)
    other_body = Checkpoint("origin", 4, ROOT).body()
    witness = NoteVerifier.from_public_key(WITNESS_NAME, WITNESS_KEY.public_key())
    wrong_cosignature = signature_line(sign_note(other_body, WITNESS_NAME, WITNESS_KEY))
    with pytest.raises(SignatureError):
        Checkpoint.open(note + wrong_cosignature + "\n", [LOG, witness])


def test_tampered_checkpoints_are_rejected() -> None:
    note = Checkpoint("origin", 3, ROOT).sign(LOG_NAME, LOG_KEY)
    other_root = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    for tampered in (
        note.replace("origin\n", "origin2\n", 1),
        note.replace("\n3\n", "\n4\n", 1),
        note.replace(ROOT_B64, other_root, 1),
    ):
        with pytest.raises(SignatureError):
            Checkpoint.open(tampered, [LOG])


def test_error_hierarchy() -> None:
    assert issubclass(SignatureError, LedgerError)
    assert issubclass(MalformedError, LedgerError)
