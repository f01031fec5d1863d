"""A calendar month of the seller: what `list --month` and every export cover.

A month is the seller's ``[invoice] timezone`` month: an invoice issued at 00:30 in Paris
on 1 December belongs to December even though it is still November in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from invoicing.errors import BadRequest

_SHAPE = re.compile(r"(\d{4})-(\d{2})")


class BadMonth(BadRequest):
    """A month that is not YYYY-MM, or not a month at all."""


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        """ "2026-11" → Month(2026, 11); anything else says what was expected."""
        found = _SHAPE.fullmatch(text.strip())
        if found is None:
            raise BadMonth(f"{text!r} is not a month: expected YYYY-MM, like 2026-11")
        year, month = int(found.group(1)), int(found.group(2))
        if not 1 <= month <= 12:
            raise BadMonth(f"{text!r} is not a month: the month must be 01 to 12")
        if year < 2000:
            raise BadMonth(f"{text!r} is not a month invoicehook can have invoices for")
        return cls(year, month)

    @classmethod
    def of(cls, moment: datetime, zone: ZoneInfo) -> Month:
        """The month ``moment`` falls in on the seller's clock."""
        local = moment.astimezone(zone)
        return cls(local.year, local.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def compact(self) -> str:
        """ "202611", as file names and the FEC want it."""
        return f"{self.year:04d}{self.month:02d}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def previous(self) -> Month:
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)

    def bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """Its first instant and the next month's first, on the seller's clock, in UTC
        (SQLite compares the stored UTC times as text)."""
        following = self.next()
        return (
            datetime(self.year, self.month, 1, tzinfo=zone).astimezone(UTC),
            datetime(following.year, following.month, 1, tzinfo=zone).astimezone(UTC),
        )

    def label(self, language: str) -> str:
        """ "novembre 2026" / "November 2026"."""
        from babel.dates import format_date

        return format_date(self.first_day, "LLLL y", locale=language)
