"""`TAXIIPoller`: incremental polling of one TAXII 2.1 collection with taxii2-client, into an `IntelImport`.

One poller per configured collection URL (``https://host/api-root/collections/<id>/``), with optional HTTP basic
credentials. Each `poll` asks for the objects added after the collection's `TAXIICursor` (TAXII's ``added_after``
filter), follows the server's pages (``more``/``next``), and reads the objects as one STIX bundle per page with
`parse_stix_bundle` (issues are located as ``<collection url> page N: objects[i]...``).

The cursor moves to the server's ``X-TAXII-Date-Added-Last`` header of the last page, so the next poll returns
only what was added since. A server that does not send the header leaves the cursor where it was: the next poll
reads the same objects again (indicators are idempotent; nothing is lost). The cursor moves even when some objects
are malformed: polling again would return the same bad objects, so they are reported once, in the poll's errors.
Persist `TAXIIPoller.cursor` (``to_dict``) after the poll's indicators are stored; a poller built from the
persisted cursor resumes there.

Connection errors, timeouts and 5xx answers are retried `retries` times with exponential backoff
(`backoff_s`, doubled each time, at most `max_backoff_s`); then the poll raises `BackendUnavailableError`. A 401
or 403 raises `InputError` naming the credentials, other 4xx answers `InputError` with the server's status; those
are not retried. Every request has a timeout (`timeout_s`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Collection, as_pages

from vmshadow.domain.errors import BackendUnavailableError, InputError, Issue
from vmshadow.intel.result import IntelImport
from vmshadow.intel.stix import parse_stix_bundle

_DATE_ADDED_LAST = "X-TAXII-Date-Added-Last"


@dataclass(frozen=True, slots=True)
class TAXIICursor:
    """Where the next poll of one collection starts: the server's ``date_added`` of the last object read.

    `added_after` is kept exactly as the server wrote it (a TAXII timestamp string) and sent back unchanged.
    """

    collection_url: str
    added_after: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"collection_url": self.collection_url, "added_after": self.added_after}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TAXIICursor:
        url = data.get("collection_url")
        added_after = data.get("added_after")
        if not isinstance(url, str) or not url:
            raise InputError(Issue(source="taxii cursor", field="collection_url", message="required"))
        if added_after is not None and not isinstance(added_after, str):
            raise InputError(Issue(source="taxii cursor", field="added_after", message="expected a timestamp string"))
        return cls(url, added_after)


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout: taxii2-client passes none, and a poll must end."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        return super().send(request, **kwargs)


class TAXIIPoller:
    """Polls one TAXII 2.1 collection for new objects; see the module docstring for the policies."""

    def __init__(
        self,
        collection_url: str,
        *,
        source: str | None = None,
        user: str | None = None,
        password: str | None = None,
        verify: bool | str = True,
        cursor: TAXIICursor | None = None,
        default_confidence: int = 50,
        page_size: int = 100,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not collection_url.endswith("/"):
            collection_url += "/"  # TAXII URLs end with a slash; taxii2-client appends "objects/"
        if cursor is not None and cursor.collection_url.rstrip("/") != collection_url.rstrip("/"):
            raise ValueError(f"the cursor is for {cursor.collection_url}, not {collection_url}")
        if retries < 0 or page_size < 1 or backoff_s < 0 or timeout_s <= 0:
            raise ValueError("retries and backoff_s must be >= 0, page_size >= 1, timeout_s > 0")
        self.collection_url = collection_url
        self.source = source or collection_url
        self.cursor = cursor or TAXIICursor(collection_url)
        self._user = user
        self._password = password
        self._verify = verify
        self._default_confidence = default_confidence
        self._page_size = page_size
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._collection: Any = None
        self._last_headers: dict[str, str] = {}

    def __repr__(self) -> str:  # never shows the password
        return f"TAXIIPoller({self.collection_url!r}, cursor={self.cursor.added_after!r})"

    def poll(self) -> IntelImport:
        """The objects added since the cursor, read into indicators; moves the cursor past them."""
        collection = self._connect()
        result = IntelImport()
        filters: dict[str, Any] = {}
        if self.cursor.added_after is not None:
            filters["added_after"] = self.cursor.added_after
        date_added_last: str | None = None
        pages = as_pages(self._retrying(collection.get_objects), per_request=self._page_size, **filters)
        number = 0
        while True:
            self._last_headers = {}
            envelope = next(pages, None)  # each request inside is retried by _retrying
            if envelope is None:
                break
            number += 1
            date_added_last = self._last_headers.get(_DATE_ADDED_LAST, date_added_last)
            objects = envelope.get("objects", []) if isinstance(envelope, dict) else None
            location = f"{self.collection_url} page {number}"
            if objects is None:
                result.errors.append(Issue(source=location, message="the server's answer is not a TAXII envelope"))
                continue
            if not objects:
                continue
            bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}
            result.extend(
                parse_stix_bundle(bundle, self.source, location=location, default_confidence=self._default_confidence)
            )
        if date_added_last is not None:
            self.cursor = replace(self.cursor, added_after=date_added_last)
        return result

    def close(self) -> None:
        if self._collection is not None:
            self._collection.close()
            self._collection = None

    def _connect(self) -> Any:
        if self._collection is None:
            collection = Collection(self.collection_url, user=self._user, password=self._password, verify=self._verify)
            # taxii2-client keeps its requests.Session private; the response headers (X-TAXII-Date-Added-Last)
            # and a default timeout are only reachable there
            session: requests.Session = collection._conn.session
            adapter = _TimeoutAdapter(self._timeout_s)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.hooks["response"].append(self._remember_headers)
            self._collection = collection
        return self._collection

    def _remember_headers(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last_headers = dict(response.headers)

    def _retrying(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def attempt(*args: Any, **kwargs: Any) -> Any:
            delay = self._backoff_s
            for tries_left in range(self._retries, -1, -1):
                try:
                    return call(*args, **kwargs)
                except (requests.ConnectionError, requests.Timeout) as exc:
                    problem = f"cannot reach the TAXII server: {exc.__class__.__name__}: {exc}"
                except requests.HTTPError as exc:
                    status = exc.response.status_code if exc.response is not None else 0
                    if status < 500:
                        raise self._refused(status) from None
                    problem = f"the TAXII server answered {status}"
                except TAXIIServiceException as exc:
                    raise InputError(
                        Issue(source=self.collection_url, message=f"not a TAXII 2.1 answer: {exc}")
                    ) from None
                if tries_left == 0:
                    raise BackendUnavailableError(f"{self.collection_url}: {problem} (after {self._retries} retries)")
                self._sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)
            raise AssertionError("unreachable")  # pragma: no cover

        return attempt

    def _refused(self, status: int) -> InputError:
        if status in (401, 403):
            return InputError(
                Issue(
                    source=self.collection_url,
                    field="credentials",
                    message=f"the TAXII server refused them ({status}): check the user and password",
                )
            )
        if status == 404:
            return InputError(Issue(source=self.collection_url, message="no such collection (404)"))
        return InputError(Issue(source=self.collection_url, message=f"the TAXII server refused the request ({status})"))
