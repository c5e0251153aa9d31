"""Operations: Prometheus metrics, structured logs with request ids, checkpoint witnessing.

Nothing here is on the path that decides or records an action: metrics and witnesses are fed
by the ledger's post-commit listeners, logs by the API's request middleware. These modules do
not import FastAPI (the HTTP pieces live in :mod:`controlplane.api.observability`).
"""
