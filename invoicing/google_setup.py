"""``invoicehook google-auth``: mint the refresh token a personal Gmail account grants.

The seller downloads the JSON of a **Desktop app** OAuth client from the Google Cloud console
and runs the installed-app flow once, on their own computer:

- **loopback** (default): a one-shot server on ``http://localhost:<port>/`` receives Google's
  redirect after the user clicks "Allow" in the browser;
- **console** (``console=True``, a machine with no browser): the user opens the printed URL
  anywhere, and after "Allow" lands on ``http://localhost:1/?code=…``, an error page since
  nothing listens there; they paste that address (or just its ``code``) back. Google retired
  the copy-the-code "oob" redirect, and a desktop client accepts any loopback port.

The result is the authorized-user JSON ``GOOGLE_CREDENTIALS`` takes (it holds the refresh
token and the client secret: it is printed for the seller to copy, never logged).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit, urlunsplit

import requests
from google_auth_oauthlib.flow import InstalledAppFlow
from oauthlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InsecureTransportError,
    MismatchingStateError,
    MissingCodeError,
    OAuth2Error,
)

from integrations.google_client import GMAIL_SEND, SPREADSHEETS
from invoicing.errors import SettingsError

CONSOLE_REDIRECT_URI = "http://localhost:1"
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_CLIENT_KEYS = ("client_id", "client_secret", "auth_uri", "token_uri")

SEVEN_DAY_WARNING = (
    'Warning: an OAuth app left in "Testing" (Google Cloud console > OAuth consent screen) '
    "loses its refresh tokens after 7 days, and invoices stop leaving. Publish the app "
    '("In production") before relying on this token.'
)


def google_auth_scopes(sheets: bool) -> list[str]:
    """The scopes ``invoicehook google-auth`` asks for: gmail.send, plus Sheets on request."""
    return [GMAIL_SEND, SPREADSHEETS] if sheets else [GMAIL_SEND]


class _Flow(InstalledAppFlow):
    """The installed-app flow, announcing its authorization URL where we choose.

    ``run_local_server`` builds the URL itself and prints it to the process's stdout; this
    hook lets the URL go to ``out`` instead (and lets tests read it).
    """

    announce: Callable[[str], None] | None = None

    def authorization_url(self, **kwargs: Any) -> tuple[str, str]:
        url, state = super().authorization_url(**kwargs)
        if self.announce is not None:
            self.announce(url)
        return url, state


def run_google_auth(
    client_secrets: Path,
    *,
    scopes: list[str],
    console: bool,
    open_browser: bool = True,
    port: int = 0,
    out: TextIO = sys.stdout,
) -> str:
    """Run the OAuth flow; print and return the authorized-user JSON.

    Errors a seller can fix (wrong or missing client file, consent refused, scopes left
    unticked, a code Google rejects) raise :class:`SettingsError` with what to do.
    """
    config = _client_config(client_secrets)
    flow = _Flow.from_client_config(config, scopes=scopes)

    def announce(url: str) -> None:
        if console:
            print(
                "Open this address in a browser, sign in and click Allow:\n\n"
                f"    {url}\n\n"
                f"Google then sends the browser to {CONSOLE_REDIRECT_URI}/?code=…, a page that "
                "fails to load: that is expected. Copy the whole address from the address bar "
                "and paste it here.",
                file=out,
                flush=True,
            )
        else:
            print(
                "Sign in and click Allow in the browser"
                + (" that opens" if open_browser else "")
                + "; if none opens, visit:\n\n"
                f"    {url}\n",
                file=out,
                flush=True,
            )

    flow.announce = announce
    asked = {"access_type": "offline", "prompt": "consent"}
    try:
        if console:
            flow.redirect_uri = CONSOLE_REDIRECT_URI
            flow.authorization_url(**asked)
            _fetch_pasted(flow, _read_pasted(out))
        else:
            flow.run_local_server(
                port=port,
                open_browser=open_browser,
                authorization_prompt_message="",
                success_message="invoicehook got the token. You may close this window.",
                **asked,
            )
    except Warning as scope_change:
        _accept_scopes(flow, scope_change, scopes)
    except AccessDeniedError:
        raise SettingsError(
            "google-auth: consent was refused (access_denied). Run it again and click Allow; "
            "if Google said the app is not verified or you are not allowed, add your address "
            "as a test user on the OAuth consent screen, or publish the app"
        ) from None
    except MismatchingStateError:
        raise SettingsError(
            "google-auth: that address belongs to another attempt (its state does not match); "
            "paste the address Google sent this run's browser to"
        ) from None
    except (MissingCodeError, InsecureTransportError):
        raise SettingsError(
            f"google-auth: expected the address the browser landed on, {CONSOLE_REDIRECT_URI}/"
            "?code=…&state=…, or the code itself"
        ) from None
    except OSError as exc:
        if console or not port:
            raise
        raise SettingsError(
            f"google-auth: cannot listen on localhost:{port} ({exc.strerror}); "
            "choose another port, or 0 for any free one"
        ) from None
    except requests.RequestException as exc:
        raise SettingsError(
            f"google-auth: could not reach Google's token endpoint ({type(exc).__name__}); "
            "check the connection and run it again"
        ) from None
    except OAuth2Error as exc:
        # error codes and descriptions from Google hold no secret
        detail = f"{exc.error}: {exc.description}" if exc.description else exc.error
        raise SettingsError(f"google-auth: Google refused the token exchange ({detail})") from None

    credentials = flow.credentials
    if not credentials.refresh_token:
        raise SettingsError(
            "google-auth: Google returned no refresh token; revoke the app's access at "
            "https://myaccount.google.com/permissions and run google-auth again"
        )
    info = credentials.to_json()
    print(
        "\nAuthorized. The GOOGLE_CREDENTIALS JSON (it holds secrets; keep it private):\n", file=out
    )
    print(info, file=out)
    setting = f"GOOGLE_CREDENTIALS={_shell_quote(info)}"
    if GMAIL_SEND in scopes:
        setting = f"EMAIL_URL=gmail://me {setting}"
    print("\nNext step, on your Fly app:\n", file=out)
    print(f"fly secrets set {setting}", file=out)
    print(f"\n{SEVEN_DAY_WARNING}", file=out, flush=True)
    return info


def _client_config(path: Path) -> dict[str, Any]:
    """The client-secrets JSON, refused unless it is a Desktop app ("installed") client."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(
            f"google-auth: no client secrets file at {path}; download it from the Google Cloud "
            "console (APIs & Services > Credentials > your OAuth client ID of type Desktop app "
            "> Download JSON)"
        ) from None
    except OSError as exc:
        raise SettingsError(
            f"google-auth: cannot read {path} ({type(exc).__name__}: {exc.strerror})"
        ) from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        # Only the position: the text holds the client secret.
        raise SettingsError(
            f"google-auth: {path} is not JSON (line {exc.lineno}); expected the OAuth client "
            "file downloaded from the Google Cloud console"
        ) from None
    if not isinstance(config, dict):
        raise SettingsError(f"google-auth: {path} is not an OAuth client file (a JSON object)")
    if "installed" not in config:
        if "web" in config:
            hint = (
                'is a "Web application" OAuth client, which only redirects to URIs registered '
                "in the console, so the local redirect would be refused (redirect_uri_mismatch)"
                '; create an OAuth client ID of type "Desktop app" and use its JSON'
            )
        elif config.get("type") in ("authorized_user", "service_account") or (
            "refresh_token" in config
        ):
            hint = (
                f"holds credentials ({config.get('type') or 'authorized_user'}), not an OAuth "
                "client; it can go in GOOGLE_CREDENTIALS as it is"
            )
        else:
            hint = 'is not an OAuth client file (no "installed" section)'
        raise SettingsError(f"google-auth: {path} {hint}")
    client = config["installed"]
    missing = [k for k in _CLIENT_KEYS if not (isinstance(client, dict) and client.get(k))]
    if missing:
        raise SettingsError(
            f"google-auth: the Desktop app client in {path} lacks {', '.join(missing)}; "
            "download its JSON again"
        )
    return {"installed": client}


