"""Webhook verification on its own (the HTTP path, with MLflow's sender, is in
test_mlflow_mirror.py): no secret, rotated signatures, authentic but malformed bodies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controlplane.errors import InvalidInput
from controlplane.integrations.mlflow import webhooks
from tests.governance.helpers import pinned_clock

NOW = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
STAMP = str(int(NOW.timestamp()))


def headers(signature: str, stamp: str = STAMP) -> dict[str, str]:
    return {
        webhooks.DELIVERY_ID_HEADER: "d-1",
        webhooks.TIMESTAMP_HEADER: stamp,
        webhooks.SIGNATURE_HEADER: signature,
    }


def test_verification_rules() -> None:
    body = b'{"entity": "model_version", "action": "created", "data": {"name": "m"}}'
    good = webhooks.sign("s3cret", "d-1", STAMP, body)
    with pinned_clock(NOW):
        assert webhooks.verify("s3cret", headers(good), body, 300).event["data"] == {"name": "m"}
        # several space-separated signatures (secret rotation): one valid one suffices
        other = webhooks.sign("old-secret", "d-1", STAMP, body)
        assert webhooks.verify("s3cret", headers(f"{other} {good}"), body, 300)
        for secret, sent, why in [
            (None, good, "no webhook secret"),
            ("s3cret", other, "does not match"),
            ("s3cret", good.replace("v1,", "v2,"), "does not match"),
            ("s3cret", "", "missing"),
        ]:
            with pytest.raises(webhooks.BadDelivery, match=why):
                webhooks.verify(secret, headers(sent), body, 300)
        with pytest.raises(webhooks.BadDelivery, match="off"):
            late = str(int(NOW.timestamp()) - 301)
            webhooks.verify(
                "s3cret", headers(webhooks.sign("s3cret", "d-1", late, b"{}"), late), b"{}", 300
            )
        with pytest.raises(InvalidInput):  # authentic, but not a JSON object
            webhooks.verify(
                "s3cret", headers(webhooks.sign("s3cret", "d-1", STAMP, b"[]")), b"[]", 300
            )
