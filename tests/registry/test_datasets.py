"""Preference datasets (JSONL) and content digests.

Validation names the 1-based line of the first bad row; statistics count rows, annotators (by
pseudonym) and agreement; annotator names stay out of the immutable ledger and live only in
the erasable ``annotator_pseudonyms`` table; a row's ``rubric`` reference becomes a lineage
edge. Directory digests are a sorted manifest: independent of creation order, sensitive to
every byte, and they refuse symbolic links.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from controlplane.core import ControlPlane
from controlplane.errors import InvalidInput
from controlplane.registry import datasets
from controlplane.registry.digests import digest_bytes, digest_path, manifest
from controlplane.registry.refs import VersionRef
from controlplane.registry.service import RegistryService
from controlplane.store.models import AnnotatorPseudonymRow

KEY = b"test-pseudonym-secret"
PROJECT = "alpha"


def jsonl(*rows: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def row(prompt: str = "p", chosen: str = "a", rejected: str = "b", **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def summarize(content: bytes, key: bytes = KEY, project: str = PROJECT) -> datasets.DatasetSummary:
    return datasets.summarize(content, key=key, project=project)


# -- validation ----------------------------------------------------------------------------------

GOOD = row()

BAD_LINES: list[tuple[str, Any]] = [
    ("invalid JSON", '{"prompt": "p", "chosen": "a",'),
    ("invalid JSON", "not json at all"),
    ("non-object", "[1, 2, 3]"),
    ("non-object", '"just a string"'),
    ("non-object", "42"),
    ("non-object", "null"),
    ("missing prompt", {"chosen": "a", "rejected": "b"}),
    ("missing chosen", {"prompt": "p", "rejected": "b"}),
    ("missing rejected", {"prompt": "p", "chosen": "a"}),
    ("empty prompt", row(prompt="")),
    ("blank chosen", row(chosen="   ")),
    ("empty rejected", row(rejected="")),
    ("non-string prompt", row(prompt=7)),
    ("non-string chosen", row(chosen=["a"])),
    ("null rejected", row(rejected=None)),
    ("non-string annotator", row(annotator=5)),
    ("non-string annotator", row(annotator={"name": "alice"})),
    ("non-string rubric", row(rubric=1)),
    ("chosen == rejected", row(chosen="same", rejected="same")),
]


@pytest.mark.parametrize(
    ("what", "bad"), BAD_LINES, ids=[f"{i}-{w}" for i, (w, _) in enumerate(BAD_LINES)]
)
@pytest.mark.parametrize("position", [1, 4])
def test_validation_names_the_line(what: str, bad: Any, position: int) -> None:
    # Lines before the bad one: good rows and a blank line (blank lines still count).
    before = [GOOD, "", GOOD][: position - 1]
    content = jsonl(*before, bad, GOOD)
    with pytest.raises(InvalidInput) as info:
        summarize(content)
    assert info.value.extra.get("line") == position, (what, info.value.detail)
    assert info.value.detail.startswith(f"line {position}:"), info.value.detail


def test_only_the_first_bad_line_is_named() -> None:
    with pytest.raises(InvalidInput) as info:
        summarize(jsonl(GOOD, GOOD, row(chosen="x", rejected="x"), "garbage"))
    assert info.value.extra["line"] == 3
    assert "identical" in info.value.detail


@pytest.mark.parametrize("content", [b"", b"\n", b"\n\n   \n\t\n"])
def test_an_empty_dataset_is_refused(content: bytes) -> None:
    with pytest.raises(InvalidInput, match="no rows"):
        summarize(content)


def test_non_utf8_is_refused() -> None:
    with pytest.raises(InvalidInput, match="UTF-8"):
        summarize(jsonl(GOOD) + b"\xff\xfe\n")


def test_optional_fields_may_be_absent_or_null() -> None:
    summary = summarize(jsonl(GOOD, row(annotator=None, rubric=None), row(extra_field=[1])))
    assert summary.stats["rows"] == 3
    assert summary.stats["unattributed_rows"] == 3
    assert summary.stats["distinct_annotators"] == 0
    assert summary.digest == digest_bytes(
        jsonl(GOOD, row(annotator=None, rubric=None), row(extra_field=[1]))
    )


# -- statistics ----------------------------------------------------------------------------------


def test_stats_with_three_annotators() -> None:
    content = jsonl(
        # Pair 1 (prompt p1, responses X/Y) judged by all three, Bob in the other order:
        # alice-bob disagree, alice-carol agree, bob-carol disagree.
        row("p1", "X", "Y", annotator="alice"),
        row("p1", "Y", "X", annotator="bob"),
        row("p1", "X", "Y", annotator="carol"),
        # Pair 2 judged by alice and bob in opposite orders, both preferring U: agree.
        row("p2", "U", "V", annotator="alice"),
        row("p2", "U", "V", annotator="bob"),
        # Pair 3 judged once: not comparable.
        row("p3", "M", "N", annotator="carol"),
        # Same responses as pair 1 but another prompt: a different pair.
        row("p4", "Y", "X", annotator="alice"),
        # Unattributed rows count as rows but not for agreement.
        row("p1", "Y", "X"),
        "",
        row("p5", "Q", "R", rubric="guide@1"),
    )
    summary = summarize(content)
    stats = summary.stats
    alice, bob, carol = (datasets.pseudonym(KEY, PROJECT, n) for n in ("alice", "bob", "carol"))
    assert stats["rows"] == 9
    assert stats["distinct_annotators"] == 3
    assert stats["rows_per_annotator"] == {alice: 3, bob: 2, carol: 2}
    assert list(stats["rows_per_annotator"]) == sorted(stats["rows_per_annotator"])
    assert stats["unattributed_rows"] == 2
    assert stats["agreement"] == {
        "pairs_multiply_judged": 2,
        "annotator_pairs_compared": 4,
        "pairwise_agreement": 0.5,
    }
    assert stats["rubric_refs"] == {"guide@1": 1}
    assert stats["bytes"] == len(content)
    assert summary.pseudonyms == {alice: "alice", bob: "bob", carol: "carol"}
    assert summary.digest == digest_bytes(content)
    # Names never appear in the statistics.
    assert not {"alice", "bob", "carol"} & set(json.dumps(stats).replace('"', " ").split())


def test_agreement_on_a_single_pair_of_three() -> None:
    content = jsonl(
        row("p", "X", "Y", annotator="a1"),
        row("p", "Y", "X", annotator="a2"),
        row("p", "X", "Y", annotator="a3"),
    )
    agreement = summarize(content).stats["agreement"]
    assert agreement == {
        "pairs_multiply_judged": 1,
        "annotator_pairs_compared": 3,
        "pairwise_agreement": round(1 / 3, 6),
    }


def test_agreement_is_none_without_multiply_judged_pairs() -> None:
    content = jsonl(row("p", annotator="a1"), row("q", annotator="a2"), row("p"))
    assert summarize(content).stats["agreement"] == {
        "pairs_multiply_judged": 0,
        "annotator_pairs_compared": 0,
        "pairwise_agreement": None,
    }


def test_pseudonyms_are_keyed_and_scoped() -> None:
    one = datasets.pseudonym(KEY, PROJECT, "alice")
    assert one == datasets.pseudonym(KEY, PROJECT, "alice")  # stable
    assert one.startswith("anon-") and "alice" not in one
    assert one != datasets.pseudonym(b"another-secret", PROJECT, "alice")
    assert one != datasets.pseudonym(KEY, "beta", "alice")
    assert one != datasets.pseudonym(KEY, PROJECT, "alice2")
    content = jsonl(row(annotator="alice"), row(annotator="bob"))
    assert not set(summarize(content).stats["rows_per_annotator"]) & set(
        summarize(content, key=b"another-secret").stats["rows_per_annotator"]
    )


# -- registration: personal data stays out of the ledger -----------------------------------------

CLEAR_NAMES = ["Alice Wonderland", "bob.builder@example.com", "Carol Ümlaut-Øster"]


def _ledger_text(cp: ControlPlane) -> list[str]:
    """Every entry's subject and payload as served, and the raw stored row text."""
    texts = []
    with cp.db.read() as session:
        for entry in cp.store.iter_entries(session):
            texts.append(json.dumps([entry["subject"], entry["payload"]], ensure_ascii=False))
            texts.append(json.dumps([entry["subject"], entry["payload"]]))
        for raw in session.execute(text("SELECT * FROM ledger_entries")):
            texts.append(" ".join(str(value) for value in raw))
        for raw in session.execute(text("SELECT note FROM checkpoints")):
            texts.append(raw[0])
    return texts


