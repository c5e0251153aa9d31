"""The HTTP API (FastAPI): one router per resource, problem+json errors, bearer tokens."""
