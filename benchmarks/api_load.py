"""API latency under load: a real server, N closed-loop load processes, ratios against /healthz.

``python -m benchmarks.api_load [--db sqlite|postgresql|both] [--quick] [--json OUT]``

Per database (a SQLite file in a temporary directory, or a fresh PostgreSQL database dropped at
the end, both from ``benchmarks.run.fresh_database``) it starts ``controlplane serve
--no-dashboard`` as a separate process on a free loopback port (MLflow mirror off), seeds it
through the API (versions in lineage chains, each one a ledger entry), then drives each endpoint
from ``--procs`` load processes (httpx, closed loop, one request in flight per process) for
``--duration`` seconds. Right before and right after each endpoint, the same processes drive
``GET /healthz`` for half that time each: that is the endpoint's baseline, so a ratio compares
two figures taken minutes apart at the same concurrency on the same server and machine.

After the server stops, the same database gets ``registry.register_version`` in process (the
path ``benchmarks.run`` measures) for a few seconds, to compare the API's write throughput with
the in-process append rate.

Progress goes to stderr, the table to stdout, ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from benchmarks.run import (
    DATABASES,
    add_common_args,
    digest_of,
    fresh_database,
    log,
    percentile,
    register_one,
    write_json,
)
from controlplane.config import Settings
from controlplane.core import ControlPlane

PROJECT = "load"
KIND = "policy"  # needs only a digest and a uri (no content upload)
ENDPOINTS = ("checkpoint", "inclusion_proof", "entries_page", "version", "ancestors", "register")
ENTRIES_PAGE = 100


@dataclass
class Config:
    duration: float = 10.0
    procs: int = 4
    chains: int = 30
    depth: int = 10
    inproc_seconds: float = 5.0
    seed: int = 6962


def make_config(args: argparse.Namespace) -> Config:
    cfg = (
        Config(duration=0.4, procs=2, chains=3, depth=3, inproc_seconds=0.3)
        if args.quick
        else Config()
    )
    for name in ("duration", "procs", "chains", "depth", "seed"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    return cfg


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(data_dir: Path, url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "CONTROLPLANE_DATA_DIR": str(data_dir),
        "CONTROLPLANE_DATABASE_URL": url,
        "CONTROLPLANE_HOST": "127.0.0.1",
        "CONTROLPLANE_PORT": str(port),
        "CONTROLPLANE_MLFLOW_ENABLED": "false",
        "CONTROLPLANE_PSEUDONYM_SECRET": "bench-pseudonym-secret",
    }


def start_server(data_dir: Path, url: str, log_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``controlplane serve --no-dashboard`` in its own process; returns once /healthz answers."""
    port = free_port()
    command = [sys.executable, "-m", "controlplane.cli.main", "serve", "--no-dashboard"]
    with log_file.open("wb") as sink:
        proc = subprocess.Popen(
            command,
            env=server_env(data_dir, url, port),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log_file.read_text()}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError("server did not answer /healthz within 60 s")
        time.sleep(0.1)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def seed(base: str, token: str, cfg: Config, label: str) -> list[dict[str, Any]]:
    """``chains`` lineage chains of ``depth`` versions (each derived from the one before),
    registered through the API; returns where each chain ends."""
    tips = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        for c in range(cfg.chains):
            for d in range(cfg.depth):
                name = f"chain-{c}"
                lineage = (
                    [{"relation": "derived_from", "ref": f"{KIND}/{name}@{d}"}] if d > 0 else []
                )
                body = {
                    "digest": digest_of(f"seed-{c}-{d}"),
                    "uri": f"s3://load/{name}/{d + 1}",
                    "metadata": {"step": d},
                    "lineage": lineage,
                }
                resp = client.post(
                    f"/v1/projects/{PROJECT}/artifacts/{KIND}/{name}/versions", json=body
                )
                if resp.status_code != 201:
                    raise RuntimeError(f"seed registration failed: {resp.status_code} {resp.text}")
            tips.append({"name": f"chain-{c}", "version": cfg.depth})
        log(label, f"seeded {cfg.chains * cfg.depth} versions in {cfg.chains} chains")
    return tips


