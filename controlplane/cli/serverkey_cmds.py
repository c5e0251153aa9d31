"""``server-key``: the server's checkpoint signing key, on the server side (like ``init``).

Rotation works on the database and the key file directly, not through the API: it replaces
a secret that lives beside the servers, so it runs where that key file is.

Procedure with several API replicas (all of them share one key file, e.g. a shared volume):

1. ``controlplane server-key rotate --database-url ... --data-dir ...`` on any machine that
   sees the shared key file. It appends ``server_key.rotated`` under the ledger lock, puts
   the new key file in place atomically and signs the checkpoint over the rotation with the
   new key. The retired private key is deleted; its public key stays registered.
2. Nothing else is needed for the replicas: each one, when it next signs a checkpoint, sees
   that the ledger's current key changed and re-reads the key file. A replica whose key file
   does not hold the new key (a per-machine copy) refuses to sign and its writes fail, never
   producing a checkpoint with a retired key: copy the new key file there, or restart it with
   it. Replicas also re-read the key file on every start.
3. Clients need nothing: ``controlplane verify`` fetches the keys, current and retired, and
   accepts each checkpoint signed by the key current at its size.
"""

from __future__ import annotations

from typing import Annotated

import typer

from controlplane.cli.common import JsonOpt, handle_errors, list_page, out, print_json
from controlplane.cli.server_cmds import DatabaseOpt, DataDirOpt, _settings

server_key_app = typer.Typer(
    help="The server's checkpoint signing key (server side: data dir and database).",
    no_args_is_help=True,
)


@server_key_app.command("rotate")
@handle_errors
def rotate(
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    reason: Annotated[str, typer.Option(help="Why the key is rotated (recorded).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Generate a new checkpoint signing key and record the rotation in the ledger.

    Old checkpoints keep verifying against the retired key; checkpoints from now on are
    signed by the new one. Replicas sharing the key file follow without a restart.
    """
    from controlplane.core import ControlPlane  # heavy: server side only

    cp = ControlPlane(_settings(data_dir, database_url))
    try:
        result = cp.rotate_server_key(reason)
    finally:
        cp.close()
    if as_json:
        print_json(result)
        return
    out.print(f"rotated      at seq {result['seq']}", markup=False)
    out.print(f"new key      {result['key_id']}", markup=False)
    out.print(f"retired key  {result['previous_key_id']}", markup=False)
    out.print(f"key file     {result['key_file']}", markup=False)


@server_key_app.command("list")
@handle_errors
def list_keys(
    data_dir: DataDirOpt = None, database_url: DatabaseOpt = None, as_json: JsonOpt = False
) -> None:
    """The checkpoint signing keys, current and retired, with the seq range each covers."""
    from sqlalchemy import select

    from controlplane.core import ControlPlane
    from controlplane.store.models import ServerKeyRow

    cp = ControlPlane(_settings(data_dir, database_url))
    try:
        with cp.db.read() as session:
            rows = session.execute(
                select(ServerKeyRow).order_by(ServerKeyRow.registered_seq)
            ).scalars()
            keys = [
                {
                    "key_id": r.key_id,
                    "verifier": r.verifier,
                    "registered_seq": r.registered_seq,
                    "retired_seq": r.retired_seq,
                    "status": "current" if r.retired_seq is None else "retired",
                }
                for r in rows
            ]
    finally:
        cp.close()
    if as_json:
        print_json(list_page(keys))
        return
    for key in keys:
        until = "" if key["retired_seq"] is None else f" until seq {key['retired_seq']}"
        out.print(
            f"{key['status']:8} {key['key_id'][:16]}  from seq {key['registered_seq']}{until}",
            markup=False,
        )
