"""OpenLineage over HTTP (Marquez's endpoint), sent by the real client to a loopback server;
an unreachable endpoint costs the caller nothing and raises nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controlplane.config import Settings
from controlplane.runners.openlineage import LineageEmitter, run_id
from tests.utils.server import free_port

JOB: dict[str, Any] = {
    "id": 7,
    "project": "rlhf",
    "trainer": "dpo",
    "spec": {
        "datasets": [{"ref": "dataset/prefs@1", "digest": "sha256:" + "1" * 64, "uri": "x"}],
        "base_model": {"ref": "policy/base@1", "digest": "sha256:" + "2" * 64, "uri": "y"},
        "hyperparameters": {},
    },
}


@pytest.fixture
def marquez() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    received: list[tuple[str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_events_reach_an_http_endpoint(marquez: Any, tmp_path: Path) -> None:
    url, received = marquez
    settings = Settings(data_dir=tmp_path, openlineage_url=url, openlineage_namespace="ns")
    emitter = LineageEmitter(settings, "test.controlplane/ledger")
    stamp = "2031-03-03T09:00:00.000000Z"
    emitter.emit("START", JOB, claim_seq=9, event_time=stamp)
    output = {"ref": "policy/dpo-7@1", "digest": "sha256:" + "3" * 64}
    emitter.emit("COMPLETE", JOB, claim_seq=9, event_time=stamp, outputs=[output])
    emitter.flush()
    assert [path for path, _ in received] == ["/api/v1/lineage"] * 2
    start, complete = (event for _, event in received)
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    assert start["run"]["runId"] == complete["run"]["runId"]
    assert start["run"]["runId"] == run_id("test.controlplane/ledger", 7, 9)
    assert start["job"] == {**start["job"], "namespace": "ns", "name": "rlhf.job-7.dpo"}
    assert [d["name"] for d in start["inputs"]] == ["rlhf/dataset/prefs@1", "rlhf/policy/base@1"]
    assert complete["outputs"][0]["facets"]["version"]["datasetVersion"] == output["digest"]
    assert not list(tmp_path.glob("lineage/*"))  # HTTP only, no files


def test_an_unreachable_endpoint_never_blocks_or_raises(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, openlineage_url=f"http://127.0.0.1:{free_port()}")
    emitter = LineageEmitter(settings, "o")
    started = time.monotonic()
    emitter.emit("FAIL", JOB, claim_seq=1, event_time="2031-03-03T09:00:00Z", error="boom")
    assert time.monotonic() - started < 0.5  # sent in the background
    emitter.flush()  # delivery failed, was logged, and nothing was raised
