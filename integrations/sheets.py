"""The seller's Google Sheet (``LEDGER_SHEET``), through the Sheets v4 API.

A small class over google-api-python-client: read the header and the number column, append
many rows in one ``values.append`` call (``RAW``: buyer text is never parsed as a formula),
rewrite the whole tab for ``invoicehook ledger rebuild``.

Failures are sorted the way Google documents them: 429, 5xx and 403
``rateLimitExceeded``/``userRateLimitExceeded`` are :class:`TransientError` (the job queue
retries; the client itself never retries, since an append is not idempotent); a sheet that is
not shared, not found or a token without the spreadsheets scope is a :class:`PermanentError`
whose message says what the seller must fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from integrations.google_client import DEFAULT_TIMEOUT, SPREADSHEETS, GoogleApiClient
from invoicing.errors import PermanentError, SettingsError

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

# google-auth and the API client are imported when first used: the web process never
# writes to the Sheet.


def first_row_of(updated_range: str) -> int | None:
    """The first row number of an A1 range such as ``'Ledger'!A5:O7``."""
    found = re.search(r"![A-Z]*(\d+)(?::[A-Z]*\d+)?$", updated_range)
    return int(found.group(1)) if found else None


def column_letter(number: int) -> str:
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


class LedgerSheet(GoogleApiClient):
    """One tab of one spreadsheet."""

    API = ("sheets", "v4")

    def __init__(
        self,
        spreadsheet_id: str,
        tab: str,
        credentials: Credentials,
        *,
        api_endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(credentials, api_endpoint=api_endpoint, timeout=timeout)
        self.spreadsheet_id = spreadsheet_id
        self.tab = tab

    @classmethod
    def from_settings(
        cls,
        sheet: str,
        tab: str,
        *,
        google_credentials: str | None,
        google_api_endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> LedgerSheet:
        if not google_credentials:
            raise SettingsError(
                "GOOGLE_CREDENTIALS: required with LEDGER_SHEET; expected the JSON of a service "
                "account the Sheet is shared with, or of an authorized user"
            )
        from integrations.google_auth import load_credentials

        credentials = load_credentials(
            google_credentials, [SPREADSHEETS], api_endpoint=google_api_endpoint
        )
        return cls(
            sheet,
            tab,
            credentials,
            api_endpoint=google_api_endpoint,
            timeout=timeout,
        )

    # -- ranges ------------------------------------------------------------------------------

    @property
    def _quoted(self) -> str:
        return "'" + self.tab.replace("'", "''") + "'"

    def _range(self, cells: str) -> str:
        return f"{self._quoted}!{cells}"

    # -- reads -------------------------------------------------------------------------------

    def header(self) -> list[Any]:
        """Row 1 of the tab (empty when the tab is new)."""
        with self._classified("read the header"):
            answer = self._values().get(spreadsheetId=self.spreadsheet_id, range=self._range("1:1"))
            rows = answer.execute(num_retries=0).get("values") or []
        return list(rows[0]) if rows else []

    def numbers(self, column: int) -> set[str]:
        """Every value in ``column`` (1-based) below the header, as text."""
        return set(self.rows_by_value(column))

    def rows_by_value(self, column: int) -> dict[str, int]:
        """Each value of ``column`` (1-based) below the header, with its row number."""
        letter = column_letter(column)
        with self._classified("read the number column"):
            request = self._values().get(
                spreadsheetId=self.spreadsheet_id,
                range=self._range(f"{letter}2:{letter}"),
                valueRenderOption="UNFORMATTED_VALUE",
            )
            rows = request.execute(num_retries=0).get("values") or []
        return {
            str(row[0]): index
            for index, row in enumerate(rows, start=2)
            if row and row[0] not in ("", None)
        }

    def update_cells(self, column: int, cells: dict[int, Any]) -> None:
        """Overwrite single cells of ``column`` (row number → value), RAW, in one call."""
        letter = column_letter(column)
        with self._classified("update cells"):
            body = {
                "valueInputOption": "RAW",
                "data": [
                    {"range": self._range(f"{letter}{row}"), "values": [[value]]}
                    for row, value in sorted(cells.items())
                ],
            }
            request = self._values().batchUpdate(spreadsheetId=self.spreadsheet_id, body=body)
            request.execute(num_retries=0)

    def tab_id(self) -> int | None:
        """The numeric id of the tab, or None when the spreadsheet has no such tab."""
        with self._classified("open the spreadsheet"):
            request = (
                self._service()
                .spreadsheets()
                .get(spreadsheetId=self.spreadsheet_id, fields="sheets.properties")
            )
            answer = request.execute(num_retries=0)
        for sheet in answer.get("sheets", []):
            properties = sheet.get("properties", {})
            if properties.get("title") == self.tab:
                return int(properties.get("sheetId", 0))
        return None

    # -- writes ------------------------------------------------------------------------------

    def ensure_header(
        self, columns: Sequence[str], date_columns: Sequence[int] = (), *, force: bool = False
    ) -> str:
        """Create the tab and its header row, or check that row 1 is that header.

        ``date_columns`` (0-based) get a date number format below the header when the header
        is written: their cells hold Sheets date serials, shown as dates. ``force`` writes
        the header over whatever row 1 holds (a rebuild)."""
        tab_id = self.tab_id()
        if tab_id is None:
            try:
                reply = self._batch([{"addSheet": {"properties": {"title": self.tab}}}])
                tab_id = int(reply["replies"][0]["addSheet"]["properties"]["sheetId"])
            except PermanentError:
                # Another writer (the start-up check beside a ledger job) added it meanwhile.
                tab_id = self.tab_id()
                if tab_id is None:
                    raise
        found = [str(v) for v in self.header()]
        if found == list(columns):
            return f"header verified in tab {self.tab!r}"
        if any(v.strip() for v in found) and not force:
            raise PermanentError(
                f"Google Sheet {self.spreadsheet_id}: row 1 of tab {self.tab!r} is not the "
                f"ledger's header (found {found[:4]}…, expected {list(columns)[:4]}…); empty "
                "the tab, or name another one with [ledger] tab in the config"
            )
        self._write_values([list(columns)], "A1")
        if date_columns:
            self._batch(
                [
                    {
                        "repeatCell": {
                            "range": {
                                "sheetId": tab_id,
                                "startRowIndex": 1,
                                "startColumnIndex": col,
                                "endColumnIndex": col + 1,
                            },
                            "cell": {
                                "userEnteredFormat": {
                                    "numberFormat": {"type": "DATE", "pattern": "yyyy-mm-dd"}
                                }
                            },
                            "fields": "userEnteredFormat.numberFormat",
                        }
                    }
                    for col in date_columns
                ]
            )
        return f"header written in tab {self.tab!r}"

    def append(self, rows: Sequence[Sequence[Any]]) -> str:
        """Add ``rows`` after the table, in ONE call; returns the range Google wrote."""
        with self._classified("append rows"):
            request = self._values().append(
                spreadsheetId=self.spreadsheet_id,
                range=self._range("A1"),
                valueInputOption="RAW",
                insertDataOption="INSERT_ROWS",
                body={"values": [list(row) for row in rows]},
            )
            answer = request.execute(num_retries=0)
        return str(answer.get("updates", {}).get("updatedRange", ""))

    def rewrite(self, rows: Sequence[Sequence[Any]]) -> None:
        """Empty the tab's values (formats stay) and write ``rows`` from A1."""
        with self._classified("clear the tab"):
            request = self._values().clear(
                spreadsheetId=self.spreadsheet_id, range=self._quoted, body={}
            )
            request.execute(num_retries=0)
        if rows:
            self._write_values(rows, "A1")

    def link_cells(self, column: int, first_row: int, urls: Sequence[str]) -> None:
        """Write ``urls`` down ``column`` (1-based) as if typed, so Sheets turns them into
        links. Only for addresses we make (signed invoice links): typed-in text is parsed,
        so buyer text never goes through here."""
        for url in urls:
            if not url.startswith(("https://", "http://")):
                raise ValueError(f"not a link: {url[:40]!r}")
        self._write_values([[u] for u in urls], f"{column_letter(column)}{first_row}", typed=True)

    def _write_values(self, rows: Sequence[Sequence[Any]], start: str, typed: bool = False) -> None:
        with self._classified("write values"):
            body = {
                "valueInputOption": "USER_ENTERED" if typed else "RAW",
                "data": [{"range": self._range(start), "values": [list(r) for r in rows]}],
            }
            request = self._values().batchUpdate(spreadsheetId=self.spreadsheet_id, body=body)
            request.execute(num_retries=0)

    def _batch(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        with self._classified("update the spreadsheet"):
            request = (
                self._service()
                .spreadsheets()
                .batchUpdate(spreadsheetId=self.spreadsheet_id, body={"requests": requests})
            )
            return dict(request.execute(num_retries=0))

    # -- plumbing ----------------------------------------------------------------------------

    def _values(self) -> Any:
        return self._service().spreadsheets().values()

    def _status_hint(self, status: int, reason: str) -> str | None:
        return self._share_message() if status in (403, 404) else None

    def _scope_message(self) -> str:
        return (
            f"the token lacks the spreadsheets scope ({SPREADSHEETS}); run invoicehook "
            "google-auth with the spreadsheets scope and put the new JSON in GOOGLE_CREDENTIALS"
        )

    @property
    def client_email(self) -> str | None:
        return getattr(self.credentials, "service_account_email", None)

    def _share_message(self) -> str:
        who = self.client_email
        share = (
            f"share the sheet with {who} as Editor"
            if who
            else "share the sheet, as Editor, with the Google account that granted "
            "GOOGLE_CREDENTIALS"
        )
        return f"{share} (Share button in Google Sheets), or check LEDGER_SHEET"

    def _remint(self) -> str:
        return "run invoicehook google-auth and put the new JSON in GOOGLE_CREDENTIALS"

    def _say(self, what: str) -> str:
        return f"Google Sheet {self.spreadsheet_id} ({self.tab}): {what}"

    def __repr__(self) -> str:
        return f"LedgerSheet({self.spreadsheet_id!r}, {self.tab!r})"
