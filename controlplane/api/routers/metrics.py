"""``/metrics``: the Prometheus exposition of this API process.

Access: with ``metrics_token`` set (``CONTROLPLANE_METRICS_TOKEN``), only a request bearing
exactly that token is answered, from anywhere; the token is separate from API tokens, so a
scraper holds no principal and no right on the ledger. Unset, only clients on the loopback
network (127.0.0.0/8, ::1) are answered, as is usual for an exporter on the same host; others
get 403. Behind a reverse proxy on the same host every request looks local unless the proxy
sends ``X-Forwarded-For`` (which uvicorn trusts from 127.0.0.1): set a metrics token there.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controlplane.api.deps import CP
from controlplane.errors import Forbidden, Unauthenticated
from controlplane.ops.metrics import Metrics

router = APIRouter(tags=["operations"])
_bearer = HTTPBearer(
    auto_error=False, description="The metrics token (CONTROLPLANE_METRICS_TOKEN), if set."
)


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(
    request: Request,
    cp: CP,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Response:
    """Prometheus metrics of this process (OpenMetrics when the scraper asks for it)."""
    expected = cp.settings.metrics_token
    if expected:
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthenticated("/metrics needs the metrics token (CONTROLPLANE_METRICS_TOKEN)")
    elif not _is_loopback(request.client.host if request.client else None):
        raise Forbidden(
            "/metrics answers only loopback clients unless CONTROLPLANE_METRICS_TOKEN is set"
        )
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.render(request.headers.get("accept"))
    return Response(body, media_type=None, headers={"Content-Type": content_type})
