"""Replicas started at the same moment on a new, empty database (``controlplane serve`` in
each, as a process manager or an orchestrator starts them): all of them come up, the schema
is migrated once, and the ledger is initialised once (one server key, one bootstrap admin).

This found a bug: concurrent ``alembic upgrade`` runs raced to create the same tables and all
replicas but one crashed on start; migrations now run under a database-wide lock
(``controlplane.store.migrate``)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from controlplane.core import ControlPlane
from tests.reliability import helpers as h
from tests.utils.databases import KINDS, database_url
from tests.utils.server import free_port

pytestmark = pytest.mark.slow  # real server and client processes

REPLICAS = 3


@pytest.mark.parametrize("kind", KINDS)
def test_replicas_starting_at_once_on_an_empty_database(kind: str, tmp_path: Path) -> None:
    with database_url(kind, tmp_path) as url, h.processes() as running:
        settings = h.settings_for(url, tmp_path)
        key_file = settings.resolved_signing_key_file
        key_file.parent.mkdir(parents=True)
        key_file.write_bytes(
            Ed25519PrivateKey.generate().private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
            )
        )
        cli = str(Path(sys.executable).with_name("controlplane"))
        servers = []
        for n in range(REPLICAS):
            data_dir = tmp_path / f"replica-{n}"
            data_dir.mkdir()
            port = free_port()
            env = {**h.server_env(settings, data_dir), "CONTROLPLANE_PORT": str(port)}
            process = running.popen([cli, "serve", "--no-dashboard"], env, data_dir / "server.log")
            servers.append(h.Server(f"http://127.0.0.1:{port}", process, data_dir / "server.log"))
        h.wait_ready(*servers)

        tokens = [
            p for n in range(REPLICAS) if (p := tmp_path / f"replica-{n}/admin.token").exists()
        ]
        assert len(tokens) == 1, "exactly one replica created the bootstrap admin"
        cp = ControlPlane(settings)
        try:
            ledger = h.assert_sound(
                cp, servers[-1].url, tokens[0].read_text().strip(), tmp_path / "state.json"
            )
        finally:
            cp.close()
        actions = Counter(e["action"] for e in ledger)
        assert actions["server_key.registered"] == 1, actions
        assert actions["promotion_rules.installed"] == 1, actions
        assert actions["principal.created"] == 1, actions
