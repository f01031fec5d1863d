"""The words of the month's exports in the invoice's language: sheet names, column titles,
the labels of kinds, regimes, sources and payment methods.

They are kept in ``templates/texts/export_<language>.json``, beside the invoice's and the
email's texts. The regime's exemption text and the way a VAT rate is written are the
invoice's own (``texts/<language>.json``), so the export says what the PDF says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from invoicing.money import format_number

LANGUAGES = ("fr", "en")
FALLBACK_LANGUAGE = "en"


@dataclass(frozen=True)
class Texts:
    language: str
    words: dict[str, Any]  # export_<language>.json
    invoice: dict[str, Any]  # <language>.json, the PDF's

    def __getitem__(self, key: str) -> Any:
        return self.words[key]

    def column(self, key: str) -> str:
        return str(self.words["columns"][key])

    def kind(self, kind: str) -> str:
        return str(self.words["kinds"].get(kind, kind))

    def regime(self, regime: str) -> str:
        return str(self.words["regimes"].get(regime, regime))

    def mention(self, regime: str) -> str:
        """What the invoice prints about VAT under ``regime`` ("" for the standard one)."""
        return str(self.invoice["mentions"].get(regime, ""))

    def source(self, source: str) -> str:
        return str(self.words["sources"].get(source, source))

    def method(self, method: str | None, source: str) -> str:
        """ "Carte bancaire" for Stripe's ``card``; a type of no known name as it is; the
        source ("Stripe", "Zapier") when no one said how the buyer paid."""
        if not method:
            return self.source(source)
        return str(self.words["payment_methods"].get(method.strip().lower(), method))

    def vat_rate(self, rate: str) -> str:
        """ "TVA 20 %" / "VAT 20%", or the words for a rate Stripe did not give."""
        if not rate:
            return self.column("vat_unknown")
        shown = self.invoice["rate"].format(rate=format_number(rate, self.language))
        return self.column("vat").format(rate=shown)

    def country(self, code: str | None) -> str:
        """ "Allemagne" / "Germany" for DE; an unknown code as it is."""
        from babel import Locale

        if not code:
            return str(self.words["unknown_country"])
        return str(Locale.parse(self.language).territories.get(code.upper(), code))


def texts_for(templates_dir: Path, language: str) -> Texts:
    """The export's words in ``language`` (English for a language it has no words in)."""
    language = language if language in LANGUAGES else FALLBACK_LANGUAGE
    return _load(Path(templates_dir).resolve(), language)


@lru_cache(maxsize=8)
def _load(templates_dir: Path, language: str) -> Texts:
    folder = templates_dir / "texts"
    words = json.loads((folder / f"export_{language}.json").read_text(encoding="utf-8"))
    invoice = json.loads((folder / f"{language}.json").read_text(encoding="utf-8"))
    return Texts(language, words, invoice)
