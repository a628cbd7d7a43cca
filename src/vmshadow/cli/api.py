"""`vmshadow api`: serve the REST API (OpenAPI at /docs and /openapi.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from vmshadow.api.app import create_app
from vmshadow.api.auth import load_tokens
from vmshadow.app.tm import DEFAULT_BRIDGE, DEFAULT_DB, TMSettings
from vmshadow.cli.analyze import db_url
from vmshadow.cli.output import fail
from vmshadow.config.settings import load_settings
from vmshadow.domain.errors import VmshadowError


def api(
    tokens: Annotated[Path, typer.Option("--tokens", help="Tokens file: name, role, sha256 of each token.")],
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8080,
    db: Annotated[str, typer.Option("--db", help="SQLite file path or database URL.")] = DEFAULT_DB,
    bridge: Annotated[list[str] | None, typer.Option("--bridge", help="Managed bridge (repeatable).")] = None,
    settings_file: Annotated[
        Path | None, typer.Option("--settings", help="Settings file: /metrics shows its export sinks' queues.")
    ] = None,
) -> None:
    """Serve the approval queue over HTTP with token auth (viewer, analyst, approver, admin, intel-feed)."""
    try:
        known = load_tokens(tokens)
        # only the queues are read here: webhook secrets stay in the environment of the process that sends
        settings = load_settings(settings_file, resolve_secrets=False) if settings_file is not None else None
    except VmshadowError as exc:
        fail(exc)
    url = db_url(db)
    tm = TMSettings(db_url=url, bridges=tuple(bridge or [DEFAULT_BRIDGE]))
    app = create_app(url, tm, known, export=settings.export if settings is not None else None)
    uvicorn.run(app, host=host, port=port, log_level="info")