def test_annotator_names_never_enter_the_ledger(cp: ControlPlane) -> None:
    a, b, c = CLEAR_NAMES
    content = jsonl(
        row("p1", "X", "Y", annotator=a),
        row("p1", "Y", "X", annotator=b),
        row("p2", "U", "V", annotator=c),
        row("p3", "M", "N", annotator=a),
    )
    version, created = cp.registry.register_dataset("admin", PROJECT, "prefs", content)
    assert created and version["version"] == 1
    assert version["digest"] == digest_bytes(content)
    assert version["uri"] == f"urn:controlplane:dataset:{version['digest']}"
    stats = version["metadata"]["stats"]
    assert version["metadata"]["format"] == "preference-jsonl"

    for blob in _ledger_text(cp):
        for name in CLEAR_NAMES:
            assert name not in blob
            assert name.split()[0] not in blob
            assert json.dumps(name)[1:-1] not in blob  # escaped forms too

    with cp.db.read() as session:
        rows = session.execute(
            select(AnnotatorPseudonymRow).order_by(AnnotatorPseudonymRow.annotator)
        ).scalars()
        mapping = {r.pseudonym: (r.project, r.annotator) for r in rows}
        entry = cp.store.entry(session, version["ledger_seq"])
    assert entry is not None and entry["payload"]["metadata"]["stats"] == stats
    assert sorted(person for _, person in mapping.values()) == sorted(CLEAR_NAMES)
    assert {project for project, _ in mapping.values()} == {PROJECT}
    assert set(mapping) == set(stats["rows_per_annotator"])
    assert stats["rows_per_annotator"] == {
        datasets.pseudonym(b"test-pseudonym-secret", PROJECT, a): 2,
        datasets.pseudonym(b"test-pseudonym-secret", PROJECT, b): 1,
        datasets.pseudonym(b"test-pseudonym-secret", PROJECT, c): 1,
    }

    # The same annotators in another dataset: the same pseudonyms, no duplicate mapping rows.
    cp.registry.register_dataset(
        "admin", PROJECT, "prefs2", jsonl(row("q", annotator=a), row("r", annotator=b))
    )
    with cp.db.read() as session:
        count = session.execute(text("SELECT COUNT(*) FROM annotator_pseudonyms")).scalar_one()
        latest = cp.registry.latest_version(session, PROJECT, "dataset", "prefs2")
    assert count == 3
    assert set(latest["metadata"]["stats"]["rows_per_annotator"]) <= set(mapping)

    # A different secret gives different pseudonyms for the same people.
    other = RegistryService(cp.store, b"a-different-secret")
    again, _ = other.register_dataset("admin", PROJECT, "prefs3", content)
    assert not set(again["metadata"]["stats"]["rows_per_annotator"]) & set(mapping)
    for blob in _ledger_text(cp):
        for name in CLEAR_NAMES:
            assert name not in blob
    with cp.db.read() as session:
        count = session.execute(text("SELECT COUNT(*) FROM annotator_pseudonyms")).scalar_one()
    assert count == 6


