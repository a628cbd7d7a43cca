"""Stable identifiers. Ids derived from content make re-runs idempotent and let duplicates merge."""

from __future__ import annotations

import hashlib


def stable_id(prefix: str, *parts: object) -> str:
    """A short id that depends only on `parts`, e.g. ``prop-3f2a…`` for a proposal's rule."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=10).hexdigest()
    return f"{prefix}-{digest}"
