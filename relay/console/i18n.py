"""The console's languages: English, Vietnamese and Tagalog, through gettext.

Every string of the console is a gettext message (``_("...")`` in templates
and code), extracted with Babel into ``locale/<lang>/LC_MESSAGES/*.po``; each
page area keeps its own catalogue file, and a language's files are merged
when the console starts.  The ``.po`` files are read directly (compiled in
memory), so nothing needs building before ``make run``.  English is the
source language.  Dates and numbers follow the chosen locale (Babel's CLDR
data; Tagalog's formats are CLDR's Filipino).

The language is the ``lang`` cookie, set by the language picker, else the
browser's ``Accept-Language``, else English.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
from collections.abc import Callable
from pathlib import Path

from babel import Locale, dates, numbers
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = {"en": "English", "vi": "Tiếng Việt", "tl": "Tagalog"}
"""The languages offered, each named in itself."""
DEFAULT = "en"
COOKIE = "lang"


@functools.cache
def translations(lang: str) -> NullTranslations:
    """The merged catalogues of ``lang`` (English: the messages themselves)."""
    merged: NullTranslations = NullTranslations()
    folder = LOCALE_DIR / lang / "LC_MESSAGES"
    if lang == DEFAULT or not folder.is_dir():
        return merged
    first: Translations | None = None
    for po in sorted(folder.glob("*.po")):
        with po.open("rb") as f:
            catalog = read_po(f, locale=lang if lang != "tl" else "fil", domain=po.stem)
        buffer = io.BytesIO()
        write_mo(buffer, catalog)
        buffer.seek(0)
        part = Translations(fp=buffer, domain="messages")
        if first is None:
            first = part
        else:
            first.merge(part)
    return first if first is not None else merged


def gettext(lang: str) -> Callable[[str], str]:
    return translations(lang).gettext


def ngettext(lang: str) -> Callable[[str, str, int], str]:
    return translations(lang).ngettext


def locale(lang: str) -> Locale:
    """Babel's locale for dates and numbers (CLDR has Tagalog as Filipino)."""
    return Locale.parse("fil" if lang == "tl" else lang)


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        primary = tag.split("-")[0]
        if primary == "fil":
            primary = "tl"
        if primary in LANGUAGES:
            return primary
    return DEFAULT


class Formats:
    """Dates and numbers the way ``lang`` writes them (used by the templates)."""

    def __init__(self, lang: str) -> None:
        self.locale = locale(lang)

    def date(self, value: dt.date | dt.datetime | None, format: str = "medium") -> str:
        return "" if value is None else dates.format_date(value, format=format, locale=self.locale)

    def datetime(self, value: dt.datetime | None, format: str = "medium") -> str:
        if value is None:
            return ""
        return dates.format_datetime(value, format=format, tzinfo=None, locale=self.locale)

    def number(self, value: float | int | None) -> str:
        return "" if value is None else numbers.format_decimal(value, locale=self.locale)

    def percent(self, value: float | None) -> str:
        return "" if value is None else numbers.format_percent(value, locale=self.locale)

    def month(self, value: dt.date) -> str:
        return dates.format_skeleton("yMMMM", value, locale=self.locale)

    def weekday(self, value: dt.date) -> str:
        return dates.format_date(value, "EEE", locale=self.locale)