def test_invalid_datasets_append_nothing(cp: ControlPlane) -> None:
    with cp.db.read() as session:
        size = cp.store.size(session)
    with pytest.raises(InvalidInput) as info:
        cp.registry.register_dataset(
            "admin", PROJECT, "prefs", jsonl(row(annotator="Secret Person"), "{oops")
        )
    assert info.value.extra["line"] == 2
    with pytest.raises(InvalidInput):
        cp.registry.register_dataset("admin", PROJECT, "prefs", b"")
    content = jsonl(row(annotator="Secret Person"))
    with pytest.raises(InvalidInput, match="does not match"):
        cp.registry.register_dataset(
            "admin", PROJECT, "prefs", content, digest="sha256:" + "0" * 64
        )
    with pytest.raises(InvalidInput):
        cp.registry.register_dataset("admin", "Bad Project", "prefs", content)
    with cp.db.read() as session:
        assert cp.store.size(session) == size
        pseudonyms = session.execute(text("SELECT COUNT(*) FROM annotator_pseudonyms")).scalar_one()
    assert pseudonyms == 0
    # Re-registering the same content is a no-op that returns the same version.
    first, created = cp.registry.register_dataset("admin", PROJECT, "prefs", content)
    second, created_again = cp.registry.register_dataset(
        "admin", PROJECT, "prefs", content, digest=digest_bytes(content)
    )
    assert created and not created_again and first["version"] == second["version"] == 1


