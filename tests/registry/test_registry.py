"""The artifact registry on SQLite and PostgreSQL: versions, idempotency, validation, lineage.

Every registration is one ``artifact.version_registered`` ledger entry whose ``seq`` is the
version's ``ledger_seq``; the projection tables are what the queries read.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from controlplane import names
from controlplane.core import ControlPlane
from controlplane.errors import InvalidInput, NotFound
from controlplane.ledger import verify_ledger
from controlplane.registry.digests import DIGEST_PATTERN
from controlplane.registry.refs import VersionRef

ACTOR = "admin"
PROJECT = "alpha"


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def register(
    cp: ControlPlane,
    kind: str,
    name: str,
    seed: str | None = None,
    *,
    project: str = PROJECT,
    lineage: list[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    uri: str | None = None,
) -> tuple[dict[str, Any], bool]:
    seed = seed if seed is not None else f"{project}/{kind}/{name}"
    return cp.registry.register_version(
        ACTOR,
        project,
        kind,
        name,
        digest=digest(seed),
        uri=uri or f"s3://bucket/{project}/{kind}/{name}/{seed}",
        metadata=metadata,
        lineage=lineage or [],
    )


def edge(relation: str, ref: str) -> dict[str, Any]:
    parsed = VersionRef.parse(ref)
    return {
        "relation": relation,
        "kind": parsed.kind,
        "name": parsed.name,
        "version": parsed.version,
    }


def ledger_size(cp: ControlPlane) -> int:
    with cp.db.read() as session:
        return cp.store.size(session)


def assert_ledger_ok(cp: ControlPlane) -> None:
    with cp.db.read() as session:
        entries = list(cp.store.iter_entries(session))
        notes = [row.note for row in cp.store.checkpoints(session, limit=100_000)]
    report = verify_ledger(entries, notes, [cp.signer.verifier], cp.signer.origin)
    assert report.ok, report.problems


# -- versions ------------------------------------------------------------------------------------


def test_versions_are_numbered_per_project_kind_and_name(cp: ControlPlane) -> None:
    got = [register(cp, "reward_model", "rm", f"rm-{i}")[0]["version"] for i in range(3)]
    assert got == [1, 2, 3]
    # Independent across projects, kinds and names.
    assert register(cp, "reward_model", "rm", "rm-0", project="beta")[0]["version"] == 1
    assert register(cp, "policy", "rm", "policy-rm")[0]["version"] == 1
    assert register(cp, "reward_model", "rm2", "rm2")[0]["version"] == 1
    assert register(cp, "reward_model", "rm", "rm-3")[0]["version"] == 4
    assert register(cp, "reward_model", "rm", "rm-1b", project="beta")[0]["version"] == 2

    with cp.db.read() as session:
        alpha = cp.registry.list_versions(session, PROJECT, "reward_model", "rm")
        beta = cp.registry.list_versions(session, "beta", "reward_model", "rm")
        latest = cp.registry.latest_version(session, PROJECT, "reward_model", "rm")
        second = cp.registry.get_version(session, PROJECT, VersionRef.parse("reward_model/rm@2"))
    assert [v["version"] for v in alpha] == [1, 2, 3, 4]
    assert [v["digest"] for v in alpha] == [digest(f"rm-{i}") for i in range(4)]
    assert [v["version"] for v in beta] == [1, 2]
    assert latest["version"] == 4 and latest["digest"] == digest("rm-3")
    assert second["ref"] == "reward_model/rm@2" and second["digest"] == digest("rm-1")
    assert all(v["project"] == PROJECT and v["created_by"] == ACTOR for v in alpha)
    assert_ledger_ok(cp)


def test_identical_registration_returns_the_existing_version(cp: ControlPlane) -> None:
    register(cp, "rubric", "guide", "guide-1")
    first, created = register(
        cp,
        "dataset",
        "prefs",
        "prefs-1",
        metadata={"b": 2, "a": [1, 2.5, "x"]},
        lineage=[edge("follows_rubric", "rubric/guide@1")],
    )
    assert created and first["version"] == 1
    size = ledger_size(cp)

    again, created = register(
        cp,
        "dataset",
        "prefs",
        "prefs-1",
        metadata={"a": [1, 2.5, "x"], "b": 2},  # same object, other key order
        lineage=[{"relation": "follows_rubric", "ref": "rubric/guide@1"}],  # other spelling
    )
    assert not created
    assert again["version"] == 1 and again["ledger_seq"] == first["ledger_seq"]
    assert again["lineage"] == first["lineage"]
    assert ledger_size(cp) == size  # nothing was appended

    # Any difference makes a new version: digest, uri, metadata, lineage.
    changes: list[dict[str, Any]] = [
        {"seed": "prefs-2", "metadata": {"b": 2, "a": [1, 2.5, "x"]}},
        {"seed": "prefs-2", "metadata": {"b": 2, "a": [1, 2.5, "x"]}, "uri": "s3://other"},
        {"seed": "prefs-2", "metadata": {"b": 3}, "uri": "s3://other"},
        {"seed": "prefs-2", "metadata": {"b": 3}, "uri": "s3://other", "lineage": []},
    ]
    versions = []
    for change in changes:
        kwargs = {"lineage": [edge("follows_rubric", "rubric/guide@1")], **change}
        version, created = register(cp, "dataset", "prefs", kwargs.pop("seed"), **kwargs)
        assert created
        versions.append(version["version"])
    assert versions == [2, 3, 4, 5]
    assert ledger_size(cp) == size + 4


def test_only_the_latest_version_is_compared(cp: ControlPlane) -> None:
    """Re-registering the content of an older version records it again as a new version."""
    register(cp, "policy", "p", "a")
    register(cp, "policy", "p", "b")
    version, created = register(cp, "policy", "p", "a")
    assert created and version["version"] == 3
    version, created = register(cp, "policy", "p", "a")
    assert not created and version["version"] == 3


# -- validation ----------------------------------------------------------------------------------


def test_lineage_to_missing_versions_is_not_found(cp: ControlPlane) -> None:
    register(cp, "dataset", "d", "d1")
    register(cp, "dataset", "elsewhere", "e1", project="beta")
    size = ledger_size(cp)
    for bad in (
        edge("trained_on", "dataset/d@2"),  # version does not exist yet
        edge("trained_on", "dataset/nope@1"),  # artifact does not exist
        edge("trained_on", "dataset/elsewhere@1"),  # exists only in another project
    ):
        with pytest.raises(NotFound):
            register(
                cp, "reward_model", "rm", "rm", lineage=[edge("trained_on", "dataset/d@1"), bad]
            )
    assert ledger_size(cp) == size
    with cp.db.read() as session:
        with pytest.raises(NotFound):
            cp.registry.list_versions(session, PROJECT, "reward_model", "rm")
        with pytest.raises(NotFound):
            cp.registry.get_version(session, PROJECT, VersionRef.parse("dataset/d@2"))
        with pytest.raises(NotFound):
            cp.registry.latest_version(session, PROJECT, "dataset", "nope")
        with pytest.raises(NotFound):
            cp.registry.lineage(session, PROJECT, VersionRef.parse("dataset/d@9"))


WRONG_TARGETS = [
    ("follows_rubric", "dataset/d@1"),
    ("follows_rubric", "policy/p@1"),
    ("trained_on", "rubric/r@1"),
    ("trained_on", "policy/p@1"),
    ("initialized_from", "dataset/d@1"),
    ("initialized_from", "rubric/r@1"),
    ("parent_of", "dataset/d@1"),
    ("", "dataset/d@1"),
]

MALFORMED_EDGES: list[Any] = [
    {"relation": "trained_on", "kind": "dataset", "name": "d", "version": 0},
    {"relation": "trained_on", "kind": "dataset", "name": "d", "version": -1},
    {"relation": "trained_on", "kind": "dataset", "name": "d", "version": "1"},
    {"relation": "trained_on", "kind": "dataset", "name": "d", "version": True},
    {"relation": "trained_on", "kind": "dataset", "name": "d"},
    {"relation": "trained_on", "kind": "model", "name": "d", "version": 1},
    {"relation": "trained_on", "kind": "dataset", "name": "../d", "version": 1},
    {"relation": "trained_on", "ref": "dataset/d"},
    {"relation": "trained_on", "ref": "dataset/d@x"},
    {"relation": "trained_on", "ref": "d@1"},
    "dataset/d@1",
]


def test_wrong_relation_targets_and_malformed_edges_are_invalid(cp: ControlPlane) -> None:
    register(cp, "dataset", "d", "d")
    register(cp, "rubric", "r", "r")
    register(cp, "policy", "p", "p")
    size = ledger_size(cp)
    for relation, ref in WRONG_TARGETS:
        for spelled in (edge(relation, ref), {"relation": relation, "ref": ref}):
            with pytest.raises(InvalidInput):
                register(cp, "reward_model", "rm", "rm", lineage=[spelled])
    for bad in MALFORMED_EDGES:
        with pytest.raises(InvalidInput):
            register(
                cp, "reward_model", "rm", "rm", lineage=[edge("trained_on", "dataset/d@1"), bad]
            )
    assert ledger_size(cp) == size
    # The right targets for the same relations are accepted.
    version, created = register(
        cp,
        "reward_model",
        "rm",
        "rm",
        lineage=[
            edge("follows_rubric", "rubric/r@1"),
            edge("trained_on", "dataset/d@1"),
            edge("initialized_from", "policy/p@1"),
            edge("derived_from", "rubric/r@1"),
            edge("evaluated_on", "policy/p@1"),
        ],
    )
    assert created and len(version["lineage"]) == 5


BAD_NAMES = ["../etc", "a/b", "", "..", "a..b", " a", "a b", ".hidden", "-x", "x" * 201, "é"]
BAD_PROJECTS = ["", "Alpha", "a/b", "../p", "p q", "_p", "p" * 101]
BAD_DIGESTS = [
    "",
    "sha256:",
    "sha256:" + "a" * 63,
    "sha256:" + "a" * 65,
    "sha256:" + "A" * 64,
    "sha256:" + "g" * 64,
    "sha512:" + "a" * 64,
    "a" * 64,
    " sha256:" + "a" * 64,
    "sha256:" + "a" * 64 + " ",
    None,
    b"sha256:" + b"a" * 64,
]


def test_bad_names_projects_kinds_digests_and_uris_are_invalid(cp: ControlPlane) -> None:
    size = ledger_size(cp)
    good = {"digest": digest("x"), "uri": "s3://b/x"}
    for name in BAD_NAMES:
        with pytest.raises(InvalidInput):
            cp.registry.register_version(ACTOR, PROJECT, "dataset", name, **good)
    for project in BAD_PROJECTS:
        with pytest.raises(InvalidInput):
            cp.registry.register_version(ACTOR, project, "dataset", "d", **good)
    for kind in ("", "model", "Dataset", "datasets"):
        with pytest.raises(InvalidInput):
            cp.registry.register_version(ACTOR, PROJECT, kind, "d", **good)
    for bad in BAD_DIGESTS:
        with pytest.raises(InvalidInput):
            cp.registry.register_version(
                ACTOR,
                PROJECT,
                "dataset",
                "d",
                digest=bad,
                uri="s3://b/x",  # type: ignore[arg-type]
            )
    for uri in ("", "   ", "s3://" + "x" * 4100, None):
        with pytest.raises(InvalidInput):
            cp.registry.register_version(
                ACTOR,
                PROJECT,
                "dataset",
                "d",
                digest=digest("x"),
                uri=uri,  # type: ignore[arg-type]
            )
    for metadata in ({"x": float("nan")}, {"x": 2**60}, {"x": object()}):
        with pytest.raises(InvalidInput):
            cp.registry.register_version(ACTOR, PROJECT, "dataset", "d", metadata=metadata, **good)
    with pytest.raises(InvalidInput):
        cp.registry.register_version(
            ACTOR, PROJECT, "dataset", "d", metadata={"blob": "x" * 300_000}, **good
        )
    assert ledger_size(cp) == size
    # The good values themselves are accepted.
    assert cp.registry.register_version(ACTOR, PROJECT, "dataset", "d", **good)[1]


def test_a_name_with_a_trailing_newline_is_invalid(cp: ControlPlane) -> None:
    with pytest.raises(InvalidInput):
        cp.registry.register_version(
            ACTOR, PROJECT, "dataset", "d\n", digest=digest("x"), uri="s3://b/x"
        )


def test_a_project_with_a_trailing_newline_is_invalid() -> None:
    with pytest.raises(InvalidInput):
        names.project("alpha\n")


def test_a_digest_with_a_trailing_newline_is_invalid() -> None:
    assert not DIGEST_PATTERN.fullmatch(digest("x") + "\n")


# -- lineage -------------------------------------------------------------------------------------


@pytest.fixture
def graph(cp: ControlPlane) -> ControlPlane:
    """rubric -> dataset -> reward_model -> policy -> evaluation, plus diamonds.

    ``child --relation--> parent``::

        dataset/prefs@1      follows_rubric    rubric/guide@1
        reward_model/rm@1    trained_on        dataset/prefs@1
        reward_model/rm@1    follows_rubric    rubric/guide@1     (diamond over prefs)
        policy/pol@1         initialized_from  reward_model/rm@1
        policy/pol@1         trained_on        dataset/prefs@1    (diamond over rm)
        evaluation/eval@1    evaluated_on      policy/pol@1
        evaluation/eval@1    evaluated_on      dataset/heldout@1
        dataset/heldout@1    derived_from      dataset/prefs@1    (diamond over pol)
    """
    register(cp, "rubric", "guide", "guide")
    register(cp, "rubric", "guide", "guide-v2")  # a second version nobody uses
    register(cp, "dataset", "prefs", lineage=[edge("follows_rubric", "rubric/guide@1")])
    register(
        cp,
        "reward_model",
        "rm",
        lineage=[
            edge("trained_on", "dataset/prefs@1"),
            edge("follows_rubric", "rubric/guide@1"),
        ],
    )
    register(
        cp,
        "policy",
        "pol",
        lineage=[
            edge("initialized_from", "reward_model/rm@1"),
            edge("trained_on", "dataset/prefs@1"),
        ],
    )
    register(cp, "dataset", "heldout", lineage=[edge("derived_from", "dataset/prefs@1")])
    register(
        cp,
        "evaluation",
        "eval",
        lineage=[edge("evaluated_on", "policy/pol@1"), edge("evaluated_on", "dataset/heldout@1")],
    )
    register(cp, "dataset", "unrelated")
    return cp


ALL_EDGES = [
    ("dataset/heldout@1", "dataset/prefs@1", "derived_from"),
    ("dataset/prefs@1", "rubric/guide@1", "follows_rubric"),
    ("evaluation/eval@1", "dataset/heldout@1", "evaluated_on"),
    ("evaluation/eval@1", "policy/pol@1", "evaluated_on"),
    ("policy/pol@1", "dataset/prefs@1", "trained_on"),
    ("policy/pol@1", "reward_model/rm@1", "initialized_from"),
    ("reward_model/rm@1", "dataset/prefs@1", "trained_on"),
    ("reward_model/rm@1", "rubric/guide@1", "follows_rubric"),
]


def _lineage(cp: ControlPlane, ref: str, direction: str) -> tuple[dict[str, int], list[tuple]]:
    with cp.db.read() as session:
        out = cp.registry.lineage(session, PROJECT, VersionRef.parse(ref), direction)
    assert out["root"] == ref and out["direction"] == direction
    distances = {node["ref"]: node["distance"] for node in out["nodes"]}
    assert len(distances) == len(out["nodes"])
    edges = [(e["child"], e["parent"], e["relation"]) for e in out["edges"]]
    assert edges == sorted(edges)
    return distances, edges


def test_ancestors_to_any_depth_with_minimum_distances(graph: ControlPlane) -> None:
    distances, edges = _lineage(graph, "evaluation/eval@1", "ancestors")
    assert distances == {
        "evaluation/eval@1": 0,
        "policy/pol@1": 1,
        "dataset/heldout@1": 1,
        "reward_model/rm@1": 2,
        "dataset/prefs@1": 2,
        "rubric/guide@1": 3,
    }
    assert edges == ALL_EDGES

    distances, edges = _lineage(graph, "policy/pol@1", "ancestors")
    assert distances == {
        "policy/pol@1": 0,
        "reward_model/rm@1": 1,
        "dataset/prefs@1": 1,
        "rubric/guide@1": 2,
    }
    assert edges == [e for e in ALL_EDGES if e[0] != "evaluation/eval@1" and "heldout" not in e[0]]


def test_descendants_to_any_depth_with_minimum_distances(graph: ControlPlane) -> None:
    distances, edges = _lineage(graph, "rubric/guide@1", "descendants")
    assert distances == {
        "rubric/guide@1": 0,
        "dataset/prefs@1": -1,
        "reward_model/rm@1": -1,
        "policy/pol@1": -2,
        "dataset/heldout@1": -2,
        "evaluation/eval@1": -3,
    }
    assert edges == ALL_EDGES
    distances, _ = _lineage(graph, "rubric/guide@2", "descendants")
    assert distances == {"rubric/guide@2": 0}


def test_both_directions_from_the_middle(graph: ControlPlane) -> None:
    distances, edges = _lineage(graph, "reward_model/rm@1", "both")
    assert distances == {
        "rubric/guide@1": 1,  # 2 via prefs, 1 directly: the minimum wins
        "dataset/prefs@1": 1,
        "reward_model/rm@1": 0,
        "policy/pol@1": -1,
        "evaluation/eval@1": -2,
    }
    # Only edges among the returned nodes (heldout is neither an ancestor nor a descendant).
    assert edges == [e for e in ALL_EDGES if "heldout" not in e[0] + e[1]]
    with graph.db.read() as session:
        with pytest.raises(InvalidInput):
            graph.registry.lineage(session, PROJECT, VersionRef.parse("policy/pol@1"), "up")
        detail = graph.registry.get_version(session, PROJECT, VersionRef.parse("dataset/prefs@1"))
    assert [e["ref"] for e in detail["lineage"]] == ["rubric/guide@1"]
    assert sorted((e["relation"], e["ref"]) for e in detail["used_by"]) == [
        ("derived_from", "dataset/heldout@1"),
        ("trained_on", "policy/pol@1"),
        ("trained_on", "reward_model/rm@1"),
    ]


def test_long_chains_are_walked_to_the_end(cp: ControlPlane) -> None:
    depth = 25
    register(cp, "dataset", "d0")
    for i in range(1, depth + 1):
        register(cp, "dataset", f"d{i}", lineage=[edge("derived_from", f"dataset/d{i - 1}@1")])
    distances, edges = _lineage(cp, f"dataset/d{depth}@1", "ancestors")
    assert distances == {f"dataset/d{i}@1": depth - i for i in range(depth + 1)}
    assert len(edges) == depth
    distances, _ = _lineage(cp, "dataset/d0@1", "descendants")
    assert distances == {f"dataset/d{i}@1": -i for i in range(depth + 1)}
    distances, _ = _lineage(cp, "dataset/d10@1", "both")
    assert distances == {f"dataset/d{i}@1": 10 - i for i in range(depth + 1)}


# -- listing and the ledger ------------------------------------------------------------------------


def test_list_artifacts_filters_by_kind_and_search(cp: ControlPlane) -> None:
    for kind, name in [
        ("dataset", "prefs-en"),
        ("dataset", "prefs-de"),
        ("dataset", "a_b"),
        ("dataset", "axb"),
        ("dataset", "100pct"),
        ("rubric", "prefs-guide"),
        ("policy", "chat"),
    ]:
        register(cp, kind, name)
    register(cp, "dataset", "prefs-en", "prefs-en-v2")
    register(cp, "dataset", "prefs-other", project="beta")

    def names(**kwargs: Any) -> tuple[list[str], int]:
        with cp.db.read() as session:
            rows, count = cp.registry.list_artifacts(session, PROJECT, **kwargs)
        return [f"{r['kind']}/{r['name']}@{r['latest_version']}" for r in rows], count

    everything, count = names()
    assert count == 7 and len(everything) == 7
    assert everything == sorted(everything)  # ordered by kind, then name
    assert names(kind="dataset")[1] == 5
    assert names(kind="rubric") == (["rubric/prefs-guide@1"], 1)
    assert names(search="prefs") == (
        ["dataset/prefs-de@1", "dataset/prefs-en@2", "rubric/prefs-guide@1"],
        3,
    )
    assert names(kind="dataset", search="prefs") == (
        ["dataset/prefs-de@1", "dataset/prefs-en@2"],
        2,
    )
    # LIKE wildcards in the search are literal characters.
    assert names(search="_") == (["dataset/a_b@1"], 1)
    assert names(search="%") == ([], 0)
    assert names(search="nothing") == ([], 0)
    # Paging keeps the total count.
    page, count = names(offset=2, limit=2)
    assert page == everything[2:4] and count == 7
    with cp.db.read() as session, pytest.raises(InvalidInput):
        cp.registry.list_artifacts(session, PROJECT, kind="model")


def test_every_registration_is_one_ledger_entry(cp: ControlPlane) -> None:
    register(cp, "rubric", "guide")
    register(cp, "dataset", "prefs", lineage=[edge("follows_rubric", "rubric/guide@1")])
    register(cp, "dataset", "prefs", "prefs-2", metadata={"note": "second"})
    register(cp, "dataset", "prefs", "prefs-2", metadata={"note": "second"})  # no-op
    register(cp, "policy", "p", project="beta")

    with cp.db.read() as session:
        entries = cp.store.entries(session, action="artifact.version_registered")
        assert len(entries) == 4
        for entry in entries:
            subject, payload = entry["subject"], entry["payload"]
            assert entry["actor"] == ACTOR
            ref = VersionRef(subject["kind"], subject["name"], subject["version"])
            version = cp.registry.get_version(session, subject["project"], ref)
            assert version["ledger_seq"] == entry["seq"]
            assert version["digest"] == payload["digest"]
            assert version["uri"] == payload["uri"]
            assert version["metadata"] == payload["metadata"]
            assert [
                {k: e[k] for k in ("relation", "kind", "name", "version")}
                for e in version["lineage"]
            ] == payload["lineage"]
        beta = cp.store.entries(session, project="beta")
        assert [e["subject"]["name"] for e in beta] == ["p"]
        by_name = cp.store.entries(session, subject_kind="dataset", subject_name="prefs")
        assert [e["subject"]["version"] for e in by_name] == [1, 2]
    assert_ledger_ok(cp)


def test_search_is_case_insensitive_on_both_databases(
    cp: ControlPlane, request: pytest.FixtureRequest
) -> None:
    register(cp, "dataset", "Prefs-EN")
    with cp.db.read() as session:
        lower = cp.registry.list_artifacts(session, PROJECT, search="prefs")[1]
        upper = cp.registry.list_artifacts(session, PROJECT, search="PREFS")[1]
    assert (lower, upper) == (1, 1)
