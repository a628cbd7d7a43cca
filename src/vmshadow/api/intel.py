"""`/intel`: feeds push STIX 2.1 bundles and MISP events. A document with any error is refused with 400 listing
every error (object and field), and nothing of it is stored."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends

from vmshadow.api.auth import Principal, Role, Tokens, requires
from vmshadow.app.intel import store_import
from vmshadow.intel.misp import parse_misp_event
from vmshadow.intel.result import IntelImport
from vmshadow.intel.stix import parse_stix_bundle


def _answer(db_url: str, result: IntelImport) -> dict[str, Any]:
    report = store_import(db_url, result)  # raises InputError (400) on any error: all or nothing
    return {"stored": report.stored, "skipped": [str(i) for i in report.skipped]}


def router(db_url: str, tokens: Tokens) -> APIRouter:
    r = APIRouter(prefix="/intel", tags=["intel"])
    feed = Depends(requires(tokens, Role.INTEL_FEED))

    @r.post("/stix")
    def stix(bundle: dict[str, Any] = Body(...), who: Principal = feed) -> dict[str, Any]:  # noqa: B008
        return _answer(db_url, parse_stix_bundle(bundle, f"api:{who.name}", location="body"))

    @r.post("/misp")
    def misp(event: dict[str, Any] = Body(...), who: Principal = feed) -> dict[str, Any]:  # noqa: B008
        return _answer(db_url, parse_misp_event(event, f"api:{who.name}"))

    return r
