"""The artifact registry over HTTP: rubric -> dataset -> reward model -> policy, lineage,
idempotent re-registration, dataset validation and annotator pseudonyms."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.api.conftest import unique
from tests.api.helpers import (
    all_entries,
    assert_problem,
    digest_of,
    fake_digest,
    model_body,
    register,
)
from tests.utils.server import LiveServer

RUBRIC = """# Helpfulness rubric

Prefer the response that answers the question **correctly** and completely.

1. Correctness first.
2. Then clarity.
"""

ANNOTATORS = ("Alice Annotator-Smith", "bob.labeler@example.org", "Zoë Ünïcode")


def dataset_lines(rubric_ref: str | None = None) -> list[dict[str, Any]]:
    alice, bob, zoe = ANNOTATORS
    lines: list[dict[str, Any]] = [
        # one pair judged by three annotators: two agree, one disagrees
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "annotator": alice},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "annotator": bob},
        {"prompt": "2+2?", "chosen": "5", "rejected": "4", "annotator": zoe},
        {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon", "annotator": alice},
        {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."},
    ]
    if rubric_ref:
        for line in lines:
            line["rubric"] = rubric_ref
    return lines


def jsonl(lines: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


@dataclass
class Chain:
    project: str
    rubric: dict[str, Any]
    dataset: dict[str, Any]
    reward_model: dict[str, Any]
    policy: dict[str, Any]
    dataset_content: str

    def url(self, tail: str = "") -> str:
        return f"/v1/projects/{self.project}/artifacts{tail}"


def build_chain(client: httpx.Client, project: str) -> Chain:
    """rubric <- dataset (follows_rubric) <- reward model (trained_on) <- policy."""
    rubric = register(
        client, project, "rubric", "helpfulness", {"content": RUBRIC, "filename": "rubric.md"}
    )
    content = jsonl(dataset_lines())
    dataset = register(
        client,
        project,
        "dataset",
        "prefs",
        {
            "content": content,
            "metadata": {"source": "unit test"},
            "lineage": [{"relation": "follows_rubric", "ref": "rubric/helpfulness@1"}],
        },
    )
    reward_model = register(
        client,
        project,
        "reward_model",
        "rm",
        model_body(
            "rm-1",
            metadata={"base": "tiny-gpt2", "eval": {"accuracy": 0.75}},
            lineage=[{"relation": "trained_on", "kind": "dataset", "name": "prefs", "version": 1}],
        ),
    )
    policy = register(
        client,
        project,
        "policy",
        "ppo",
        model_body("ppo-1", lineage=[{"relation": "initialized_from", "ref": "reward_model/rm@1"}]),
    )
    return Chain(project, rubric, dataset, reward_model, policy, content)


@pytest.fixture
def chain(api: LiveServer) -> Chain:
    with api.admin() as admin:
        return build_chain(admin, unique("proj"))


def test_registering_the_chain(api: LiveServer, chain: Chain) -> None:
    rubric, dataset, rm, policy = chain.rubric, chain.dataset, chain.reward_model, chain.policy
    assert rubric["created"] is True and rubric["version"] == 1
    assert rubric["ref"] == "rubric/helpfulness@1"
    assert rubric["digest"] == digest_of(RUBRIC.encode())
    assert rubric["uri"] == f"urn:controlplane:rubric:{rubric['digest']}"
    document = rubric["metadata"]["document"]
    assert document["format"] == "markdown"
    assert document["title"] == "Helpfulness rubric"
    assert document["bytes"] == len(RUBRIC.encode())
    assert rubric["created_by"] == "admin"
    assert rubric["project"] == chain.project

    assert dataset["digest"] == digest_of(chain.dataset_content.encode())
    assert dataset["metadata"]["source"] == "unit test"
    assert dataset["metadata"]["format"] == "preference-jsonl"
    stats = dataset["metadata"]["stats"]
    assert stats["rows"] == 5
    assert stats["distinct_annotators"] == 3
    assert stats["unattributed_rows"] == 1
    assert sorted(stats["rows_per_annotator"].values()) == [1, 1, 2]
    assert all(alias.startswith("anon-") for alias in stats["rows_per_annotator"])
    agreement = stats["agreement"]
    assert agreement["pairs_multiply_judged"] == 1
    assert agreement["annotator_pairs_compared"] == 3
    assert agreement["pairwise_agreement"] == pytest.approx(1 / 3, abs=1e-6)
    assert [(e["relation"], e["ref"]) for e in dataset["lineage"]] == [
        ("follows_rubric", "rubric/helpfulness@1")
    ]
    assert dataset["lineage"][0]["digest"] == rubric["digest"]

    assert rm["digest"] == fake_digest("rm-1") and rm["uri"] == "s3://models/rm-1"
    assert rm["metadata"] == {"base": "tiny-gpt2", "eval": {"accuracy": 0.75}}
    assert [(e["relation"], e["ref"]) for e in rm["lineage"]] == [("trained_on", "dataset/prefs@1")]
    assert [(e["relation"], e["ref"]) for e in policy["lineage"]] == [
        ("initialized_from", "reward_model/rm@1")
    ]

    # each registration is one ledger entry whose seq the version remembers
    with api.admin() as admin:
        entries = all_entries(admin, project=chain.project)
    assert [e["action"] for e in entries] == ["artifact.version_registered"] * 4
    assert [e["seq"] for e in entries] == [v["ledger_seq"] for v in (rubric, dataset, rm, policy)]
    assert entries[2]["subject"] == {
        "project": chain.project,
        "kind": "reward_model",
        "name": "rm",
        "version": 1,
    }
    assert entries[2]["payload"]["lineage"] == [
        {"relation": "trained_on", "kind": "dataset", "name": "prefs", "version": 1}
    ]


def test_versions_and_latest(api: LiveServer, chain: Chain) -> None:
    with api.admin() as admin:
        v2 = register(admin, chain.project, "reward_model", "rm", model_body("rm-2"))
        assert (v2["version"], v2["created"], v2["lineage"]) == (2, True, [])
        listing = admin.get(chain.url("/reward_model/rm")).json()
        assert [v["version"] for v in listing["versions"]] == [1, 2]
        assert [v["digest"] for v in listing["versions"]] == [
            fake_digest("rm-1"),
            fake_digest("rm-2"),
        ]
        latest = admin.get(chain.url("/reward_model/rm/versions/latest")).json()
        assert latest["ref"] == "reward_model/rm@2"
        assert latest["digest"] == fake_digest("rm-2")
        one = admin.get(chain.url("/reward_model/rm/versions/1")).json()
        assert one["ref"] == "reward_model/rm@1"
        assert [(e["relation"], e["ref"]) for e in one["lineage"]] == [
            ("trained_on", "dataset/prefs@1")
        ]
        assert [(e["relation"], e["ref"]) for e in one["used_by"]] == [
            ("initialized_from", "policy/ppo@1")
        ]
        assert admin.get(chain.url("/reward_model/rm/versions/2")).json()["used_by"] == []
        # projects are separate namespaces
        other = unique("proj")
        register(admin, other, "reward_model", "rm", model_body("rm-other"))
        again = admin.get(f"/v1/projects/{other}/artifacts/reward_model/rm/versions/latest")
        assert again.json()["version"] == 1
        assert admin.get(chain.url("/reward_model/rm/versions/latest")).json()["version"] == 2


def test_listing_with_kind_filter_and_search(api: LiveServer, chain: Chain) -> None:
    with api.admin() as admin:
        register(admin, chain.project, "reward_model", "rm_large", model_body("rm-large"))
        register(admin, chain.project, "evaluation", "rm-eval", model_body("rm-eval"))
        everything = admin.get(chain.url()).json()
        assert everything["count"] == 6
        assert [(a["kind"], a["name"]) for a in everything["data"]] == [
            ("dataset", "prefs"),
            ("evaluation", "rm-eval"),
            ("policy", "ppo"),
            ("reward_model", "rm"),
            ("reward_model", "rm_large"),
            ("rubric", "helpfulness"),
        ]
        assert everything["data"][0]["latest_version"] == 1
        models = admin.get(chain.url(), params={"kind": "reward_model"}).json()
        assert models["count"] == 2
        assert {a["name"] for a in models["data"]} == {"rm", "rm_large"}
        found = admin.get(chain.url(), params={"q": "rm"}).json()
        assert {a["name"] for a in found["data"]} == {"rm", "rm_large", "rm-eval"}
        found = admin.get(chain.url(), params={"q": "rm", "kind": "evaluation"}).json()
        assert [a["name"] for a in found["data"]] == ["rm-eval"]
        # LIKE wildcards in the search are literal characters
        assert admin.get(chain.url(), params={"q": "%"}).json()["count"] == 0
        underscore = admin.get(chain.url(), params={"q": "_"}).json()
        assert [a["name"] for a in underscore["data"]] == ["rm_large"]
        assert admin.get(chain.url(), params={"q": "nothing-like-it"}).json()["count"] == 0
        # paging keeps the order and the total
        page = admin.get(chain.url(), params={"offset": 2, "limit": 3}).json()
        assert page["count"] == 6
        assert [a["name"] for a in page["data"]] == ["ppo", "rm", "rm_large"]
        # an unknown project simply has nothing
        empty = admin.get(f"/v1/projects/{unique('empty')}/artifacts").json()
        assert empty == {"data": [], "count": 0}


def _nodes(lineage: dict[str, Any]) -> list[tuple[str, int]]:
    return [(n["ref"], n["distance"]) for n in lineage["nodes"]]


def _edges(lineage: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["child"], e["relation"], e["parent"]) for e in lineage["edges"]]


def test_lineage_in_every_direction(api: LiveServer, chain: Chain) -> None:
    all_edges = [
        ("dataset/prefs@1", "follows_rubric", "rubric/helpfulness@1"),
        ("policy/ppo@1", "initialized_from", "reward_model/rm@1"),
        ("reward_model/rm@1", "trained_on", "dataset/prefs@1"),
    ]
    with api.admin() as admin:
        up = admin.get(
            chain.url("/policy/ppo/versions/1/lineage"), params={"direction": "ancestors"}
        ).json()
        assert up["root"] == "policy/ppo@1" and up["direction"] == "ancestors"
        assert _nodes(up) == [
            ("policy/ppo@1", 0),
            ("reward_model/rm@1", 1),
            ("dataset/prefs@1", 2),
            ("rubric/helpfulness@1", 3),
        ]
        assert _edges(up) == all_edges
        assert all("metadata" not in node for node in up["nodes"])
        assert up["nodes"][3]["digest"] == chain.rubric["digest"]

        down = admin.get(
            chain.url("/rubric/helpfulness/versions/latest/lineage"),
            params={"direction": "descendants"},
        ).json()
        assert _nodes(down) == [
            ("policy/ppo@1", -3),
            ("reward_model/rm@1", -2),
            ("dataset/prefs@1", -1),
            ("rubric/helpfulness@1", 0),
        ]
        assert _edges(down) == all_edges

        both = admin.get(chain.url("/dataset/prefs/versions/1/lineage")).json()
        assert both["direction"] == "both"
        assert _nodes(both) == [
            ("policy/ppo@1", -2),
            ("reward_model/rm@1", -1),
            ("dataset/prefs@1", 0),
            ("rubric/helpfulness@1", 1),
        ]
        assert _edges(both) == all_edges

        # a root with nothing above it
        lonely = admin.get(
            chain.url("/rubric/helpfulness/versions/1/lineage"), params={"direction": "ancestors"}
        ).json()
        assert _nodes(lonely) == [("rubric/helpfulness@1", 0)] and lonely["edges"] == []

        # a diamond: a policy evaluated on the dataset too; the shortest distance wins
        register(
            admin,
            chain.project,
            "evaluation",
            "eval",
            model_body(
                "eval-1",
                lineage=[
                    {"relation": "evaluated_on", "ref": "dataset/prefs@1"},
                    {"relation": "derived_from", "ref": "policy/ppo@1"},
                ],
            ),
        )
        down = admin.get(
            chain.url("/dataset/prefs/versions/1/lineage"), params={"direction": "descendants"}
        ).json()
        assert _nodes(down) == [
            ("policy/ppo@1", -2),
            ("evaluation/eval@1", -1),
            ("reward_model/rm@1", -1),
            ("dataset/prefs@1", 0),
        ]
        assert len(down["edges"]) == 4


def test_identical_reregistration_is_200_and_writes_nothing(api: LiveServer, chain: Chain) -> None:
    with api.admin() as admin:
        before = admin.get("/healthz").json()["ledger_size"]
        same_rubric = register(
            admin,
            chain.project,
            "rubric",
            "helpfulness",
            {"content": RUBRIC, "filename": "rubric.md"},
            expect=200,
        )
        assert same_rubric["created"] is False and same_rubric["version"] == 1
        same_dataset = register(
            admin,
            chain.project,
            "dataset",
            "prefs",
            {
                "content": chain.dataset_content,
                "metadata": {"source": "unit test"},
                "lineage": [{"relation": "follows_rubric", "ref": "rubric/helpfulness@1"}],
            },
            expect=200,
        )
        assert same_dataset["created"] is False
        assert same_dataset["ledger_seq"] == chain.dataset["ledger_seq"]
        # the same lineage spelled as kind/name/version is the same registration
        same_rm = register(
            admin,
            chain.project,
            "reward_model",
            "rm",
            model_body(
                "rm-1",
                metadata={"eval": {"accuracy": 0.75}, "base": "tiny-gpt2"},
                lineage=[{"relation": "trained_on", "ref": "dataset/prefs@1"}],
            ),
            expect=200,
        )
        assert same_rm["created"] is False and same_rm["version"] == 1
        assert admin.get("/healthz").json()["ledger_size"] == before

        # any difference makes a new version
        changed = register(
            admin,
            chain.project,
            "dataset",
            "prefs",
            {"content": chain.dataset_content, "metadata": {"source": "changed"}},
        )
        assert (changed["version"], changed["created"]) == (2, True)
        assert changed["digest"] == chain.dataset["digest"]
        # going back to v1's content is a new version too: only the latest counts
        back = register(
            admin,
            chain.project,
            "reward_model",
            "rm",
            model_body("rm-2"),
        )
        assert back["version"] == 2
        again = register(admin, chain.project, "reward_model", "rm", model_body("rm-2"), 200)
        assert again["version"] == 2
        assert admin.get("/healthz").json()["ledger_size"] == before + 2


def test_dataset_validation_names_the_line(api: LiveServer) -> None:
    project = unique("proj")
    url = f"/v1/projects/{project}/artifacts/dataset/bad/versions"
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    cases = [
        (f"{good}\n{good}\n{{not json\n", 3, "JSON"),
        (f"{good}\n{json.dumps({'prompt': 'p', 'rejected': 'b'})}\n", 2, "chosen"),
        (f"{json.dumps({'prompt': 'p', 'chosen': 'same', 'rejected': 'same'})}\n", 1, "identical"),
        (f"{good}\n\n{json.dumps([1, 2])}\n", 3, "object"),
        (f"{json.dumps({'prompt': ' ', 'chosen': 'a', 'rejected': 'b'})}\n", 1, "prompt"),
        (
            good
            + "\n"
            + json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "annotator": 7}),
            2,
            "annotator",
        ),
    ]
    with api.admin() as admin:
        before = admin.get("/healthz").json()["ledger_size"]
        for content, line, word in cases:
            body = assert_problem(admin.post(url, json={"content": content}), 422)
            assert f"line {line}" in body["detail"], body
            assert word in body["detail"], body
            assert body["line"] == line
        for content in ("", "\n\n  \n"):
            assert (
                "no rows"
                in assert_problem(admin.post(url, json={"content": content}), 422)["detail"]
            )
        not_utf8 = {
            "content": base64.b64encode(b"\xff\xfe\x00").decode(),
            "content_encoding": "base64",
        }
        assert "UTF-8" in assert_problem(admin.post(url, json=not_utf8), 422)["detail"]
        mismatch = {"content": good, "digest": fake_digest("something else")}
        assert "does not match" in assert_problem(admin.post(url, json=mismatch), 422)["detail"]
        assert admin.get("/healthz").json()["ledger_size"] == before
        assert admin.get(f"/v1/projects/{project}/artifacts").json()["count"] == 0


def test_base64_content_and_declared_digest(api: LiveServer) -> None:
    project = unique("proj")
    raw = jsonl(dataset_lines()).encode()
    with api.admin() as admin:
        version = register(
            admin,
            project,
            "dataset",
            "b64",
            {
                "content": base64.b64encode(raw).decode(),
                "content_encoding": "base64",
                "digest": digest_of(raw),
                "uri": "s3://bucket/prefs.jsonl",
            },
        )
    assert version["digest"] == digest_of(raw)
    assert version["uri"] == "s3://bucket/prefs.jsonl"
    assert version["metadata"]["stats"]["bytes"] == len(raw)


def test_dataset_rubric_column_links_the_rubric(api: LiveServer) -> None:
    project = unique("proj")
    with api.admin() as admin:
        register(admin, project, "rubric", "helpfulness", {"content": RUBRIC})
        version = register(
            admin,
            project,
            "dataset",
            "linked",
            {"content": jsonl(dataset_lines("helpfulness@1"))},
        )
        assert [(e["relation"], e["ref"]) for e in version["lineage"]] == [
            ("follows_rubric", "rubric/helpfulness@1")
        ]
        assert version["metadata"]["stats"]["rubric_refs"] == {"helpfulness@1": 5}


def _no_annotator_in(text: str) -> None:
    for name in ANNOTATORS:
        assert name not in text
        assert json.dumps(name)[1:-1] not in text  # nor its escaped JSON spelling
    assert "example.org" not in text


def test_annotator_names_never_reach_the_ledger(api: LiveServer, chain: Chain) -> None:
    with api.admin() as admin:
        entries = all_entries(admin)
        _no_annotator_in(json.dumps(entries, ensure_ascii=False))
        for raw in (
            admin.get("/v1/ledger/entries", params={"limit": 5000}).text,
            admin.get(f"/v1/ledger/entries/{chain.dataset['ledger_seq']}").text,
            admin.get("/v1/ledger/export").text,
            admin.get(chain.url("/dataset/prefs/versions/1")).text,
            admin.get(chain.url("/dataset/prefs")).text,
            admin.get(chain.url("/dataset/prefs/versions/1/lineage")).text,
        ):
            _no_annotator_in(raw)
        entry = admin.get(f"/v1/ledger/entries/{chain.dataset['ledger_seq']}").json()
        pseudonyms = set(entry["payload"]["metadata"]["stats"]["rows_per_annotator"])
        assert len(pseudonyms) == 3 and all(p.startswith("anon-") for p in pseudonyms)
        # the same people get the same pseudonyms in the same project ...
        again = register(
            admin, chain.project, "dataset", "prefs-copy", {"content": chain.dataset_content}
        )
        assert set(again["metadata"]["stats"]["rows_per_annotator"]) == pseudonyms
        # ... and different ones in another project
        other = register(
            admin, unique("proj"), "dataset", "prefs", {"content": chain.dataset_content}
        )
        assert not set(other["metadata"]["stats"]["rows_per_annotator"]) & pseudonyms
        assert other["digest"] == chain.dataset["digest"]


def test_concurrent_registrations_get_gap_free_versions(api: LiveServer) -> None:
    project = unique("proj")
    results: list[int] = []
    errors: list[str] = []

    def worker(index: int) -> None:
        with api.admin() as client:
            response = client.post(
                f"/v1/projects/{project}/artifacts/policy/busy/versions",
                json=model_body(f"busy-{index}"),
            )
        if response.status_code == 201:
            results.append(response.json()["version"])
        else:
            errors.append(response.text)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(results) == list(range(1, 9))
    with api.admin() as admin:
        versions = admin.get(f"/v1/projects/{project}/artifacts/policy/busy").json()["versions"]
    assert [v["version"] for v in versions] == list(range(1, 9))
    assert len({v["digest"] for v in versions}) == 8


def _aware(text: str) -> bool:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None


def test_timestamps_carry_a_timezone(
    api: LiveServer, chain: Chain, request: pytest.FixtureRequest
) -> None:
    with api.admin() as admin:
        version = admin.get(chain.url("/dataset/prefs/versions/1")).json()
        listing = admin.get(chain.url()).json()["data"]
        principal = admin.get("/v1/principals/admin").json()
        tokens = admin.get("/v1/principals/admin/tokens").json()["data"]
        checkpoint = admin.get("/v1/ledger/checkpoint").json()
    stamps = {
        "checkpoint.created_at": checkpoint["created_at"],
        "version.created_at": version["created_at"],
        "artifact.created_at": listing[0]["created_at"],
        "principal.created_at": principal["created_at"],
        "token.created_at": tokens[0]["created_at"],
        "token.expires_at": tokens[0]["expires_at"],
    }
    naive = sorted(name for name, stamp in stamps.items() if not _aware(stamp))
    assert not naive, stamps
