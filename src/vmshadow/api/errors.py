"""vmshadow errors as HTTP answers: every issue with its location; nothing half-done behind a 4xx."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from vmshadow.domain.errors import (
    BackendUnavailableError,
    EnforcementError,
    IllegalTransitionError,
    InputError,
    NotFoundError,
    VmshadowError,
)


def _status(exc: VmshadowError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, IllegalTransitionError):
        return 409
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, EnforcementError):
        return 502
    if isinstance(exc, BackendUnavailableError):
        return 503
    return 500


def install(app: FastAPI) -> None:
    @app.exception_handler(VmshadowError)
    async def vmshadow_error(request: Request, exc: VmshadowError) -> JSONResponse:
        body: dict[str, object] = {"error": type(exc).__name__}
        if isinstance(exc, InputError):
            body["issues"] = [
                {"source": i.source, "line": i.line, "field": i.field, "message": i.message} for i in exc.issues
            ]
        else:
            body["message"] = str(exc)
        return JSONResponse(status_code=_status(exc), content=body)
