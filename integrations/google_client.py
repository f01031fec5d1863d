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

from invoicing.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

DEFAULT_TIMEOUT = 30.0
GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
SPREADSHEETS = "https://www.googleapis.com/auth/spreadsheets"
RATE_LIMIT_REASONS = ("rateLimitExceeded", "userRateLimitExceeded")
SCOPE_REASONS = ("insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT")


class GoogleApiClient:
    """A subclass names its API (``API = ("gmail", "v1")``), how its messages begin
    (``_say``), and what only it can tell the seller: the missing scope, what a refused
    token or another status means for it, how to mint new credentials."""

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

    def _http_error(
        self, stage: str, status: int, reason: str, message: str
    ) -> PermanentError | TransientError:
        said = f"{stage}: {status} {reason or ''} {message}".replace("  ", " ").strip()
        if status == 429 or status >= 500 or (status == 403 and reason in RATE_LIMIT_REASONS):
            return TransientError(self._say(said))
        if status == 403 and reason in SCOPE_REASONS:
            return PermanentError(self._say(f"{said} — {self._scope_message()}"))
        if status == 401:
            return PermanentError(
                self._say(f"{said} — Google refused the credentials; {self._fix_credentials()}")
            )
        hint = self._status_hint(status, reason)
        return PermanentError(self._say(f"{said} — {hint}" if hint else said))

    def _refresh_error(self, exc: Any) -> PermanentError | TransientError:
        text = str(exc.args[0]) if exc.args else str(exc)
        if getattr(exc, "retryable", False):
            return TransientError(self._say(f"token refresh failed: {text}"))
        return PermanentError(self._say(self._refused(text)))

    @property
    def _is_service_account(self) -> bool:
        return bool(getattr(self.credentials, "service_account_email", None))

    def _fix_credentials(self) -> str:
        if self._is_service_account:
            return "check the service account's key in GOOGLE_CREDENTIALS (it may be deleted)"
        return self._remint()

    def _refused(self, text: str) -> str:
        """What to say when Google refuses to refresh the token for good."""
        return f"token refresh failed: {text} — {self._fix_credentials()}"

    def _status_hint(self, status: int, reason: str) -> str | None:
        """What another refusal means for this API, if it means something."""
        return None

    def _scope_message(self) -> str:
        raise NotImplementedError

    def _remint(self) -> str:
        raise NotImplementedError

    def _say(self, what: str) -> str:
        raise NotImplementedError
