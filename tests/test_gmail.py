"""Invoices sent through the Gmail API, against a local server playing Google."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from integrations.gmail import GmailMailer
from integrations.google_client import GMAIL_SEND, SPREADSHEETS
from integrations.mailer import mailer_from_url
from invoicing.errors import PermanentError, SettingsError, TransientError
from invoicing.runtime import check_wiring
from invoicing.settings import load_settings
from tests.conftest import (
    PDF,
    ROOT,
    Service,
    all_jobs_done,
    attachment,
    build,
    checkout_event,
    free_port,
    pdf_text,
    post_event,
    wait_until,
    write_config,
)
from tests.google_server import (
    CLIENT_ID,
    CLIENT_SECRET,
    JWT_BEARER,
    REFRESH_TOKEN,
    SA_EMAIL,
    GoogleFake,
    service_account_credentials,
    user_credentials,
)


def gmail(fake: GoogleFake, credentials: str, url: str = "gmail://me") -> GmailMailer:
    mailer = mailer_from_url(url, google_credentials=credentials, google_api_endpoint=fake.url)
    assert isinstance(mailer, GmailMailer)
    return mailer


def test_message_arrives_as_sent_with_its_pdf(google_api: GoogleFake) -> None:
    """The MIME decoded from `raw` is the message the SMTP backend would send, PDF included."""
    mailer = gmail(google_api, user_credentials(google_api))
    msg = build()

    where = mailer.send(msg)

    (sent,) = google_api.sent
    got = sent.message
    expected = message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert where.startswith("gmail:me id ")
    assert sent.user_id == "me"
    for header in ("From", "To", "Subject", "Message-ID", "Date"):
        assert str(expected[header]) == str(got[header])
    assert [p.get_content_type() for p in got.walk()] == [
        p.get_content_type() for p in expected.walk()
    ]
    (pdf,) = list(got.iter_attachments())
    assert (pdf.get_filename(), pdf.get_content()) == ("F2026-000123_dupont-zoe.pdf", PDF)
    assert got.as_bytes() == msg.as_bytes()
    assert google_api.violations == []


def test_expired_token_is_refreshed_before_sending(google_api: GoogleFake) -> None:
    """A saved token past its expiry is replaced at /token with the refresh token."""
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    credentials = user_credentials(google_api, token="ya29.stale", expiry=past)

    gmail(google_api, credentials).send(build())

    (request,) = google_api.token_requests
    assert request["grant_type"] == "refresh_token"
    assert (request["client_id"], request["refresh_token"]) == (CLIENT_ID, REFRESH_TOKEN)
    assert len(google_api.sent) == 1


def test_unexpired_saved_token_is_used_as_is(google_api: GoogleFake) -> None:
    """A saved token with an expiry ahead is sent without asking /token for another."""
    token = google_api.issue_token({GMAIL_SEND})
    expiry = (datetime.now(UTC) + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    credentials = user_credentials(google_api, token=token, expiry=expiry)

    gmail(google_api, credentials).send(build())

    assert google_api.token_requests == []
    assert len(google_api.sent) == 1


def test_json_printed_by_installed_app_flow_is_accepted(google_api: GoogleFake) -> None:
    """What `Credentials.to_json()` prints (no "type", expiry with Z) works as it is."""
    from google.oauth2.credentials import Credentials

    user_credentials(google_api)
    printed = Credentials(
        token=google_api.issue_token({GMAIL_SEND}),
        refresh_token=REFRESH_TOKEN,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_uri="https://oauth2.googleapis.com/token",
        scopes=[GMAIL_SEND],
        expiry=datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=30),
    ).to_json()

    gmail(google_api, printed).send(build())

    assert google_api.token_requests == []
    assert len(google_api.sent) == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (429, "rateLimitExceeded"),
        (503, "backendError"),
        (500, "backendError"),
        (403, "rateLimitExceeded"),
        (403, "userRateLimitExceeded"),
    ],
)
def test_rate_limits_and_outages_are_transient(
    google_api: GoogleFake, status: int, reason: str
) -> None:
    """Google's "try later" answers are retried by the queue; the retry sends it once."""
    mailer = gmail(google_api, user_credentials(google_api))
    google_api.fail_next("gmail", status, reason)

    with pytest.raises(TransientError) as caught:
        mailer.send(build())
    assert str(status) in str(caught.value)
    assert google_api.sent == []  # the client did not retry on its own

    mailer.send(build())
    assert len(google_api.sent) == 1


