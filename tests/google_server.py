"""A local HTTP server playing Google: the OAuth token endpoint, Gmail v1 and Sheets v4
(spreadsheets.get/batchUpdate — addSheet, repeatCell — and values.get/append/batchUpdate/clear).

The token endpoint answers the ``authorization_code`` grant (codes scripted with
``add_code``), ``refresh_token`` and the service accounts' JWT bearer grant.

Point the code at it with ``GOOGLE_API_ENDPOINT=<fake.url>`` (tokens then come from
``<fake.url>/token``). Each API request is checked against the discovery document bundled
with google-api-python-client (method, path, query parameters and their enums, JSON body
keys); a mismatch is answered 400 and kept in ``fake.violations``, which tests expect empty.

Tokens are real in the sense that matters: an access token is only accepted while it has not
expired and only for the scopes it was granted; service-account JWTs are verified with the
public key the test registers.

Tests get one from the ``google_api`` fixture (tests/conftest.py), which wraps
:func:`running`; ``user_credentials`` and ``service_account_credentials`` give the
GOOGLE_CREDENTIALS JSON of a seller the fake knows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from googleapiclient.discovery_cache import get_static_doc

from integrations.google_client import GMAIL_SEND

GMAIL_SCOPES = {
    "https://mail.google.com/",
    "https://www.googleapis.com/auth/gmail.compose",
    "https://www.googleapis.com/auth/gmail.modify",
    "https://www.googleapis.com/auth/gmail.send",
}
SHEETS_SCOPES = {"https://www.googleapis.com/auth/spreadsheets"}
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The seller's OAuth client and refresh token, and the service account, that tests use.
REFRESH_TOKEN = "1//0refresh-token-of-zoe"
CLIENT_ID = "1234-abc.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-client-secret"
SA_EMAIL = "invoicehook@atelier-123.iam.gserviceaccount.com"

_DOCS = {name: json.loads(get_static_doc(name, "v4" if name == "sheets" else "v1") or "{}")
         for name in ("gmail", "sheets")}  # fmt: skip


def _method(api: str, dotted: str) -> dict[str, Any]:
    """The discovery entry of e.g. ``users.messages.send``."""
    node: dict[str, Any] = _DOCS[api]
    *resources, name = dotted.split(".")
    for resource in resources:
        node = node["resources"][resource]
    return node["methods"][name]


class Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str, grpc: str = "") -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.grpc = grpc or {
            400: "INVALID_ARGUMENT",
            401: "UNAUTHENTICATED",
            403: "PERMISSION_DENIED",
            404: "NOT_FOUND",
            429: "RESOURCE_EXHAUSTED",
        }.get(status, "UNAVAILABLE" if status == 503 else "INTERNAL")

    def body(self) -> dict[str, Any]:
        errors = [{"message": self.message, "domain": "global", "reason": self.reason}]
        error = {"code": self.status, "message": self.message, "status": self.grpc}
        return {"error": {**error, "errors": errors}}


@dataclass
class Sent:
    user_id: str
    message: EmailMessage
    token_subject: str | None


@dataclass
class GoogleFake:
    """State and scripting of the fake; its attributes are what tests look at."""

    url: str = ""
    expires_in: int = 3600
    # refresh token -> (client_id, client_secret, scopes it was granted)
    refresh_tokens: dict[str, tuple[str, str, set[str]]] = field(default_factory=dict)
    # authorization code -> (client_id, client_secret, scopes granted, redirect_uri or None,
    # PKCE S256 code_challenge or None); each code works once
    auth_codes: dict[str, tuple[str, str, set[str], str | None, str | None]] = field(
        default_factory=dict
    )
    # service account email -> PEM public key
    service_accounts: dict[str, bytes] = field(default_factory=dict)
    # service accounts whose domain-wide delegation is not enabled (JWTs with "sub" refused)
    undelegated: set[str] = field(default_factory=set)
    refuse_refresh: str | None = None  # e.g. "invalid_grant": every refresh fails so
    delay: float = 0.0  # seconds added to every API call (benchmarks)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method id, decoded path)
    violations: list[str] = field(default_factory=list)
    # spreadsheet id -> tab title -> rows
    sheets: dict[str, dict[str, list[list[Any]]]] = field(default_factory=dict)
    # Who the sheets are shared with (a user or service account email); empty: everyone.
    shared: set[str] = field(default_factory=set)
    value_input_options: list[str] = field(default_factory=list)
    # (valueInputOption, range, values) of every values.batchUpdate item
    value_writes: list[tuple[str, str, list[list[Any]]]] = field(default_factory=list)
    # (spreadsheet id, request) of every spreadsheets.batchUpdate request (formats, new tabs)
    sheet_requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # access token -> (expires at, scopes, subject, service account email)
    _tokens: dict[str, tuple[float, set[str], str | None, str | None]] = field(default_factory=dict)
    _failures: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- scripting --------------------------------------------------------------------------

    def add_user(
        self, refresh_token: str, client_id: str, client_secret: str, scopes: set[str]
    ) -> None:
        self.refresh_tokens[refresh_token] = (client_id, client_secret, set(scopes))

    def add_code(
        self,
        code: str,
        client_id: str,
        client_secret: str,
        scopes: set[str],
        redirect_uri: str | None = None,
        code_challenge: str | None = None,
    ) -> None:
        """An authorization code as Google's consent screen would hand the browser."""
        self.auth_codes[code] = (
            client_id,
            client_secret,
            set(scopes),
            redirect_uri,
            code_challenge,
        )

    def fail_next(self, api: str, status: int, reason: str = "", times: int = 1) -> None:
        """The next ``times`` calls to ``api`` ("gmail" or "sheets") answer ``status``."""
        reason = reason or {429: "rateLimitExceeded", 503: "backendError"}.get(status, "")
        with self.lock:
            self._failures.setdefault(api, []).extend([(status, reason)] * times)

    def issue_token(
        self,
        scopes: set[str],
        subject: str | None = None,
        ttl: float = 3600,
        service_account: str | None = None,
    ) -> str:
        """An access token as /token would give (for tests that bring their own)."""
        token = "ya29." + secrets.token_urlsafe(16)
        with self.lock:
            self._tokens[token] = (time.time() + ttl, set(scopes), subject, service_account)
        return token

    def messages_to(self, address: str) -> list[EmailMessage]:
        return [
            s.message
            for s in self.sent
            if any(a.addr_spec == address for a in s.message["To"].addresses)
        ]

    def new_sheet(self, spreadsheet_id: str, *tabs: str) -> None:
        self.sheets[spreadsheet_id] = {tab: [] for tab in (tabs or ("Sheet1",))}

    # -- token endpoint ---------------------------------------------------------------------

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.token_requests.append(form)
        if self.refuse_refresh:
            return 400, {"error": self.refuse_refresh, "error_description": "Bad Request"}
        grant = form.get("grant_type")
        subject: str | None = None
        service_account: str | None = None
        refresh_token: str | None = None
        if grant == "authorization_code":
            with self.lock:
                known_code = self.auth_codes.pop(form.get("code", ""), None)
            if known_code is None or not self._code_matches(known_code, form):
                return 400, {"error": "invalid_grant", "error_description": "Bad Request"}
            scopes = known_code[2]
            refresh_token = "1//0" + secrets.token_urlsafe(24)
            self.add_user(refresh_token, known_code[0], known_code[1], scopes)
        elif grant == "refresh_token":
            known = self.refresh_tokens.get(form.get("refresh_token", ""))
            if known is None or known[:2] != (form.get("client_id"), form.get("client_secret")):
                return 400, {"error": "invalid_grant", "error_description": "Bad Request"}
            scopes = known[2]
            asked = set(form.get("scope", "").split())
            if asked - scopes:
                return 400, {"error": "invalid_scope", "error_description": "Bad Request"}
            scopes = asked or scopes
        elif grant == JWT_BEARER:
            claims = self._verify_jwt(form.get("assertion", ""))
            if claims is None:
                return 400, {"error": "invalid_grant", "error_description": "Invalid JWT"}
            scopes = set(str(claims.get("scope", "")).split())
            subject = claims.get("sub")
            service_account = claims["iss"]
            if subject and service_account in self.undelegated:
                return 401, {
                    "error": "unauthorized_client",
                    "error_description": "Client is unauthorized to retrieve access tokens "
                    "using this method, or client not authorized for any of the scopes requested.",
                }
        else:
            return 400, {"error": "unsupported_grant_type"}
        token = self.issue_token(scopes, subject, self.expires_in, service_account)
        answer: dict[str, Any] = {
            "access_token": token,
            "expires_in": self.expires_in,
            "scope": " ".join(sorted(scopes)),
            "token_type": "Bearer",
        }
        if refresh_token:
            answer["refresh_token"] = refresh_token
        return 200, answer

    @staticmethod
    def _code_matches(
        known: tuple[str, str, set[str], str | None, str | None], form: dict[str, str]
    ) -> bool:
        """Client, redirect URI and PKCE verifier of an authorization_code exchange."""
        client_id, client_secret, _, redirect_uri, challenge = known
        if (form.get("client_id"), form.get("client_secret")) != (client_id, client_secret):
            return False
        if redirect_uri is not None and form.get("redirect_uri") != redirect_uri:
            return False
        if challenge is not None:
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != challenge:
                return False
        return True

    def _verify_jwt(self, assertion: str) -> dict[str, Any] | None:
        from google.auth import jwt

        try:
            unverified = jwt.decode(assertion, verify=False)
            key = self.service_accounts[unverified["iss"]]
            # google-auth sets aud to Google's token endpoint whatever token_uri says.
            audiences = ["https://oauth2.googleapis.com/token", f"{self.url}/token"]
            claims = jwt.decode(assertion, certs=key, audience=audiences)
        except (KeyError, ValueError):
            return None
        return dict(claims)

    # -- API calls --------------------------------------------------------------------------

    def authorise(self, header: str, wanted: set[str]) -> tuple[str | None, str | None]:
        """(subject, service account) of the token; a :class:`Refusal` when the token is
        missing, expired or lacks the scope."""
        token = header[7:] if header.startswith("Bearer ") else ""
        with self.lock:
            found = self._tokens.get(token)
        if found is None or found[0] < time.time():
            raise Refusal(401, "authError", "Request had invalid authentication credentials.")
        if not found[1] & wanted:
            raise Refusal(
                403, "insufficientPermissions", "Request had insufficient authentication scopes."
            )
        return found[2], found[3]

    def scripted_failure(self, api: str) -> None:
        with self.lock:
            queue = self._failures.get(api)
            failure = queue.pop(0) if queue else None
        if failure is not None:
            status, reason = failure
            raise Refusal(status, reason, f"scripted {status} {reason}".strip())

    def check_shape(
        self, api: str, method_id: str, http_method: str, query: dict[str, list[str]], body: Any
    ) -> None:
        """Hold the request to the discovery document; a 400 (and a violation) if it strays."""
        method = _method(api, method_id)
        problems = []
        if http_method != method["httpMethod"]:
            problems.append(f"{method_id}: {http_method}, expected {method['httpMethod']}")
        params = {**_DOCS[api]["parameters"], **method.get("parameters", {})}
        for name, values in query.items():
            spec = params.get(name)
            if spec is None or spec.get("location") == "path":
                problems.append(f"{method_id}: unknown query parameter {name}")
            elif spec.get("enum") and any(v not in spec["enum"] for v in values):
                problems.append(f"{method_id}: {name}={values} not in {spec['enum']}")
        for name, spec in method.get("parameters", {}).items():
            if spec.get("required") and spec.get("location") == "query" and name not in query:
                problems.append(f"{method_id}: missing required {name}")
        request = method.get("request")
        if request is not None:
            schema = _DOCS[api]["schemas"][request["$ref"]]
            if not isinstance(body, dict):
                problems.append(f"{method_id}: body is not a JSON object")
            else:
                unknown = set(body) - set(schema["properties"])
                if unknown:
                    problems.append(f"{method_id}: unknown body keys {sorted(unknown)}")
        elif body is not None:
            problems.append(f"{method_id}: takes no body")
        if problems:
            self.violations.extend(problems)
            raise Refusal(400, "invalidArgument", "; ".join(problems))

    # Gmail ---------------------------------------------------------------------------------

    def gmail_send(self, user_id: str, auth: str, query: dict[str, list[str]], body: Any) -> Any:
        self.check_shape("gmail", "users.messages.send", "POST", query, body)
        subject, service_account = self.authorise(auth, GMAIL_SCOPES)
        self.scripted_failure("gmail")
        if service_account and not subject:
            raise Refusal(400, "failedPrecondition", "Precondition check failed.")
        if user_id != "me" and user_id != subject:
            raise Refusal(403, "forbidden", "Delegation denied for " + (subject or "this token"))
        raw = body.get("raw")
        if not isinstance(raw, str) or not raw:
            raise Refusal(400, "invalidArgument", "Invalid value for ByteString: raw")
        try:
            data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except ValueError:
            raise Refusal(400, "invalidArgument", "Invalid value for ByteString: raw") from None
        message = message_from_bytes(data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        if not message["To"]:
            raise Refusal(400, "invalidArgument", "Recipient address required")
        with self.lock:
            self.sent.append(Sent(user_id, message, subject))
            number = len(self.sent)
        return {"id": f"18c{number:013x}", "threadId": f"18c{number:013x}", "labelIds": ["SENT"]}

    # Sheets --------------------------------------------------------------------------------

    def _sheet(self, auth: str, spreadsheet_id: str) -> dict[str, list[list[Any]]]:
        subject, service_account = self.authorise(auth, SHEETS_SCOPES)
        self.scripted_failure("sheets")
        who = subject or service_account or ""
        sheet = self.sheets.get(spreadsheet_id)
        if sheet is None:
            raise Refusal(404, "notFound", "Requested entity was not found.")
        if self.shared and "*" not in self.shared and who not in self.shared:
            raise Refusal(403, "forbidden", "The caller does not have permission")
        return sheet

    def spreadsheet_get(self, sid: str, auth: str, query: dict[str, list[str]]) -> Any:
        self.check_shape("sheets", "spreadsheets.get", "GET", query, None)
        sheet = self._sheet(auth, sid)
        return {
            "spreadsheetId": sid,
            "properties": {"title": f"Sheet {sid}", "locale": "fr_FR", "timeZone": "Europe/Paris"},
            "sheets": [
                {
                    "properties": {
                        "sheetId": index,
                        "title": title,
                        "index": index,
                        "sheetType": "GRID",
                        "gridProperties": {"rowCount": max(1000, len(rows)), "columnCount": 26},
                    }
                }
                for index, (title, rows) in enumerate(sheet.items())
            ],
            "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{sid}/edit",
        }

    def values_get(self, sid: str, a1: str, auth: str, query: dict[str, list[str]]) -> Any:
        self.check_shape("sheets", "spreadsheets.values.get", "GET", query, None)
        sheet = self._sheet(auth, sid)
        ref = _parse_a1(a1, sheet)
        rows = sheet[ref.tab]
        last_row = min(ref.row2 or len(rows), len(rows))
        render = query.get("valueRenderOption", ["FORMATTED_VALUE"])[0]
        picked = []
        for row in rows[ref.row1 - 1 : last_row]:
            cells = row[ref.col1 - 1 : ref.col2 if ref.col2 else None]
            while cells and cells[-1] in ("", None):
                cells = cells[:-1]
            picked.append([_render(c, render) for c in cells])
        while picked and not picked[-1]:
            picked.pop()
        answer: dict[str, Any] = {"range": ref.text, "majorDimension": "ROWS"}
        if picked:
            answer["values"] = picked  # Google leaves the key out for an empty range
        return answer

    def values_append(
        self, sid: str, a1: str, auth: str, query: dict[str, list[str]], body: Any
    ) -> Any:
        self.check_shape("sheets", "spreadsheets.values.append", "POST", query, body)
        option = query.get("valueInputOption", [""])[0]
        if option not in ("RAW", "USER_ENTERED"):
            raise Refusal(400, "badRequest", "'valueInputOption' is required but not specified")
        sheet = self._sheet(auth, sid)
        ref = _parse_a1(a1, sheet)
        values = body.get("values") or []
        rows = sheet[ref.tab]
        with self.lock:
            self.value_input_options.append(option)
            start = len(rows) + 1
            for row in values:
                stored = [_entered(v, option) for v in row]
                rows.append([""] * (ref.col1 - 1) + stored)
        width = max((len(r) for r in values), default=0)
        first, last = _column(ref.col1), _column(ref.col1 + max(width, 1) - 1)
        updated = f"{_quote(ref.tab)}!{first}{start}:{last}{start + len(values) - 1}"
        return {
            "spreadsheetId": sid,
            "tableRange": f"{_quote(ref.tab)}!A1:{last}{start - 1}" if start > 1 else None,
            "updates": {
                "spreadsheetId": sid,
                "updatedRange": updated,
                "updatedRows": len(values),
                "updatedColumns": width,
                "updatedCells": sum(len(r) for r in values),
            },
        }

    def values_batch_update(
        self, sid: str, auth: str, query: dict[str, list[str]], body: Any
    ) -> Any:
        self.check_shape("sheets", "spreadsheets.values.batchUpdate", "POST", query, body)
        option = body.get("valueInputOption", "")
        if option not in ("RAW", "USER_ENTERED"):
            raise Refusal(400, "badRequest", "'valueInputOption' is required but not specified")
        sheet = self._sheet(auth, sid)
        responses: list[dict[str, Any]] = []
        with self.lock:
            self.value_input_options.append(option)
            for item in body.get("data", []):
                ref = _parse_a1(item["range"], sheet)
                rows = sheet[ref.tab]
                values = item.get("values") or []
                self.value_writes.append((option, item["range"], values))
                for offset, row in enumerate(values):
                    index = ref.row1 - 1 + offset
                    while len(rows) <= index:
                        rows.append([])
                    target = rows[index]
                    for col, value in enumerate(row, start=ref.col1 - 1):
                        while len(target) <= col:
                            target.append("")
                        target[col] = _entered(value, option)
                responses.append(
                    {
                        "spreadsheetId": sid,
                        "updatedRange": ref.text,
                        "updatedRows": len(values),
                        "updatedColumns": max((len(r) for r in values), default=0),
                        "updatedCells": sum(len(r) for r in values),
                    }
                )
        return {
            "spreadsheetId": sid,
            "totalUpdatedRows": sum(r["updatedRows"] for r in responses),
            "totalUpdatedColumns": max((r["updatedColumns"] for r in responses), default=0),
            "totalUpdatedCells": sum(r["updatedCells"] for r in responses),
            "totalUpdatedSheets": len({r["updatedRange"].split("!")[0] for r in responses}),
            "responses": responses,
        }

    def values_clear(
        self, sid: str, a1: str, auth: str, query: dict[str, list[str]], body: Any
    ) -> Any:
        self.check_shape("sheets", "spreadsheets.values.clear", "POST", query, body)
        sheet = self._sheet(auth, sid)
        ref = _parse_a1(a1, sheet)
        with self.lock:
            rows = sheet[ref.tab]
            last = min(ref.row2 or len(rows), len(rows))
            for row in rows[ref.row1 - 1 : last]:
                end = min(ref.col2 or len(row), len(row))
                for col in range(ref.col1 - 1, end):
                    row[col] = ""
            while rows and not any(c not in ("", None) for c in rows[-1]):
                rows.pop()
        return {"spreadsheetId": sid, "clearedRange": ref.text}

    def spreadsheet_batch_update(
        self, sid: str, auth: str, query: dict[str, list[str]], body: Any
    ) -> Any:
        self.check_shape("sheets", "spreadsheets.batchUpdate", "POST", query, body)
        sheet = self._sheet(auth, sid)
        replies: list[dict[str, Any]] = []
        with self.lock:
            for request in body.get("requests", []):
                self.sheet_requests.append((sid, request))
                if "addSheet" in request:
                    title = request["addSheet"].get("properties", {}).get("title", "")
                    if title in sheet:
                        raise Refusal(400, "badRequest", f'A sheet with the name "{title}" exists')
                    sheet[title] = []
                    index = list(sheet).index(title)
                    replies.append({"addSheet": {"properties": {"sheetId": index, "title": title}}})
                elif "repeatCell" in request:
                    replies.append({})
                else:
                    raise Refusal(400, "badRequest", f"the fake does not play {sorted(request)}")
        return {"spreadsheetId": sid, "replies": replies}


# -- A1 notation ------------------------------------------------------------------------------


@dataclass
class _Ref:
    tab: str
    col1: int
    row1: int
    col2: int | None  # None: to the last column
    row2: int | None  # None: to the last row
    text: str


_CELL = re.compile(r"^([A-Z]*)(\d*)$")


def _parse_a1(a1: str, sheet: dict[str, list[list[Any]]]) -> _Ref:
    tab, _, cells = a1.rpartition("!")
    if not tab:
        bare = a1[1:-1].replace("''", "'") if len(a1) > 1 and a1[0] == a1[-1] == "'" else a1
        tab, cells = (bare, "") if bare in sheet else (next(iter(sheet)), a1)
    if cells and tab.startswith("'") and tab.endswith("'"):
        tab = tab[1:-1].replace("''", "'")
    if tab not in sheet:
        raise Refusal(400, "badRequest", f"Unable to parse range: {a1}")
    if not cells:
        return _Ref(tab, 1, 1, None, None, f"{_quote(tab)}!A1:Z{max(len(sheet[tab]), 1)}")
    start, _, end = cells.upper().partition(":")
    m1, m2 = _CELL.match(start), _CELL.match(end or start)
    if not m1 or not m2 or not (m1.group(1) or m1.group(2)):
        raise Refusal(400, "badRequest", f"Unable to parse range: {a1}")
    col1 = _column_number(m1.group(1)) if m1.group(1) else 1
    row1 = int(m1.group(2)) if m1.group(2) else 1
    col2 = _column_number(m2.group(1)) if m2.group(1) else None
    row2 = int(m2.group(2)) if m2.group(2) else None
    return _Ref(tab, col1, row1, col2, row2, f"{_quote(tab)}!{cells.upper()}")


def _column_number(letters: str) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - 64
    return number


def _column(number: int) -> str:
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _quote(tab: str) -> str:
    return tab if re.fullmatch(r"[A-Za-z0-9_]+", tab) else "'" + tab.replace("'", "''") + "'"


def _entered(value: Any, option: str) -> Any:
    """What the cell holds: RAW keeps text as text; USER_ENTERED parses "=…" as a formula."""
    if option == "USER_ENTERED" and isinstance(value, str) and value.startswith("="):
        return {"formula": value}
    return value


def _render(value: Any, option: str) -> Any:
    if isinstance(value, dict) and "formula" in value:
        return value["formula"] if option == "FORMULA" else "#ERROR!"
    if option == "FORMATTED_VALUE":
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    return value


# -- HTTP -------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    fake: GoogleFake  # set on the subclass the fixture makes

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake = self.fake
        try:
            if parts.path == "/token" and method == "POST":
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                basic = self.headers.get("Authorization", "")
                if basic.startswith("Basic "):  # client authentication, RFC 6749 2.3.1
                    user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                    form.setdefault("client_id", unquote(user))
                    form.setdefault("client_secret", unquote(password))
                status, answer = fake.token(form)
                return self._json(status, answer)
            if fake.delay:
                time.sleep(fake.delay)
            body = json.loads(raw) if raw else None
            answer = self._route(method, parts.path, query, body)
            return self._json(200, answer)
        except Refusal as refusal:
            return self._json(refusal.status, refusal.body())
        except (ValueError, KeyError) as exc:
            return self._json(400, Refusal(400, "badRequest", f"bad request: {exc}").body())

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        fake, auth = self.fake, self.headers.get("Authorization", "")
        segments = path.strip("/").split("/")
        record = fake.calls.append
        if segments[:3] == ["gmail", "v1", "users"] and segments[4:] == ["messages", "send"]:
            record(("gmail.users.messages.send", unquote(path)))
            return fake.gmail_send(unquote(segments[3]), auth, query, body)
        if segments[:2] == ["v4", "spreadsheets"] and len(segments) >= 3:
            sid = unquote(segments[2])
            rest = segments[3:]
            if not rest and method == "GET":
                record(("sheets.spreadsheets.get", unquote(path)))
                return fake.spreadsheet_get(sid, auth, query)
            if not rest and sid.endswith(":batchUpdate") and method == "POST":
                record(("sheets.spreadsheets.batchUpdate", unquote(path)))
                return fake.spreadsheet_batch_update(sid[: -len(":batchUpdate")], auth, query, body)
            if rest == ["values:batchUpdate"] and method == "POST":
                record(("sheets.spreadsheets.values.batchUpdate", unquote(path)))
                return fake.values_batch_update(sid, auth, query, body)
            if len(rest) == 2 and rest[0] == "values":
                # The range is percent-encoded, the ":append" verb is not: split before decoding.
                if rest[1].endswith(":append") and method == "POST":
                    record(("sheets.spreadsheets.values.append", unquote(path)))
                    a1 = unquote(rest[1][: -len(":append")])
                    return fake.values_append(sid, a1, auth, query, body)
                if rest[1].endswith(":clear") and method == "POST":
                    record(("sheets.spreadsheets.values.clear", unquote(path)))
                    a1 = unquote(rest[1][: -len(":clear")])
                    return fake.values_clear(sid, a1, auth, query, body)
                if method == "GET":
                    record(("sheets.spreadsheets.values.get", unquote(path)))
                    return fake.values_get(sid, unquote(rest[1]), auth, query)
        fake.violations.append(f"no such method: {method} {path}")
        raise Refusal(404, "notFound", f"no such method: {method} {path}")

    def _json(self, status: int, answer: Any) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def running() -> Iterator[GoogleFake]:
    """A started fake; ``fake.url`` is the GOOGLE_API_ENDPOINT to use."""
    fake = GoogleFake()
    handler = type("Handler", (_Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def user_credentials(fake: GoogleFake, scopes: set[str] | None = None, **extra: Any) -> str:
    """The authorized-user JSON a seller puts in GOOGLE_CREDENTIALS, known to the fake."""
    fake.add_user(REFRESH_TOKEN, CLIENT_ID, CLIENT_SECRET, scopes or {GMAIL_SEND})
    info = {
        "type": "authorized_user",
        "refresh_token": REFRESH_TOKEN,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        **extra,
    }
    return json.dumps(info)


def service_account_credentials(fake: GoogleFake) -> str:
    """A service-account JSON with a fresh RSA key whose public half the fake trusts."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fake.service_accounts[SA_EMAIL] = public
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "atelier-123",
            "private_key_id": "k1",
            "private_key": private,
            "client_email": SA_EMAIL,
            "client_id": "109876543210",
            "token_uri": f"{fake.url}/token",
        }
    )
