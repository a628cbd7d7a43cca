"""`create_app`: the FastAPI application over one store and one TM."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from vmshadow import __version__
from vmshadow.api import errors, intel, metrics, proposals, recommenders
from vmshadow.api.auth import Tokens
from vmshadow.app.paths import DEFAULT_STATUS
from vmshadow.app.tm import TMSettings
from vmshadow.config.settings import ExportSettings


def create_app(
    db_url: str,
    tm: TMSettings,
    tokens: Tokens,
    *,
    status_path: Path = DEFAULT_STATUS,
    export: ExportSettings | None = None,
) -> FastAPI:
    app = FastAPI(
        title="vmshadow",
        version=__version__,
        description="Proposals from the shadow analysis engine, reviewed by administrators, applied by the TM.",
    )
    errors.install(app)
    app.include_router(proposals.router(db_url, tm, tokens))
    app.include_router(metrics.router(db_url, status_path, tokens, export))
    app.include_router(intel.router(db_url, tokens))
    app.include_router(recommenders.router(db_url, tokens))

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
