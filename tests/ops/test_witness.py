"""Witnessing: every signed checkpoint lands once in the witness directory, and ``verify
--witness`` catches a server whose history was rewritten and re-signed (both databases).

The rewrite is a rollback to an older state (as restoring an old backup would do) followed
by different appends: the server signs the new history with its own key, so a client that
never verified this server before accepts it. Only the witnessed checkpoints show it.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.ledger.checkpoint import Checkpoint
from controlplane.ops.witness import file_name, read_witness
from tests.cli.helpers import (
    PREFERENCES,
    REWARD_MODEL,
    RUBRIC,
    cli_env,
    describe,
    fails,
    json_of,
    ok,
    run_json,
)
from tests.cli.test_tamper import roll_back
from tests.ops.helpers import scrape
from tests.utils.databases import KINDS, served
from tests.utils.server import LiveServer

FAILURES = "controlplane_verification_failures_total"


@pytest.fixture(params=KINDS)
def witnessed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    with served(request.param, tmp_path, witness_dir=tmp_path / "witness") as running:
        yield running


def witness_dir(server: LiveServer) -> Path:
    directory = server.cp.settings.witness_dir
    assert directory is not None
    return directory


def populate(server: LiveServer, directory: Path) -> dict[str, str | None]:
    env = cli_env(server, directory)
    run_json(["register", "rubric", "helpfulness", RUBRIC], env)
    run_json(["register", "dataset", "prefs", PREFERENCES], env)
    run_json(
        ["register", "reward_model", "rm", REWARD_MODEL, "--trained-on", "dataset/prefs@1"], env
    )
    return env


def served_checkpoints(server: LiveServer) -> dict[int, str]:
    with server.admin() as admin:
        data = admin.get("/v1/ledger/checkpoints", params={"limit": 1000}).json()["data"]
    return {c["tree_size"]: c["note"] for c in data}


def test_every_checkpoint_is_witnessed_once_and_never_overwritten(
    witnessed: LiveServer, tmp_path: Path
) -> None:
    populate(witnessed, tmp_path)
    directory = witness_dir(witnessed)
    files, problems = read_witness(directory)
    assert problems == []
    served = served_checkpoints(witnessed)
    assert {w.size: w.note for w in files} == served  # init's too: written by the same listener
    assert sorted(p.name for p in directory.iterdir()) == [file_name(s) for s in sorted(served)]
    for w in files:
        assert stat.S_IMODE(w.path.stat().st_mode) == 0o444

    # the same note again (a restart's sync) is a no-op; a different one is refused and counted
    witness = witnessed.cp.witness
    assert witness is not None
    latest = max(served)
    assert witness.publish(latest, served[latest]) is False
    assert witness.conflicts == 0
    other = served[min(served)]
    assert witness.publish(latest, other) is False
    assert (directory / file_name(latest)).read_text() == served[latest]
    assert witness.conflicts == 1
    assert scrape(witnessed.url).value(FAILURES, check="witness") == 1
    outcomes = scrape(witnessed.url)
    assert outcomes.value("controlplane_witness_checkpoints_total", outcome="written") > 0
    assert outcomes.value("controlplane_witness_checkpoints_total", outcome="conflict") == 1


def test_verify_witness_passes_on_an_honest_server_and_catches_a_re_signed_rewrite(
    witnessed: LiveServer, tmp_path: Path
) -> None:
    env = populate(witnessed, tmp_path)
    directory = witness_dir(witnessed)
    honest = run_json(["verify", "--state", tmp_path / "a.json", "--witness", directory], env)
    assert honest["ok"] is True, honest
    size = honest["size"]
    assert honest["witness"]["compared"] == honest["witness"]["witnessed_checkpoints"] >= 4
    text = ok(["verify", "--state", tmp_path / "b.json", "--witness", directory], env)
    assert "witnessed checkpoint(s) match the served history" in text.stdout, describe(text)
    bundle = tmp_path / "bundle.json"
    ok(["export", "-o", bundle], env)
    assert run_json(["verify", "--bundle", bundle, "--witness", directory], env)["ok"] is True

    # Restore an older state: the newest entries are gone, consistently.
    keep = size - 2
    roll_back(witnessed, keep)
    truncated = json_of(
        fails(["verify", "--state", tmp_path / "c.json", "--witness", directory, "--json"], env, 1)
    )
    assert any(
        f"witness holds a checkpoint at size {size} but the server serves only {keep}" in p
        for p in truncated["problems"]
    ), truncated

    # ...then append different history past the old size; the server re-signs it all.
    fork = tmp_path / "fork.md"
    fork.write_text("# Another rubric\n\nDifferent history.\n")
    for n in range(3):
        ok(["register", "rubric", f"fork-{n}", fork], env)
    newcomer = run_json(["verify", "--state", tmp_path / "newcomer.json"], env)
    assert newcomer["ok"] is True and newcomer["size"] > size  # invisible without a witness

    first_rewritten = min(s for s in (w.size for w in read_witness(directory)[0]) if s > keep)
    report = json_of(
        fails(["verify", "--state", tmp_path / "d.json", "--witness", directory, "--json"], env, 1)
    )
    assert report["ok"] is False and report["size"] == newcomer["size"]
    assert report["problems"][0].startswith(
        f"seq {report['first_bad_seq']}: the server's history disagrees with the witnessed "
        f"checkpoint at size {first_rewritten} ({file_name(first_rewritten)})"
    ), report
    assert report["first_bad_seq"] <= keep
    assert report["witness"]["disagreeing_sizes"][0] == first_rewritten
    shown = fails(["verify", "--state", tmp_path / "e.json", "--witness", directory], env, 1)
    assert f"witnessed checkpoint at size {first_rewritten}" in shown.stderr, describe(shown)
    assert not (tmp_path / "e.json").exists(), "a failed verify pins nothing"

    # The server itself saw it: its re-signed checkpoints clash with the witnessed files.
    assert scrape(witnessed.url).value(FAILURES, check="witness") >= 1
    assert witnessed.cp.witness is not None and witnessed.cp.witness.conflicts >= 1


@pytest.fixture(scope="module")
def one_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path]]:
    directory = tmp_path_factory.mktemp("witness-files")
    with served("sqlite", directory, witness_dir=directory / "witness") as running:
        yield running, directory


def test_a_forged_or_foreign_witness_file_fails(
    one_server: tuple[LiveServer, Path], tmp_path: Path
) -> None:
    server, home = one_server
    env = cli_env(server, tmp_path)
    witnessed, _ = read_witness(home / "witness")
    original = witnessed[-1]

    forged_dir = tmp_path / "forged"
    forged_dir.mkdir()
    # the same signature over a different root: the note no longer verifies
    body = Checkpoint(original.checkpoint.origin, original.size, b"\x01" * 32).body()
    signature = original.note.split("\n\n", 1)[1]
    (forged_dir / file_name(original.size)).write_text(f"{body}\n{signature}")
    report = json_of(fails(["verify", "--witness", forged_dir, "--json"], env, 1))
    assert any(
        f"witnessed checkpoint at size {original.size}" in p and "not signed" in p
        for p in report["problems"]
    ), report

    misnamed = tmp_path / "misnamed"
    misnamed.mkdir()
    (misnamed / file_name(original.size + 5)).write_text(original.note)
    report = json_of(fails(["verify", "--witness", misnamed, "--json"], env, 1))
    assert any(f"holds a checkpoint of size {original.size}" in p for p in report["problems"])

    empty = tmp_path / "empty"
    empty.mkdir()
    report = json_of(fails(["verify", "--witness", empty, "--json"], env, 1))
    assert any("holds no checkpoint" in p for p in report["problems"]), report

    missing = fails(["verify", "--witness", tmp_path / "nowhere"], env, 2)
    assert "does not exist" in missing.stderr, describe(missing)
