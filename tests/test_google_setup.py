"""``invoicehook google-auth``: the installed-app OAuth flow against a local fake Google.

No browser: the test reads the authorization URL the flow prints, plays Google's consent
screen by scripting an authorization code in the fake (bound to the redirect URI and the PKCE
challenge of that URL), and plays the browser by following the redirect itself.
"""

from __future__ import annotations

import io
import json
import re
import socket
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from google.auth.transport.requests import Request

from integrations.google_auth import load_credentials
from integrations.google_client import GMAIL_SEND, SPREADSHEETS
from invoicing.errors import SettingsError
from invoicing.google_setup import google_auth_scopes, run_google_auth
from tests.conftest import free_port, wait_until
from tests.google_server import GoogleFake

CLIENT_ID = "1234-desktop.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-desktop-secret"


@pytest.fixture
def google_api(google_api: GoogleFake, monkeypatch: pytest.MonkeyPatch) -> GoogleFake:
    """The shared fake, with oauthlib told to accept its plain-http token endpoint."""
    # The fake's token endpoint is plain http on 127.0.0.1; Google's is https.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    return google_api


def client_secrets(folder: Path, fake: GoogleFake, kind: str = "installed") -> Path:
    """The JSON the Cloud console gives for an OAuth client, pointed at the fake."""
    path = folder / "client_secret.json"
    client = {
        "client_id": CLIENT_ID,
        "project_id": "atelier-123",
        "auth_uri": f"{fake.url}/o/oauth2/auth",
        "token_uri": f"{fake.url}/token",
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_secret": CLIENT_SECRET,
        "redirect_uris": ["http://localhost"],
    }
    path.write_text(json.dumps({kind: client}), encoding="utf-8")
    return path


def auth_url_in(text: str) -> str | None:
    found = re.search(r"(http://127\.0\.0\.1:\d+/o/oauth2/auth\?\S+)", text)
    return found.group(1) if found else None


def wait_for_auth_url(out: io.StringIO, timeout: float = 10) -> str:
    wait_until(lambda: auth_url_in(out.getvalue()), timeout, what="the authorization URL")
    url = auth_url_in(out.getvalue())
    assert url is not None
    return url


