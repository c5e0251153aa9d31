"""The API load benchmark runs end to end (real server process, real load processes, SQLite)
and writes the JSON the README describes: a smoke test of the harness, not a performance test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.api_load import ENDPOINTS

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_on_sqlite_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    command = [sys.executable, "-m", "benchmarks.api_load", "--db", "sqlite", "--quick"]
    proc = subprocess.run(
        [*command, "--duration", "0.2", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GET /v1/ledger/checkpoint" in proc.stdout  # the table goes to stdout
    doc = json.loads(out.read_text())
    assert {"config", "results", "table", "load_average_before", "cpus"} <= doc.keys()
    (res,) = doc["results"]
    assert res["database"] == "sqlite"
    assert set(res["endpoints"]) == set(ENDPOINTS)
    for endpoint, figures in res["endpoints"].items():
        for side in ("measured", "baseline"):
            stats = figures[side]
            assert {"n", "p50_ms", "p99_ms", "req_per_s", "errors"} <= stats.keys(), endpoint
            assert stats["n"] > 0 and stats["errors"] == {}, (endpoint, side, stats)
            assert stats["p50_ms"] <= stats["p99_ms"]
    assert res["inprocess_register"]["ops_per_s"] > 0
    assert len(res["load_average"]) == 3
