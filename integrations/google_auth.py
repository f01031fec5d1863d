"""Google credentials from ``GOOGLE_CREDENTIALS``: an authorized user or a service account.

The setting holds JSON, inline or in a file:

- an **authorized user** (``"type": "authorized_user"``): the refresh token a personal Gmail
  account granted to the seller's OAuth client, with that client's id and secret. A saved
  ``token`` is used until its ``expiry``; after that, or without an expiry, the refresh
  token gets a new one.
- a **service account** (``"type": "service_account"``): its private key signs a JWT for
  each token. On Google Workspace it acts for a user (``subject``) once the domain's admin
  enabled domain-wide delegation for it.

When ``GOOGLE_API_ENDPOINT`` is set (tests, emulators), tokens come from
``<GOOGLE_API_ENDPOINT>/token``: google-auth's ``from_authorized_user_info`` always uses
Google's token endpoint, whatever the JSON says, so the endpoint is passed explicitly.

No message ever contains the JSON: it holds a secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.auth.credentials import Credentials

from invoicing.errors import PermanentError, SettingsError, TransientError

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 (an address)
EXPECTED = (
    'GOOGLE_CREDENTIALS: expected the JSON of an authorized user ("type": "authorized_user", '
    'with refresh_token, client_id, client_secret) or of a service account ("type": '
    '"service_account"), inline or as a path to a file'
)


def token_uri_for(api_endpoint: str | None) -> str | None:
    """The token endpoint a test server or emulator plays, or None for the JSON's own."""
    return f"{api_endpoint.rstrip('/')}/token" if api_endpoint else None


def read_info(value: str) -> dict[str, Any]:
    """The credentials JSON as a dict, from inline JSON or a file path."""
    text = value.strip()
    if not text.startswith("{"):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            # A path is not a secret; the file's content is.
            raise SettingsError(
                f"{EXPECTED}; got a value that is neither JSON nor a readable file "
                f"({type(exc).__name__})"
            ) from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        # Only the position: the text around it would be part of the secret.
        raise SettingsError(f"{EXPECTED}; the JSON does not parse (line {exc.lineno})") from None
    if not isinstance(info, dict):
        raise SettingsError(f"{EXPECTED}; got a JSON {type(info).__name__}")
    return info


def kind_of(info: dict[str, Any]) -> str:
    kind = info.get("type")
    if kind is None and "refresh_token" in info:
        kind = "authorized_user"  # google-auth's Credentials.to_json() writes no "type"
    if kind not in ("authorized_user", "service_account"):
        # "installed"/"web" is the OAuth client file, not a token: say so, it is a common slip.
        hint = (
            " (that is the OAuth client file; mint a refresh token with it first)"
            if "installed" in info or "web" in info
            else ""
        )
        raise SettingsError(f"{EXPECTED}; got type {kind!r}{hint}")
    return str(kind)


def load_credentials(
    value: str,
    scopes: list[str],
    subject: str | None = None,
    *,
    api_endpoint: str | None = None,
) -> Credentials:
    """Credentials from ``GOOGLE_CREDENTIALS``; no network until the first token is needed.

    ``subject`` is the Workspace user a service account acts for (ignored for an authorized
    user, whose account is the one that granted the refresh token).
    """
    info = read_info(value)
    if kind_of(info) == "authorized_user":
        return _authorized_user(info, scopes, token_uri_for(api_endpoint))
    return _service_account(info, scopes, subject, token_uri_for(api_endpoint))


def _authorized_user(info: dict[str, Any], scopes: list[str], token_uri: str | None) -> Credentials:
    from google.oauth2.credentials import Credentials as UserCredentials

    missing = [k for k in ("refresh_token", "client_id", "client_secret") if not info.get(k)]
    if missing:
        raise SettingsError(
            f"GOOGLE_CREDENTIALS: the authorized-user JSON lacks {', '.join(missing)}"
        )
    token, expiry = info.get("token") or None, _expiry(info.get("expiry"))
    if expiry is None:
        token = None  # a token of unknown age may be dead: refresh on first use
    granted = info.get("scopes")
    if isinstance(granted, str):
        granted = granted.split()
    # The refresh asks for the scopes the user granted (when the JSON lists them), not for
    # ``scopes``: asking for more than was granted fails the refresh, and with it every call;
    # a missing scope is reported by the API call that needs it.
    return UserCredentials(  # type: ignore[no-untyped-call]
        token=token,
        expiry=expiry,
        refresh_token=info["refresh_token"],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
        token_uri=token_uri or info.get("token_uri") or GOOGLE_TOKEN_URI,
        scopes=granted if isinstance(granted, list) and granted else None,
        quota_project_id=info.get("quota_project_id"),
    )