# ---------------------------------------------------------------------------------------------
# Load generators: persistent processes, one phase per command
# ---------------------------------------------------------------------------------------------


def _request(
    client: httpx.Client, endpoint: str, ctx: dict[str, Any], rng: random.Random, counter: list[int]
) -> httpx.Response:
    if endpoint == "healthz":
        return client.get("/healthz")
    if endpoint == "checkpoint":
        return client.get("/v1/ledger/checkpoint")
    if endpoint == "inclusion_proof":
        seq = rng.randrange(ctx["tree_size"])
        return client.get(
            "/v1/ledger/proofs/inclusion", params={"seq": seq, "tree_size": ctx["tree_size"]}
        )
    if endpoint == "entries_page":
        start = rng.randrange(max(1, ctx["tree_size"] - ENTRIES_PAGE))
        return client.get("/v1/ledger/entries", params={"start": start, "limit": ENTRIES_PAGE})
    tip = rng.choice(ctx["tips"])
    if endpoint == "version":
        version = rng.randint(1, tip["version"])
        return client.get(
            f"/v1/projects/{PROJECT}/artifacts/{KIND}/{tip['name']}/versions/{version}"
        )
    if endpoint == "ancestors":
        path = f"/v1/projects/{PROJECT}/artifacts/{KIND}/{tip['name']}/versions/{tip['version']}"
        return client.get(path + "/lineage", params={"direction": "ancestors"})
    if endpoint == "register":
        counter[0] += 1
        i = counter[0]
        name = f"load-{ctx['worker']}-{i % 20}"
        body = {
            "digest": digest_of(f"load-{ctx['worker']}-{i}-{ctx['phase']}"),
            "uri": f"s3://load/{name}/{i}",
            "metadata": {"i": i},
            "lineage": [
                {"relation": "derived_from", "ref": f"{KIND}/{tip['name']}@{tip['version']}"}
            ],
        }
        return client.post(f"/v1/projects/{PROJECT}/artifacts/{KIND}/{name}/versions", json=body)
    raise ValueError(endpoint)