def _read_pasted(out: TextIO) -> str:
    print("Address (or code): ", end="", file=out, flush=True)
    line = sys.stdin.readline()
    pasted = line.strip()
    if not pasted:
        raise SettingsError("google-auth: nothing was pasted; run it again")
    return pasted


def _fetch_pasted(flow: InstalledAppFlow, pasted: str) -> None:
    """Exchange what the user pasted: the loopback address they landed on, or a bare code."""
    if "://" not in pasted and "=" not in pasted:
        flow.fetch_token(code=pasted)
        return
    if "://" not in pasted:  # "code=…&state=…" or "?code=…" without the address
        pasted = f"{CONSOLE_REDIRECT_URI}/?{pasted.lstrip('?')}"
    parts = urlsplit(pasted)
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.netloc):
        # The redirect never leaves the user's machine; oauthlib insists on https for any
        # URL it parses, so say https for this one address (as run_local_server does) rather
        # than relaxing OAUTHLIB_INSECURE_TRANSPORT for every request of the process.
        pasted = urlunsplit(parts._replace(scheme="https"))
    if not {"code", "error"} & set(parse_qs(parts.query)):
        raise SettingsError(
            f"google-auth: that address has no code; paste the whole address the browser "
            f"landed on ({CONSOLE_REDIRECT_URI}/?code=…&state=…)"
        )
    flow.fetch_token(authorization_response=pasted)


def _is_loopback(netloc: str) -> bool:
    host = netloc.rpartition("@")[2]
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return host in _LOOPBACK_HOSTS


def _accept_scopes(flow: InstalledAppFlow, change: Warning, scopes: list[str]) -> None:
    """Google granted other scopes than asked (granular consent): fine unless one is missing."""
    token = getattr(change, "token", None)
    if token is None:
        raise change
    granted = set(getattr(change, "new_scope", None) or [])
    missing = [s for s in scopes if s not in granted]
    if missing:
        raise SettingsError(
            "google-auth: the consent screen left unticked "
            + ", ".join(missing)
            + "; run it again and tick every box"
        ) from None
    flow.oauth2session.token = token


def _shell_quote(value: str) -> str:
    """``value`` in single quotes for a POSIX shell."""
    return "'" + value.replace("'", "'\\''") + "'"
