"""The comparison of desired and observed MLflow state, on hand-built states (no MLflow)."""

from __future__ import annotations

from controlplane.integrations.mlflow import state
from controlplane.integrations.mlflow.compare import ObservedModel, ObservedVersion, compare
from controlplane.integrations.mlflow.mirror import affected_artifacts
from controlplane.integrations.mlflow.state import ArtifactKey, DesiredArtifact, DesiredVersion
from controlplane.ledger.entry import GENESIS_HASH, Entry

KEY = ArtifactKey("proj", "policy", "p")


def desired(*versions: DesiredVersion) -> DesiredArtifact:
    return DesiredArtifact(KEY, list(versions))


def version(n: int, seq: int, stage: str = "registered", stage_seq: int | None = None):
    return DesiredVersion(n, f"sha256:{n:064x}", f"s3://m/{n}", seq, stage, stage_seq)


def observed(d: DesiredArtifact, synced: int, aliases: dict[str, int], *extra: ObservedVersion):
    versions = [ObservedVersion(i + 1, v.uri, d.version_tags(v)) for i, v in enumerate(d.versions)]
    tags = {**d.model_tags(), state.SYNCED_SEQ: str(synced)}
    return ObservedModel(d.model_name, tags, aliases, [*versions, *extra])


def test_in_sync_has_no_items() -> None:
    d = desired(version(1, 5, "production", 9), version(2, 7))
    cmp = compare(d, observed(d, 9, {"production": 1}))
    assert cmp.items == [] and cmp.mapping == {1: 1, 2: 2}


def test_pending_is_what_the_ledger_did_after_the_last_sync() -> None:
    d = desired(version(1, 5, "staging", 12), version(2, 11))
    seen = observed(d, 10, {"production": 1})
    seen.versions.pop()  # version 2 (seq 11) never reached MLflow
    cmp = compare(d, seen)
    causes = {(i["type"], i.get("alias")): i["cause"] for i in cmp.items}
    assert causes == {
        ("version_missing", None): "pending",  # registered at 11 > 10
        ("alias_removed", "staging"): "pending",  # staged at 12 > 10
        ("alias_added", "production"): "pending",  # the artifact changed after the sync
    }
    in_step = desired(version(1, 5, "staging", 8))
    moved = compare(in_step, observed(in_step, 8, {"production": 1}))
    assert [(i["type"], i["cause"]) for i in moved.items] == [
        ("alias_removed", "drift"),  # nothing in the ledger explains these: someone did them
        ("alias_added", "drift"),
    ]


def test_an_edited_seq_tag_is_a_changed_tag_not_a_foreign_version() -> None:
    d = desired(version(1, 5), version(2, 6))
    seen = observed(d, 6, {})
    seen.versions[0].tags[state.SEQ] = "999"
    cmp = compare(d, seen)
    assert [(i["type"], i.get("key_name"), i.get("mlflow_version")) for i in cmp.items] == [
        ("tag_changed", state.SEQ, 1)
    ]
    assert cmp.mapping == {1: 1, 2: 2} and cmp.version_tags == [(1, state.SEQ, "5")]


def test_foreign_and_duplicate_versions_are_reported_once() -> None:
    d = desired(version(1, 5, "production", 6))
    copy = ObservedVersion(2, d.versions[0].uri, d.version_tags(d.versions[0]))
    stranger = ObservedVersion(3, d.versions[0].uri, {"team": "research"})  # same URI: not ours
    cmp = compare(d, observed(d, 6, {"production": 3}, copy, stranger))
    assert {(i["type"], i.get("mlflow_version")) for i in cmp.items} == {
        ("duplicate_version", 2),
        ("foreign_version", 3),
        ("alias_moved", None),
    }
    assert cmp.acknowledge == [(2, state.DUPLICATE_OF, "1"), (3, state.FOREIGN, "true")]
    acknowledged = [
        ObservedVersion(2, copy.source, {**copy.tags, state.DUPLICATE_OF: "1"}),
        ObservedVersion(3, stranger.source, {**stranger.tags, state.FOREIGN: "true"}),
    ]
    assert compare(d, observed(d, 6, {"production": 1}, *acknowledged)).items == []


def test_model_names_and_affected_artifacts() -> None:
    assert KEY.model_name == "proj.policy.p"
    long_a = ArtifactKey("p" * 100, "reward_model", "a" * 200)
    long_b = ArtifactKey("p" * 100, "reward_model", "a" * 199 + "b")
    assert len(long_a.model_name) == 256 and long_a.model_name != long_b.model_name

    def entry(action: str, kind: str) -> Entry:
        subject = {"project": "proj", "kind": kind, "name": "p", "version": 1}
        return Entry.create(
            seq=0,
            timestamp="2031-01-01T00:00:00Z",
            actor="t",
            action=action,
            subject=subject,
            payload={},
            prev_hash=GENESIS_HASH,
        )

    entries = [
        entry("stage.changed", "policy"),
        entry("artifact.version_registered", "reward_model"),
        entry("stage.changed", "dataset"),
        entry("promotion.requested", "policy"),
    ]
    assert affected_artifacts(entries) == {
        KEY,
        ArtifactKey("proj", "reward_model", "p"),
    }