def test_rubric_references_become_lineage_edges(cp: ControlPlane) -> None:
    rubric, created = cp.registry.register_rubric(
        "admin",
        PROJECT,
        "guide",
        b"# Helpfulness guide\n\nPrefer the helpful answer.\n",
        filename="guide.md",
    )
    assert created and rubric["version"] == 1
    assert rubric["metadata"]["document"]["title"] == "Helpfulness guide"
    cp.registry.register_rubric("admin", PROJECT, "guide", b"# Helpfulness guide v2\n")
    cp.registry.register_rubric("admin", PROJECT, "style", b"plain text rubric\n")

    content = jsonl(
        row("p1", rubric="guide@1"),
        row("p2", rubric="rubric/style@1"),
        row("p3", rubric="guide@1"),
        row("p4", rubric="guide@9"),  # no such version: no edge, no error
        row("p5", rubric="free text, not a reference"),
    )
    version, _ = cp.registry.register_dataset("admin", PROJECT, "prefs", content)
    assert [(e["relation"], e["ref"]) for e in version["lineage"]] == [
        ("follows_rubric", "rubric/guide@1"),
        ("follows_rubric", "rubric/style@1"),
    ]
    assert version["metadata"]["stats"]["rubric_refs"] == {
        "free text, not a reference": 1,
        "guide@1": 2,
        "guide@9": 1,
        "rubric/style@1": 1,
    }
    with cp.db.read() as session:
        entry = cp.store.entry(session, version["ledger_seq"])
        used_by = cp.registry.get_version(session, PROJECT, VersionRef.parse("rubric/guide@1"))
        lineage = cp.registry.lineage(
            session, PROJECT, VersionRef.parse("dataset/prefs@1"), "ancestors"
        )
    assert entry is not None
    assert entry["payload"]["lineage"] == [
        {"relation": "follows_rubric", "kind": "rubric", "name": "guide", "version": 1},
        {"relation": "follows_rubric", "kind": "rubric", "name": "style", "version": 1},
    ]
    assert [e["ref"] for e in used_by["used_by"]] == ["dataset/prefs@1"]
    assert {n["ref"]: n["distance"] for n in lineage["nodes"]} == {
        "dataset/prefs@1": 0,
        "rubric/guide@1": 1,
        "rubric/style@1": 1,
    }

    # An edge declared explicitly is not added twice; other declared edges are kept.
    declared = [
        {"relation": "follows_rubric", "kind": "rubric", "name": "guide", "version": 1},
        {"relation": "derived_from", "ref": "dataset/prefs@1"},
    ]
    child, _ = cp.registry.register_dataset(
        "admin", PROJECT, "prefs-child", jsonl(row(rubric="guide@1")), lineage=declared
    )
    assert [(e["relation"], e["ref"]) for e in child["lineage"]] == [
        ("derived_from", "dataset/prefs@1"),
        ("follows_rubric", "rubric/guide@1"),
    ]
    # A rubric in another project is not linked.
    other, _ = cp.registry.register_dataset("admin", "beta", "prefs", content)
    assert other["lineage"] == []