def _service_account(
    info: dict[str, Any], scopes: list[str], subject: str | None, token_uri: str | None
) -> Credentials:
    from google.oauth2 import service_account

    missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
    if missing:
        raise SettingsError(
            f"GOOGLE_CREDENTIALS: the service-account JSON lacks {', '.join(missing)}"
        )
    if token_uri:
        info = {**info, "token_uri": token_uri}
    try:
        credentials = service_account.Credentials.from_service_account_info(info, scopes=scopes)
    except (ValueError, TypeError) as exc:
        raise SettingsError(
            "GOOGLE_CREDENTIALS: the service account's private_key is not a valid PEM key "
            f"({type(exc).__name__})"
        ) from None
    return credentials.with_subject(subject) if subject else credentials


def _expiry(value: Any) -> datetime | None:
    """``expiry`` as google-auth wants it: naive UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def describe(credentials: Credentials) -> str:
    """Who the credentials act as, for ``invoicehook check`` (no secret)."""
    email = getattr(credentials, "service_account_email", None)
    if email:
        subject = getattr(credentials, "_subject", None)
        return f"service account {email}" + (f" acting for {subject}" if subject else "")
    client_id = getattr(credentials, "client_id", None)
    return f"OAuth refresh token of client {client_id}" if client_id else "Google credentials"


def build_client(
    api: str, version: str, credentials: Any, *, timeout: float, api_endpoint: str | None
) -> Any:
    """A google-api-python-client service from the bundled discovery document (no network
    to discover it), with a timeout, pointed at ``api_endpoint`` when one is set. Its HTTP
    object is not thread-safe: keep one per thread."""
    import google_auth_httplib2
    import httplib2
    from googleapiclient.discovery import build

    # http= rather than credentials=, to set a timeout (the library's default is 60 s).
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(timeout=timeout))
    return build(
        api,
        version,
        http=http,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": api_endpoint} if api_endpoint else None,
    )


def error_of(exc: Any) -> tuple[str, str]:
    """(reason, message) from Google's error JSON: ``{"error": {"errors": [{"reason"}]}}``."""
    try:
        data = json.loads(exc.content.decode("utf-8") if isinstance(exc.content, bytes) else "")
        error = data.get("error", {}) if isinstance(data, dict) else {}
    except (ValueError, AttributeError):
        return "", ""
    if not isinstance(error, dict):
        return "", str(error)
    reasons = [e.get("reason", "") for e in error.get("errors", []) if isinstance(e, dict)]
    details = error.get("details", [])
    # Newer APIs put the reason in details[].reason (ErrorInfo) instead of errors[].reason.
    reasons += [d.get("reason", "") for d in details if isinstance(d, dict)]
    reason = next((r for r in reasons if r), "") or str(error.get("status", ""))
    return reason, str(error.get("message", ""))


@contextmanager
def google_errors(
    stage: str,
    *,
    http_error: Callable[[str, int, str, str], Exception],
    refresh_error: Callable[[Any], Exception],
    say: Callable[[str], str],
) -> Iterator[None]:
    """Turn what google-api-python-client and google-auth raise into our two kinds of error.

    The transport failures are the same for every Google API; what a status or a refused
    token *means* differs per API, so the caller says it (``http_error``, ``refresh_error``).
    """
    import httplib2
    from google.auth import exceptions as auth_exceptions
    from googleapiclient.errors import HttpError

    try:
        yield
    except (PermanentError, TransientError):
        raise
    except HttpError as exc:
        reason, message = error_of(exc)
        raise http_error(stage, int(exc.resp.status), reason, message) from exc
    except auth_exceptions.RefreshError as exc:
        raise refresh_error(exc) from exc
    except auth_exceptions.TransportError as exc:
        raise TransientError(say(f"{stage}: Google unreachable: {exc}")) from exc
    except (OSError, TimeoutError, httplib2.HttpLib2Error) as exc:
        raise TransientError(say(f"{stage} failed: {type(exc).__name__}: {exc}")) from exc
