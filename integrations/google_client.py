"""What the Gmail mailer and the Sheet ledger share: their credentials, one API client per
thread (httplib2, under google-api-python-client, is not thread-safe) and the transport
half of their error handling (``google_auth.google_errors``).

Nothing of Google's is imported here: the worker imports the ledger at start, and google-auth
and the API client are loaded only when a Sheet or Gmail is first used.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

DEFAULT_TIMEOUT = 30.0


class GoogleApiClient:
    """A subclass names its API (``API = ("gmail", "v1")``) and says what a status or a
    refused token means for it (``_http_error``, ``_refresh_error``) and how its messages
    begin (``_say``)."""

    API: tuple[str, str]

    def __init__(
        self,
        credentials: Credentials,
        *,
        api_endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.credentials = credentials
        self.api_endpoint = api_endpoint
        self.timeout = timeout
        self._local = threading.local()

    def close(self) -> None:
        """Drop this thread's client; other threads' go with their thread."""
        self._local.__dict__.clear()

    def _service(self) -> Any:
        service = getattr(self._local, "service", None)
        if service is None:
            from integrations.google_auth import build_client

            api, version = self.API
            service = build_client(
                api, version, self.credentials, timeout=self.timeout, api_endpoint=self.api_endpoint
            )
            self._local.service = service
        return service

    def _classified(self, stage: str) -> AbstractContextManager[None]:
        from integrations.google_auth import google_errors

        return google_errors(
            stage, http_error=self._http_error, refresh_error=self._refresh_error, say=self._say
        )

    def _http_error(self, stage: str, status: int, reason: str, message: str) -> Exception:
        raise NotImplementedError

    def _refresh_error(self, exc: Any) -> Exception:
        raise NotImplementedError

    def _say(self, what: str) -> str:
        raise NotImplementedError
