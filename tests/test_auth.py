"""ADMIN_TOKEN: how a request proves it may see the invoice book."""

from __future__ import annotations

import base64

import pytest

from invoicing.auth import AdminClosed, NotAdmin, check_admin, presented_token
from invoicing.months import BadMonth, Month
from invoicing.settings import Secret

TOKEN = Secret("s3cret-admin-token")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "header",
    [
        "Bearer s3cret-admin-token",
        "bearer   s3cret-admin-token",
        basic("", "s3cret-admin-token"),
        basic("zoe", "s3cret-admin-token"),
    ],
)
def test_the_token_opens(header: str) -> None:
    check_admin(TOKEN, {"authorization": header})


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "this page needs ADMIN_TOKEN"),
        ("Bearer ", "this page needs ADMIN_TOKEN"),
        ("Bearer s3cret-admin-toke", "wrong ADMIN_TOKEN"),
        ("Bearer s3cret-admin-token2", "wrong ADMIN_TOKEN"),
        (basic("s3cret-admin-token", ""), "wrong ADMIN_TOKEN"),
        ("Basic not-base64!", "this page needs ADMIN_TOKEN"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), "this page needs ADMIN_TOKEN"),
        ("Token s3cret-admin-token", "this page needs ADMIN_TOKEN"),
    ],
)
def test_anything_else_is_refused(header: str, message: str) -> None:
    with pytest.raises(NotAdmin, match=message) as caught:
        check_admin(TOKEN, {"authorization": header} if header else {})
    assert caught.value.status == 401
    assert "s3cret" not in str(caught.value)


def test_without_a_token_set_everything_is_closed() -> None:
    with pytest.raises(AdminClosed, match="set ADMIN_TOKEN") as caught:
        check_admin(None, {"authorization": "Bearer anything"})
    assert caught.value.status == 503


def test_basic_password_may_hold_colons() -> None:
    assert presented_token({"authorization": basic("a", "b:c")}) == "b:c"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-13", "the month must be 01 to 12"),
        ("2026-00", "the month must be 01 to 12"),
        ("26-1", "expected YYYY-MM"),
        ("2026-1", "expected YYYY-MM"),
        ("2026-11-01", "expected YYYY-MM"),
        ("1999-12", "not a month invoicehook can have invoices for"),
    ],
)
def test_impossible_months_say_why(text: str, reason: str) -> None:
    with pytest.raises(BadMonth, match=reason) as caught:
        Month.parse(text)
    assert caught.value.status == 400


def test_a_month_is_the_sellers_month() -> None:
    from zoneinfo import ZoneInfo

    start, end = Month.parse("2026-12").bounds(ZoneInfo("Europe/Paris"))
    assert (start.isoformat(), end.isoformat()) == (
        "2026-11-30T23:00:00+00:00",
        "2026-12-31T23:00:00+00:00",
    )
    assert Month(2026, 12).next() == Month(2027, 1)
    assert Month(2027, 1).previous() == Month(2026, 12)
    assert Month(2026, 11).label("fr") == "novembre 2026"
    assert Month(2026, 11).compact == "202611"
