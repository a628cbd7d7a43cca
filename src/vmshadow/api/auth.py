"""Token auth with roles.

Tokens are never stored in clear: the tokens file lists each token's SHA-256 with a name and a role. Roles are
ordered viewer < analyst < approver < admin; `intel-feed` stands apart and may only add indicators.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vmshadow.domain.errors import InputError, Issue


class Role(StrEnum):
    VIEWER = "viewer"
    ANALYST = "analyst"
    APPROVER = "approver"
    ADMIN = "admin"
    INTEL_FEED = "intel-feed"


_RANK = {Role.VIEWER: 1, Role.ANALYST: 2, Role.APPROVER: 3, Role.ADMIN: 4}


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role

    def may(self, needed: Role) -> bool:
        if needed is Role.INTEL_FEED:
            return self.role in (Role.INTEL_FEED, Role.ADMIN)
        return self.role in _RANK and _RANK[self.role] >= _RANK[needed]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Tokens:
    """SHA-256 of a token -> who holds it."""

    by_digest: Mapping[str, Principal]

    def find(self, token: str) -> Principal | None:
        digest = token_digest(token)
        for known, principal in self.by_digest.items():
            if hmac.compare_digest(known, digest):  # constant time: no timing oracle on tokens
                return principal
        return None


def load_tokens(path: Path) -> Tokens:
    """`tokens: [{name: alice, role: approver, sha256: <hex>}, ...]`; every bad entry is reported."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(Issue(source=str(path), message=f"cannot read tokens: {exc}")) from None
    entries = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise InputError(Issue(source=str(path), field="tokens", message="expected a list of tokens"))
    issues, found = [], {}
    for i, entry in enumerate(entries):
        where = f"tokens[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "role", "sha256"}:
            issues.append(Issue(source=str(path), field=where, message="needs exactly name, role and sha256"))
            continue
        try:
            role = Role(entry["role"])
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            issues.append(Issue(source=str(path), field=f"{where}.role", message=f"unknown role; one of {allowed}"))
            continue
        digest = str(entry["sha256"]).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            issues.append(Issue(source=str(path), field=f"{where}.sha256", message="not a SHA-256 hex digest"))
            continue
        found[digest] = Principal(str(entry["name"]), role)
    if issues:
        raise InputError(issues)
    return Tokens(found)


_bearer = HTTPBearer(auto_error=False)


def requires(tokens: Tokens, role: Role) -> Callable[..., Principal]:
    """A FastAPI dependency: the caller's principal, if its token holds at least `role` (401/403 otherwise)."""

    def dependency(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:  # noqa: B008
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required")
        principal = tokens.find(credentials.credentials)
        if principal is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token")
        if not principal.may(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role} may not do this ({role} needed)")
        return principal

    return dependency