def load_worker(conn: Connection, worker: int, seed_value: int) -> None:
    """Wait for the server's address and token, then for each phase: run it closed-loop until
    its end time and send back the latencies. (Started before the server, so that the
    processes' imports overlap with its start.)"""
    rng = random.Random(seed_value * 1000 + worker)
    counter = [0]
    target = conn.recv()
    if target is None:
        return
    base, headers = target["base"], {"Authorization": f"Bearer {target['token']}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        while True:
            phase = conn.recv()
            if phase is None:
                return
            ctx = {**phase["ctx"], "worker": worker, "phase": phase["id"]}
            while time.time() < phase["start_at"]:
                time.sleep(0.001)
            end = phase["start_at"] + phase["duration"]
            samples: list[float] = []
            errors: dict[str, int] = {}
            while True:
                began = time.perf_counter()
                outcome: int | str
                try:
                    outcome = _request(client, phase["endpoint"], ctx, rng, counter).status_code
                except httpx.HTTPError as exc:  # counted, never timed: the run goes on
                    outcome = type(exc).__name__
                elapsed = time.perf_counter() - began
                if isinstance(outcome, int) and outcome < 300:
                    samples.append(elapsed)
                else:
                    errors[str(outcome)] = errors.get(str(outcome), 0) + 1
                if time.time() >= end:
                    break
            conn.send({"samples": samples, "errors": errors, "ended": time.time()})


class LoadPool:
    def __init__(self, cfg: Config) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        self._phase = 0
        for w in range(cfg.procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=load_worker, args=(child, w, cfg.seed), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def connect(self, base: str, token: str) -> None:
        for conn in self.conns:
            conn.send({"base": base, "token": token})

    def run(self, endpoint: str, duration: float, ctx: dict[str, Any]) -> dict[str, Any]:
        self._phase += 1
        start_at = time.time() + 0.1  # every process starts together
        for conn in self.conns:
            conn.send(
                {
                    "endpoint": endpoint,
                    "duration": duration,
                    "start_at": start_at,
                    "ctx": ctx,
                    "id": self._phase,
                }
            )
        parts = [conn.recv() for conn in self.conns]
        samples = [s for p in parts for s in p["samples"]]
        errors: dict[str, int] = {}
        for p in parts:
            for k, v in p["errors"].items():
                errors[k] = errors.get(k, 0) + v
        wall = max(p["ended"] for p in parts) - start_at
        return {"samples": samples, "errors": errors, "wall_s": wall}

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):  # a crashed worker must not hide the first error
                conn.send(None)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


def summarize(phases: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [s for p in phases for s in p["samples"]]
    wall = sum(p["wall_s"] for p in phases)
    errors: dict[str, int] = {}
    for p in phases:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    if not samples:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "req_per_s": 0.0, "errors": errors}
    return {
        "n": len(samples),
        "p50_ms": percentile(samples, 0.50) * 1e3,
        "p99_ms": percentile(samples, 0.99) * 1e3,
        "mean_ms": sum(samples) / len(samples) * 1e3,
        "req_per_s": len(samples) / wall,
        "wall_s": wall,
        "errors": errors,
    }


# ---------------------------------------------------------------------------------------------
# One database
# ---------------------------------------------------------------------------------------------


def inproc_rate(data_dir: Path, url: str, seconds: float) -> dict[str, Any]:
    """``registry.register_version`` in process, on the same database, for ``seconds``
    (after a warm-up)."""
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        pseudonym_secret="bench-pseudonym-secret",
        mlflow_enabled=False,
    )
    cp = ControlPlane(settings)
    try:
        cp.init()
        # warm up first (lazy imports, compiled statement caches, casbin): the server had the
        # whole run to warm up, so a cold in-process figure would flatter the API
        warm_until = time.perf_counter() + min(1.0, seconds / 2)
        w = 0
        while w < 5 or time.perf_counter() < warm_until:
            register_one(cp, "warm", w)
            w += 1
        n, began = 0, time.perf_counter()
        while n < 5 or time.perf_counter() - began < seconds:
            register_one(cp, "single", n)
            n += 1
        spent = time.perf_counter() - began
    finally:
        cp.close()
    return {"n": n, "ops_per_s": n / spent, "seconds": spent}


