"""Signing a promotion request on the approver's side: shared by the CLI and the dashboard.

The statement is built from the request exactly as the API serves it, signed with the
approver's own Ed25519 key, and only the DSSE envelope is sent; the private key never goes to
the API server.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane import clock
from controlplane.client.api import ApiClient
from controlplane.crypto.keys import key_id
from controlplane.governance import statements


def active_key(api: ApiClient, signer: str, private: Ed25519PrivateKey) -> dict[str, Any] | None:
    """The registered, unrevoked key of ``signer`` whose private half is ``private``, if any.

    Checked before signing so that a wrong key file is caught here rather than becoming a
    recorded refusal.
    """
    wanted = key_id(private.public_key())
    for key in api.get("/v1/keys", principal=signer)["data"]:
        if key["key_id"] == wanted and key["active"]:
            return dict(key)
    return None


def sign_off(
    api: ApiClient,
    request_id: int,
    decision: str,
    comment: str,
    private: Ed25519PrivateKey,
    signer: str | None = None,
) -> dict[str, Any]:
    """Sign ``decision`` on request ``request_id`` as ``signer`` (default: the caller) and send
    the envelope; returns the request as the server has it afterwards."""
    me = signer or api.get("/v1/whoami")["id"]
    request = api.get(f"/v1/requests/{request_id}")
    statement = statements.statement(request, me, decision, comment, clock.now())
    envelope = statements.sign(statement, private)
    return dict(api.post(f"/v1/requests/{request_id}/signoffs", {"envelope": envelope}))


__all__ = ["active_key", "sign_off"]
