"""Sending through the Gmail API (``EMAIL_URL=gmail://me`` or ``gmail://seller@domain``).

The message is the one the SMTP backend sends, base64url-encoded into ``users.messages.send``.
Gmail takes the recipients from its To/Cc/Bcc headers.

Failures are sorted for the worker the way Google documents them: 429, 5xx and 403
``rateLimitExceeded``/``userRateLimitExceeded`` are :class:`TransientError` (the job queue
retries with backoff; the client itself never retries, since ``messages.send`` has no
idempotency key and a retried 5xx may send twice); everything else is a
:class:`PermanentError` whose message says what the seller must fix.

``googleapiclient`` is imported on the first send, so the web process (which builds the
mailer but never sends) does not load it.
"""

from __future__ import annotations

import base64
from email.message import EmailMessage
from urllib.parse import unquote

from google.auth.credentials import Credentials

from integrations.google_auth import describe, kind_of, load_credentials, read_info
from integrations.google_client import DEFAULT_TIMEOUT, GMAIL_SEND, GoogleApiClient
from invoicing.errors import PermanentError, SettingsError

REMINT = (
    'mint a new refresh token (`invoicehook google-auth`, or the snippet under "Sending '
    'through Gmail" in the README) and put it in GOOGLE_CREDENTIALS; '
    'an OAuth app left in "Testing" loses its tokens after 7 days, publish it "In production"'
)


class GmailMailer(GoogleApiClient):
    """Sends as ``user_id`` ("me": the account that granted the token; else a Workspace user
    a service account acts for)."""

    API = ("gmail", "v1")

    def __init__(
        self,
        user_id: str,
        credentials: Credentials,
        *,
        api_endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        delegation_client_id: str | None = None,
    ) -> None:
        super().__init__(credentials, api_endpoint=api_endpoint, timeout=timeout)
        self.user_id = user_id
        # The numeric client id an admin enters under domain-wide delegation.
        self.delegation_client_id = delegation_client_id

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        google_credentials: str | None,
        google_api_endpoint: str | None = None,
        scopes: list[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> GmailMailer:
        rest = url.split("://", 1)[1] if "://" in url else ""
        user_id = unquote(rest.split("/", 1)[0].split("?", 1)[0]).strip()
        if not user_id or (user_id != "me" and "@" not in user_id.strip("@")):
            raise SettingsError(
                "EMAIL_URL: expected gmail://me or gmail://you@yourdomain, got "
                f"{'gmail://' + user_id!r}"
            )
        if not google_credentials:
            raise SettingsError(
                "GOOGLE_CREDENTIALS: required with EMAIL_URL=gmail://…; expected the JSON of an "
                "authorized user (personal Gmail) or of a service account (Workspace)"
            )
        info = read_info(google_credentials)
        service_account = kind_of(info) == "service_account"
        if service_account and user_id == "me":
            # A service account has no mailbox of its own: Gmail answers 400 failedPrecondition.
            raise SettingsError(
                "EMAIL_URL: a service account sends as a Workspace user: use "
                "gmail://you@yourdomain (and enable domain-wide delegation for it)"
            )
        credentials = load_credentials(
            google_credentials,
            scopes or [GMAIL_SEND],
            subject=user_id if service_account else None,
            api_endpoint=google_api_endpoint,
        )
        return cls(
            user_id,
            credentials,
            api_endpoint=google_api_endpoint,
            timeout=timeout,
            delegation_client_id=str(info.get("client_id") or "") or None
            if service_account
            else None,
        )

    @property
    def where(self) -> str:
        return f"gmail:{self.user_id}"

    def send(self, msg: EmailMessage) -> str:
        raw = base64.urlsafe_b64encode(msg.as_bytes()).decode("ascii")
        with self._classified("send"):
            messages = self._service().users().messages()
            request = messages.send(userId=self.user_id, body={"raw": raw})
            result = request.execute(num_retries=0)
        # Gmail's message id is the proof of sending.
        return f"{self.where} id {result.get('id', '?')}"

    def check(self) -> str:
        """For `invoicehook check`: get a token (gmail.send alone cannot read the profile)."""
        import google_auth_httplib2
        import httplib2

        with self._classified("token refresh"):
            request = google_auth_httplib2.Request(httplib2.Http(timeout=self.timeout))
            self.credentials.refresh(request)  # type: ignore[no-untyped-call]
        granted = getattr(self.credentials, "granted_scopes", None) or []
        if granted and GMAIL_SEND not in granted and "https://mail.google.com/" not in granted:
            raise PermanentError(self._scope_message())
        who = describe(self.credentials)
        return f"Gmail API, sending as {self.user_id}: token obtained ({who})"

    def _status_hint(self, status: int, reason: str) -> str | None:
        if status == 403 and reason == "dailyLimitExceeded":
            return "the daily sending limit is reached; replay the job tomorrow"
        if status == 400 and reason == "failedPrecondition":
            return self._delegation_message()
        return None

    def _refused(self, text: str) -> str:
        if self._is_service_account and ("unauthorized_client" in text or "access_denied" in text):
            return f"token refresh failed: {text} — {self._delegation_message()}"
        if not self._is_service_account and "invalid_grant" in text:
            # "token refresh failed" first, as for every Google refusal: the admin page
            # tells the seller to mint a new token when a job's error says so.
            return (
                f"token refresh failed: the refresh token is expired or revoked ({text}); {REMINT}"
            )
        return super()._refused(text)

    def _scope_message(self) -> str:
        if self._is_service_account:
            return (
                f"the token lacks the gmail.send scope ({GMAIL_SEND}); add it to the service "
                "account's domain-wide delegation (Admin console › Security › API controls)"
            )
        return f"the token lacks the gmail.send scope ({GMAIL_SEND}); {REMINT} with that scope"

    def _delegation_message(self) -> str:
        email = getattr(self.credentials, "service_account_email", None) or "the service account"
        client_id = f" (client id {self.delegation_client_id})" if self.delegation_client_id else ""
        return (
            f"for a Workspace service account, enable domain-wide delegation for {email}"
            f"{client_id} with the scope {GMAIL_SEND}, and send as a user of the domain "
            "(gmail://you@yourdomain)"
        )

    def _remint(self) -> str:
        return REMINT

    def _say(self, what: str) -> str:
        return f"Gmail {self.user_id}: {what}"