def run_database(kind: str, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    label = kind
    began = time.perf_counter()
    with fresh_database(kind, args) as (url, tmp):
        data_dir = tmp / "data"
        pool = LoadPool(cfg)
        try:
            proc, base = start_server(data_dir, url, tmp / "server.log")
        except BaseException:
            pool.close()
            raise
        try:
            token = (data_dir / "admin.token").read_text().strip()
            tips = seed(base, token, cfg, label)
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
                checkpoint = c.get("/v1/ledger/checkpoint").json()
                server = c.get("/healthz").json()
            ctx = {"tips": tips, "tree_size": checkpoint["tree_size"]}
            pool.connect(base, token)
            pool.run("healthz", min(1.0, cfg.duration), ctx)  # warm-up: connections, caches
            endpoints: dict[str, Any] = {}
            for endpoint in ENDPOINTS:
                log(label, f"{endpoint}: {cfg.procs} processes x {cfg.duration:g} s (+ healthz)")
                before = pool.run("healthz", cfg.duration / 2, ctx)
                measured = pool.run(endpoint, cfg.duration, ctx)
                after = pool.run("healthz", cfg.duration / 2, ctx)
                endpoints[endpoint] = {
                    "measured": summarize([measured]),
                    "baseline": summarize([before, after]),
                }
                m = endpoints[endpoint]["measured"]
                log(
                    label,
                    f"  p50 {_f(m['p50_ms'])} ms, {m['req_per_s']:.0f} req/s, errors {m['errors']}",
                )
        finally:
            pool.close()
            stop_server(proc)
        log(label, f"in-process register_version for {cfg.inproc_seconds:g} s")
        inproc = inproc_rate(data_dir, url, cfg.inproc_seconds)
        return {
            "database": kind,
            "dialect": server.get("database"),
            "seeded_versions": cfg.chains * cfg.depth,
            "tree_size_at_start": ctx["tree_size"],
            "endpoints": endpoints,
            "inprocess_register": inproc,
            "wall_seconds": time.perf_counter() - began,
            "load_average": list(os.getloadavg()),
        }


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------

LABELS = {
    "checkpoint": "GET /v1/ledger/checkpoint",
    "inclusion_proof": "GET /v1/ledger/proofs/inclusion (random seq)",
    "entries_page": f"GET /v1/ledger/entries (page of {ENTRIES_PAGE})",
    "version": "GET artifact version",
    "ancestors": "GET lineage ancestors (chain tip)",
    "register": "POST register version (ledger append)",
}


def _f(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _r(measured: float | None, baseline: float | None, rate: bool = False) -> str:
    if not measured or not baseline:
        return "-"
    return f"{(baseline / measured if rate else measured / baseline):.2f}x"


def render_table(results: list[dict[str, Any]], cfg: Config) -> str:
    lines = []
    head = f"{'endpoint':<46} {'stat':<6}" + "".join(
        f" | {r['database'] + ': measured':>20} {'healthz':>8} {'ratio':>7}" for r in results
    )
    lines += [head, "-" * len(head)]
    for endpoint in ENDPOINTS:
        for stat, unit, rate in (
            ("p50_ms", "p50 ms", False),
            ("p99_ms", "p99 ms", False),
            ("req_per_s", "req/s", True),
        ):
            line = f"{LABELS[endpoint] if stat == 'p50_ms' else '':<46} {unit:<6}"
            for res in results:
                m = res["endpoints"][endpoint]["measured"][stat]
                b = res["endpoints"][endpoint]["baseline"][stat]
                line += f" | {_f(m):>20} {_f(b):>8} {_r(m, b, rate):>7}"
            lines.append(line)
    line = f"{'POST register vs in-process register_version':<46} {'ops/s':<6}"
    for res in results:
        m = res["endpoints"]["register"]["measured"]["req_per_s"]
        b = res["inprocess_register"]["ops_per_s"]
        line += f" | {_f(m):>20} {_f(b):>8} {_r(m, b, True):>7}"
    lines += [line, "-" * len(head)]
    lines.append(
        "ratio = cost of measured / cost of baseline (latency: measured / healthz; req/s and "
        "ops/s: baseline rate / measured rate). Baseline: GET /healthz (no auth; one max(seq) "
        "read), same processes and concurrency, half the duration right before and half right "
        f"after each endpoint. {cfg.procs} closed-loop load processes, {cfg.duration:g} s per "
        "endpoint, loopback, one uvicorn worker."
    )
    for res in results:
        errs = {e: res["endpoints"][e]["measured"]["errors"] for e in ENDPOINTS}
        errs = {e: v for e, v in errs.items() if v}
        lines.append(
            f"{res['database']}: {res['seeded_versions']} seeded versions, ledger size "
            f"{res['tree_size_at_start']} at start; samples "
            + ", ".join(f"{e} {res['endpoints'][e]['measured']['n']}" for e in ENDPOINTS)
            + f"; errors {errs or 'none'}; in-process register {res['inprocess_register']['n']} in "
            f"{res['inprocess_register']['seconds']:.1f} s; wall {res['wall_seconds']:.0f} s; "
            f"load average at end {' '.join(f'{x:.1f}' for x in res['load_average'])}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.api_load", description=__doc__.split("\n")[0]
    )
    add_common_args(parser)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 processes, 1 s each")
    parser.add_argument("--duration", type=float, help="seconds of load per endpoint (10)")
    parser.add_argument("--procs", type=int, help="load-generator processes (4)")
    parser.add_argument("--chains", type=int, help="seeded lineage chains (30)")
    parser.add_argument("--depth", type=int, help="versions per seeded chain (10)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = make_config(args)
    dbs = list(DATABASES) if args.db == "both" else [args.db]
    log("api", f"config {asdict(cfg)}; databases {dbs}; load average {os.getloadavg()}")
    load_before = list(os.getloadavg())
    results = [run_database(db, cfg, args) for db in dbs]
    table = render_table(results, cfg)
    print(table)
    if args.json:
        write_json(args.json, cfg, results, table, load_average_before=load_before)
        log("api", f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
