"""The REST API (FastAPI): one router per resource, token auth with roles. It decides nothing itself: it calls the
composition roots in `vmshadow.app`, so the API and the CLI share one code path."""