def consent(fake: GoogleFake, auth_url: str, code: str, granted: set[str] | None = None) -> str:
    """Play Google's consent screen: script the code, return the redirect the browser gets."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(auth_url).query).items()}
    fake.add_code(
        code,
        query["client_id"],
        CLIENT_SECRET,
        granted if granted is not None else set(query["scope"].split()),
        redirect_uri=query["redirect_uri"],
        code_challenge=query["code_challenge"],
    )
    return redirect(query, code=code)


def redirect(query: dict[str, str], **params: str) -> str:
    separator = "&" if "?" in query["redirect_uri"] else "?"
    return query["redirect_uri"] + separator + urlencode({**params, "state": query["state"]})


class Flow(threading.Thread):
    """``run_google_auth`` in loopback mode, in a thread; ``result`` or ``error`` after join."""

    def __init__(self, secrets_file: Path, scopes: list[str]) -> None:
        super().__init__(daemon=True)
        self.secrets_file, self.scopes = secrets_file, scopes
        self.port = free_port()
        self.out = io.StringIO()
        self.result: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = run_google_auth(
                self.secrets_file,
                scopes=self.scopes,
                console=False,
                open_browser=False,
                port=self.port,
                out=self.out,
            )
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            self.error = exc

    def finish(self) -> None:
        self.join(timeout=20)
        assert not self.is_alive(), "the flow did not finish"


def browse(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


def test_loopback_flow_mints_a_refresh_token(tmp_path: Path, google_api: GoogleFake) -> None:
    scopes = google_auth_scopes(sheets=True)
    assert scopes == [GMAIL_SEND, SPREADSHEETS]
    flow = Flow(client_secrets(tmp_path, google_api), scopes)
    flow.start()
    auth_url = wait_for_auth_url(flow.out)

    query = {k: v[0] for k, v in parse_qs(urlsplit(auth_url).query).items()}
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == f"http://localhost:{flow.port}/"
    assert query["response_type"] == "code"
    assert query["access_type"] == "offline"
    assert query["prompt"] == "consent"
    assert query["scope"].split() == scopes
    assert query["code_challenge_method"] == "S256"

    page = browse(consent(google_api, auth_url, "abc"))
    assert "You may close this window" in page
    flow.finish()
    assert flow.error is None, flow.error
    assert flow.result is not None

    info = json.loads(flow.result)
    (issued,) = google_api.refresh_tokens  # the fake minted exactly one
    assert info["refresh_token"] == issued
    assert info["client_id"] == CLIENT_ID and info["client_secret"] == CLIENT_SECRET
    assert info["scopes"] == scopes
    exchange = google_api.token_requests[-1]
    assert exchange["grant_type"] == "authorization_code" and exchange["code"] == "abc"

    printed = flow.out.getvalue()
    assert flow.result in printed
    assert f"fly secrets set EMAIL_URL=gmail://me GOOGLE_CREDENTIALS='{flow.result}'" in printed
    assert printed.index(flow.result) < printed.index("fly secrets set")
    assert '"Testing"' in printed and "7 days" in printed and "Publish" in printed

    # What was printed is what GOOGLE_CREDENTIALS takes: it refreshes against the fake.
    credentials = load_credentials(flow.result, scopes, api_endpoint=google_api.url)
    credentials.refresh(Request())
    assert google_api.token_requests[-1]["grant_type"] == "refresh_token"
    assert google_api.token_requests[-1]["refresh_token"] == issued


def test_loopback_access_denied(tmp_path: Path, google_api: GoogleFake) -> None:
    flow = Flow(client_secrets(tmp_path, google_api), google_auth_scopes(sheets=False))
    flow.start()
    query = {k: v[0] for k, v in parse_qs(urlsplit(wait_for_auth_url(flow.out)).query).items()}
    browse(redirect(query, error="access_denied"))
    flow.finish()
    assert isinstance(flow.error, SettingsError)
    assert "access_denied" in str(flow.error) and "Allow" in str(flow.error)
    assert google_api.token_requests == []  # nothing exchanged
    assert "fly secrets" not in flow.out.getvalue()


def test_loopback_scope_left_unticked(tmp_path: Path, google_api: GoogleFake) -> None:
    """Granular consent: the user unticks Sheets; the JSON would fail later, so say it now."""
    flow = Flow(client_secrets(tmp_path, google_api), google_auth_scopes(sheets=True))
    flow.start()
    browse(consent(google_api, wait_for_auth_url(flow.out), "abc", granted={GMAIL_SEND}))
    flow.finish()
    assert isinstance(flow.error, SettingsError)
    assert SPREADSHEETS in str(flow.error) and "tick" in str(flow.error)


class Terminal:
    """stdin of a person who opens the printed URL elsewhere and pastes what they land on."""

    def __init__(self, out: io.StringIO, answer: Any) -> None:
        self.out, self.answer = out, answer

    def readline(self, size: int = -1) -> str:
        auth_url = auth_url_in(self.out.getvalue())
        assert auth_url, "the URL must be printed before the flow reads stdin"
        return str(self.answer(auth_url)) + "\n"


def run_console(
    monkeypatch: pytest.MonkeyPatch, secrets_file: Path, answer: Any, scopes: list[str]
) -> tuple[str, str]:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdin", Terminal(out, answer))
    result = run_google_auth(secrets_file, scopes=scopes, console=True, out=out)
    return result, out.getvalue()


def test_console_flow_with_the_pasted_address(
    tmp_path: Path, google_api: GoogleFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    scopes = google_auth_scopes(sheets=False)
    seen: list[str] = []

    def paste(auth_url: str) -> str:
        seen.append(auth_url)
        landed = consent(google_api, auth_url, "4/0console-code")
        assert landed.startswith("http://localhost:1?code=")
        return landed.replace("1?", "1/?", 1)  # as the address bar shows it

    result, printed = run_console(monkeypatch, client_secrets(tmp_path, google_api), paste, scopes)
    query = parse_qs(urlsplit(seen[0]).query)
    assert query["redirect_uri"] == ["http://localhost:1"]
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    info = json.loads(result)
    (issued,) = google_api.refresh_tokens
    assert info["refresh_token"] == issued and info["scopes"] == scopes
    assert google_api.token_requests[-1]["redirect_uri"] == "http://localhost:1"
    assert f"fly secrets set EMAIL_URL=gmail://me GOOGLE_CREDENTIALS='{result}'" in printed
    assert "7 days" in printed
    assert "address bar" in printed


def test_console_flow_with_a_bare_code(
    tmp_path: Path, google_api: GoogleFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def paste(auth_url: str) -> str:
        consent(google_api, auth_url, "4/0bare-code")
        return "4/0bare-code"

    result, _ = run_console(monkeypatch, client_secrets(tmp_path, google_api), paste, [GMAIL_SEND])
    assert json.loads(result)["refresh_token"] in google_api.refresh_tokens


def test_console_access_denied(
    tmp_path: Path, google_api: GoogleFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def paste(auth_url: str) -> str:
        query = {k: v[0] for k, v in parse_qs(urlsplit(auth_url).query).items()}
        return redirect(query, error="access_denied")

    with pytest.raises(SettingsError, match="access_denied"):
        run_console(monkeypatch, client_secrets(tmp_path, google_api), paste, [GMAIL_SEND])
    assert google_api.token_requests == []


def test_console_address_of_another_attempt(
    tmp_path: Path, google_api: GoogleFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def paste(auth_url: str) -> str:
        return "http://localhost:1/?code=abc&state=not-this-one"

    with pytest.raises(SettingsError, match="another attempt"):
        run_console(monkeypatch, client_secrets(tmp_path, google_api), paste, [GMAIL_SEND])


def test_console_nothing_pasted(
    tmp_path: Path, google_api: GoogleFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SettingsError, match="nothing was pasted"):
        run_console(monkeypatch, client_secrets(tmp_path, google_api), lambda _: "", [GMAIL_SEND])


def test_missing_client_secrets_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no client secrets file at .*Desktop app"):
        run_google_auth(tmp_path / "nope.json", scopes=[GMAIL_SEND], console=False)


def test_web_client_is_refused(tmp_path: Path, google_api: GoogleFake) -> None:
    path = client_secrets(tmp_path, google_api, kind="web")
    with pytest.raises(SettingsError) as caught:
        run_google_auth(path, scopes=[GMAIL_SEND], console=False, open_browser=False)
    message = str(caught.value)
    assert "Web application" in message and "redirect" in message and "Desktop app" in message
    assert CLIENT_SECRET not in message


def test_other_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text(json.dumps({"refresh_token": "1//x", "client_secret": "s"}), encoding="utf-8")
    with pytest.raises(SettingsError, match="not an OAuth client; it can go in GOOGLE_CREDENTIALS"):
        run_google_auth(path, scopes=[GMAIL_SEND], console=False)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(SettingsError, match="is not JSON"):
        run_google_auth(path, scopes=[GMAIL_SEND], console=False)
    path.write_text(json.dumps({"installed": {"client_id": "x"}}), encoding="utf-8")
    with pytest.raises(SettingsError, match="lacks client_secret, auth_uri, token_uri"):
        run_google_auth(path, scopes=[GMAIL_SEND], console=False)


def test_busy_port(tmp_path: Path, google_api: GoogleFake) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SettingsError, match=f"cannot listen on localhost:{port}"):
            run_google_auth(
                client_secrets(tmp_path, google_api),
                scopes=[GMAIL_SEND],
                console=False,
                open_browser=False,
                port=port,
                out=io.StringIO(),
            )