# -- digests -------------------------------------------------------------------------------------

TREE = {
    "a.txt": b"alpha\n",
    "b/c.bin": bytes(range(256)),
    "b/d/e.json": b'{"x": 1}',
    "z": b"",
    "b/a b.txt": b"spaces in names",
}


def _write(root: Path, files: dict[str, bytes], order: list[str]) -> Path:
    root.mkdir()
    for name in order:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
    return root


def test_directory_digest_is_independent_of_creation_order(tmp_path: Path) -> None:
    names = list(TREE)
    first = _write(tmp_path / "one", TREE, names)
    second = _write(tmp_path / "two", TREE, list(reversed(names)))
    third = _write(tmp_path / "three", TREE, sorted(names, key=lambda n: n[::-1]))
    (third / "empty-dir").mkdir()  # empty directories hold no content
    assert digest_path(first) == digest_path(second) == digest_path(third)
    assert digest_path(first).startswith("sha256:") and len(digest_path(first)) == 71
    assert manifest(first) == manifest(second)
    assert manifest(first).splitlines()[0].endswith("  a.txt")
    assert digest_path(first) == digest_bytes(manifest(first).encode())
    # A single file's digest is the digest of its bytes.
    assert digest_path(first / "b" / "c.bin") == digest_bytes(TREE["b/c.bin"])


def test_directory_digest_changes_with_any_byte(tmp_path: Path) -> None:
    root = _write(tmp_path / "tree", TREE, list(TREE))
    original = digest_path(root)
    seen = {original}
    for name, content in TREE.items():
        path = root / name
        for position in {0, len(content) // 2, len(content) - 1} if content else {None}:
            if position is None:
                path.write_bytes(b"\x00")
            else:
                changed = bytearray(content)
                changed[position] ^= 0x01
                path.write_bytes(bytes(changed))
            new = digest_path(root)
            assert new not in seen, (name, position)
            seen.add(new)
            path.write_bytes(content)
            assert digest_path(root) == original
    # Renaming, adding and removing files change it too.
    (root / "a.txt").rename(root / "a2.txt")
    assert digest_path(root) not in seen
    (root / "a2.txt").rename(root / "a.txt")
    (root / "new").write_bytes(b"")
    assert digest_path(root) not in seen
    (root / "new").unlink()
    (root / "z").unlink()
    assert digest_path(root) not in seen


def test_symbolic_links_are_refused(tmp_path: Path) -> None:
    root = _write(tmp_path / "tree", TREE, list(TREE))
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    (root / "b" / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        digest_path(root)
    (root / "b" / "link").unlink()
    (root / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        digest_path(root)
    (root / "dirlink").unlink()
    digest_path(root)
    top = tmp_path / "toplink"
    top.symlink_to(root, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        digest_path(top)
    file_link = tmp_path / "filelink"
    file_link.symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        digest_path(file_link)


def test_a_name_that_could_forge_manifest_lines_is_refused(tmp_path: Path) -> None:
    # Tree one: files "a" and "b". Tree two: one file whose name is "a\n<hash of b>  b".
    one = _write(tmp_path / "one", {"a": b"A", "b": b"B"}, ["a", "b"])
    b_hex = digest_bytes(b"B").removeprefix("sha256:")
    two = tmp_path / "two"
    two.mkdir()
    (two / f"a\n{b_hex}  b").write_bytes(b"A")
    assert sorted(os.listdir(one)) != sorted(os.listdir(two))
    digest_path(one)
    with pytest.raises(ValueError, match="control character"):
        digest_path(two)