def test_missing_gmail_send_scope_is_permanent_and_says_so(google_api: GoogleFake) -> None:
    """A token granted only the Sheets scope gets 403 insufficientPermissions: a dead letter."""
    mailer = gmail(google_api, user_credentials(google_api, scopes={SPREADSHEETS}))

    with pytest.raises(PermanentError) as caught:
        mailer.send(build())

    message = str(caught.value)
    assert "403" in message and "insufficientPermissions" in message
    assert "gmail.send" in message and "invoicehook google-auth" in message
    assert google_api.sent == []


def test_revoked_refresh_token_tells_to_run_google_auth(google_api: GoogleFake) -> None:
    """invalid_grant at refresh: retrying cannot help, the seller must mint a new token."""
    mailer = gmail(google_api, user_credentials(google_api))
    google_api.refuse_refresh = "invalid_grant"

    with pytest.raises(PermanentError) as caught:
        mailer.send(build())

    message = str(caught.value)
    assert "invalid_grant" in message
    assert "`invoicehook google-auth`" in message and "7 days" in message
    assert REFRESH_TOKEN not in message and CLIENT_SECRET not in message


def test_unreachable_api_is_transient(google_api: GoogleFake) -> None:
    """A refused connection is a transient failure, not a dead letter."""
    token = google_api.issue_token({GMAIL_SEND})
    expiry = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    credentials = user_credentials(google_api, token=token, expiry=expiry)
    mailer = mailer_from_url(
        "gmail://me",
        google_credentials=credentials,
        google_api_endpoint=f"http://127.0.0.1:{free_port()}",
    )

    with pytest.raises(TransientError):
        mailer.send(build())


def test_service_account_acts_for_the_workspace_user(
    google_api: GoogleFake, tmp_path: Path
) -> None:
    """A service-account key (here a file path) signs a JWT for the sender; Gmail sends as them."""
    path = tmp_path / "service-account.json"
    path.write_text(service_account_credentials(google_api))
    mailer = gmail(google_api, str(path), "gmail://zoe@atelier.example")

    assert "acting for zoe@atelier.example" in mailer.check()
    mailer.send(build())

    assert [r["grant_type"] for r in google_api.token_requests] == [JWT_BEARER]  # token reused
    (sent,) = google_api.sent
    assert (sent.user_id, sent.token_subject) == ("zoe@atelier.example", "zoe@atelier.example")
    assert google_api.violations == []


def test_service_account_without_delegation_says_how_to_enable_it(
    google_api: GoogleFake,
) -> None:
    """Google refuses a JWT acting for a user until the admin enables domain-wide delegation."""
    mailer = gmail(
        google_api, service_account_credentials(google_api), "gmail://zoe@atelier.example"
    )
    google_api.undelegated.add(SA_EMAIL)

    with pytest.raises(PermanentError) as caught:
        mailer.send(build())

    message = str(caught.value)
    assert "unauthorized_client" in message
    assert f"enable domain-wide delegation for {SA_EMAIL} (client id 109876543210)" in message
    assert GMAIL_SEND in message
    assert google_api.sent == []


def test_service_account_needs_a_workspace_sender(google_api: GoogleFake) -> None:
    """A service account has no mailbox: gmail://me is refused at start-up with the fix."""
    with pytest.raises(SettingsError, match=r"gmail://you@yourdomain"):
        gmail(google_api, service_account_credentials(google_api))


def test_check_names_the_account(google_api: GoogleFake) -> None:
    """`invoicehook check` gets a token and says as whom invoices will leave."""
    verdict = gmail(google_api, user_credentials(google_api)).check()

    assert "sending as me" in verdict and CLIENT_ID in verdict
    assert len(google_api.token_requests) == 1


def env_for(tmp_path: Path, **env: str) -> dict[str, str]:
    return {"INVOICEHOOK_CONFIG": str(write_config(tmp_path)), **env}


def test_gmail_url_requires_google_credentials(tmp_path: Path) -> None:
    """EMAIL_URL=gmail://me without GOOGLE_CREDENTIALS stops start-up naming both."""
    with pytest.raises(SettingsError) as caught:
        load_settings(env_for(tmp_path, EMAIL_URL="gmail://me"))

    assert str(caught.value).startswith("GOOGLE_CREDENTIALS: required with EMAIL_URL=gmail://")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('{"refresh_token": "1//secret-value"', "does not parse"),
        ('{"type": "weird", "refresh_token": "1//secret-value"}', "got type 'weird'"),
        ('{"installed": {"client_secret": "1//secret-value"}}', "OAuth client file"),
        ('{"type": "authorized_user", "refresh_token": "1//secret-value"}', "lacks client_id"),
        ("/nowhere/1//secret-value.json", "neither JSON nor a readable file"),
    ],
)
def test_bad_credentials_are_named_without_the_secret(
    tmp_path: Path, value: str, says: str
) -> None:
    """Wrong GOOGLE_CREDENTIALS: one line naming the key and what it expects, no secret."""
    with pytest.raises(SettingsError) as caught:
        check_wiring(
            load_settings(env_for(tmp_path, EMAIL_URL="gmail://me", GOOGLE_CREDENTIALS=value))
        )

    message = str(caught.value)
    assert message.startswith("GOOGLE_CREDENTIALS: ") and says in message
    assert "secret-value" not in message and "\n" not in message


def test_building_the_mailer_does_not_load_the_api_client(google_api: GoogleFake) -> None:
    """The web process builds the mailer but never sends: googleapiclient stays unloaded."""
    code = (
        "import sys\n"
        "from integrations.mailer import mailer_from_url\n"
        "mailer_from_url('gmail://me', google_credentials=sys.argv[1])\n"
        "print('googleapiclient' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, user_credentials(google_api)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"


def test_paid_checkout_is_emailed_through_gmail(
    google_api: GoogleFake,
    service_env: dict[str, str],
    services: list[Service],
    tmp_path: Path,
) -> None:
    """The whole service with EMAIL_URL=gmail://me: one payment → one Gmail send with the PDF."""
    env = {
        **service_env,
        "EMAIL_URL": "gmail://me",
        "GOOGLE_CREDENTIALS": user_credentials(google_api),
        "GOOGLE_API_ENDPOINT": google_api.url,
    }
    service = Service(env, tmp_path).start()
    services.append(service)
    with service.client() as client:
        response = post_event(client, checkout_event(1, name="Léa Martin"))
        assert (response.status_code, response.json()["status"]) == (200, "accepted")
        wait_until(lambda: len(google_api.sent) >= 1, what="the Gmail send")
        url = env["DATABASE_URL"]
        wait_until(lambda: all_jobs_done(url), what="the queue to finish")  # no second send

    (sent,) = google_api.sent
    number = f"F{time.gmtime().tm_year}-000001"
    assert [a.addr_spec for a in sent.message["To"].addresses] == ["lea@example.org"]
    assert sent.message["From"].addresses[0].addr_spec == "zoe@example.com"
    filename, pdf = attachment(sent.message)
    assert filename == f"{number}_lea-martin.pdf"
    assert number in pdf_text(pdf) and "Léa Martin" in pdf_text(pdf)
    assert google_api.violations == []


def test_the_fake_also_plays_sheets_for_the_ledger(google_api: GoogleFake) -> None:
    """The ledger's calls work through googleapiclient against the fake, shapes checked."""
    import httplib2
    from google_auth_httplib2 import AuthorizedHttp
    from googleapiclient.discovery import build as build_api
    from googleapiclient.errors import HttpError

    from integrations.google_auth import load_credentials

    credentials = load_credentials(
        user_credentials(google_api, scopes={SPREADSHEETS}),
        [SPREADSHEETS],
        api_endpoint=google_api.url,
    )
    google_api.new_sheet("1AbC", "Ledger")
    sheets = build_api(
        "sheets",
        "v4",
        http=AuthorizedHttp(credentials, http=httplib2.Http(timeout=10)),
        static_discovery=True,
        client_options={"api_endpoint": google_api.url},
    ).spreadsheets()

    titles = [
        s["properties"]["title"] for s in sheets.get(spreadsheetId="1AbC").execute()["sheets"]
    ]
    header = {"range": "Ledger!A1:C1", "values": [["number", "buyer", "total"]]}
    sheets.values().batchUpdate(
        spreadsheetId="1AbC", body={"valueInputOption": "RAW", "data": [header]}
    ).execute()
    appended = (
        sheets.values()
        .append(
            spreadsheetId="1AbC",
            range="Ledger!A:C",
            valueInputOption="RAW",
            insertDataOption="INSERT_ROWS",
            body={"values": [["F2026-000001", "=HYPERLINK(1)", 199.0]]},
        )
        .execute()
    )
    column = sheets.values().get(spreadsheetId="1AbC", range="Ledger!A2:A").execute()
    rows = (
        sheets.values()
        .get(spreadsheetId="1AbC", range="Ledger", valueRenderOption="UNFORMATTED_VALUE")
        .execute()
    )
    with pytest.raises(HttpError) as caught:
        sheets.values().append(
            spreadsheetId="1AbC", range="Ledger!A:C", body={"values": [["x"]]}
        ).execute()

    assert titles == ["Ledger"]
    assert appended["updates"]["updatedRange"] == "Ledger!A2:C2"
    assert column["values"] == [["F2026-000001"]]
    assert rows["values"][1] == ["F2026-000001", "=HYPERLINK(1)", 199.0]  # RAW: text stays text
    assert caught.value.resp.status == 400  # valueInputOption is required
    assert google_api.value_input_options == ["RAW", "RAW"]
    assert google_api.violations == []
