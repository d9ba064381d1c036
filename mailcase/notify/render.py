"""Render a notice's subject, plain text and HTML from `templates/<lang>/<audience>.<event>.*`; it sets no headers and sends nothing.

One Jinja2 environment per Renderer: `StrictUndefined` (a missing context key is an error,
never an empty gap in a customer's mail), autoescaping for `.html` only. Context values are
plain JSON as stored in the outbox (instants are ISO 8601 strings); the filters below turn
them into what a reader expects, in the recipient's language and time zone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup, escape

from mailcase.domain import STATUS_DISPLAY, CaseStatus, format_case_number, format_size

DEFAULT_LANGUAGE = "en"
PARTS = ("subject.txt", "txt", "html")

_WEEKDAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "pt": (
        "segunda-feira",
        "terça-feira",
        "quarta-feira",
        "quinta-feira",
        "sexta-feira",
        "sábado",
        "domingo",
    ),
}
_MONTHS = {
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
    "pt": (
        "janeiro", "fevereiro", "março", "abril", "maio", "junho",
        "julho", "agosto", "setembro", "outubro", "novembro", "dezembro",
    ),
}  # fmt: skip
_STATUS_PT: dict[CaseStatus, str] = {
    CaseStatus.NEW: "Novo",
    CaseStatus.IN_PROGRESS: "Em andamento",
    CaseStatus.DUPLICATE: "Duplicado",
    CaseStatus.ON_HOLD: "Em espera",
    CaseStatus.SHIPPING: "Em transporte",
    CaseStatus.RESOLVED_FOLLOW_UP: "Resolvido, aguardando confirmação",
    CaseStatus.CUSTOMER_REOPENED: "Reaberto pelo cliente",
    CaseStatus.CLOSED_NO_RESPONSE: "Fechado sem resposta",
    CaseStatus.CLOSED: "Fechado",
}


class TemplateMissing(LookupError):
    """No language, not even the default, has this template: a programming error, not a retry."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A notice ready for composing: a one-line subject, a plain-text body and an HTML body."""

    subject: str
    text: str
    html: str


class Renderer:
    """Renders `<audience>.<event>` templates from a search path of template directories: the
    operator's overrides first (`[templates] dir`), then the packaged ones; a file found in an
    earlier directory wins over one of the same name later."""

    def __init__(self, template_dirs: Path | Sequence[Path]) -> None:
        dirs = (template_dirs,) if isinstance(template_dirs, (str, Path)) else template_dirs
        self.template_dirs = tuple(Path(d) for d in dirs)
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in self.template_dirs]),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), disabled_extensions=("txt",), default=False
            ),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self._env.filters["local"] = _local_filter
        self._env.filters["case_number"] = case_number
        self._env.filters["status_name"] = _status_filter
        self._env.filters["paragraphs"] = paragraphs
        self._env.filters["size"] = format_size

    def language(self, template: str, locale: str) -> str:
        """The language whose files render `template` for `locale` (`pt-BR` -> `pt`), else `en`."""
        lang = (locale or DEFAULT_LANGUAGE).replace("_", "-").split("-")[0].lower()
        if lang != DEFAULT_LANGUAGE and all(
            any((d / lang / f"{template}.{part}").is_file() for d in self.template_dirs)
            for part in PARTS
        ):
            return lang
        return DEFAULT_LANGUAGE

    def render(self, template: str, locale: str, context: Mapping[str, Any]) -> Rendered:
        """Render the three parts; raises jinja2.UndefinedError when the context lacks a key."""
        lang = self.language(template, locale)
        values = {**context, "lang": lang}
        parts: list[str] = []
        for part in PARTS:
            try:
                loaded = self._env.get_template(f"{lang}/{template}.{part}")
            except jinja2.TemplateNotFound:
                raise TemplateMissing(f"no template {lang}/{template}.{part}") from None
            parts.append(loaded.render(values))
        subject, text, html = parts
        # A subject is one header line: newlines from the template or the context would be a
        # header-injection hole (RFC 5322 §2.2), so all whitespace runs collapse to one space.
        return Rendered(subject=" ".join(subject.split()), text=text.strip() + "\n", html=html)

    def verify(self) -> int:
        """Compile every template file (a SIGHUP reload checks edits before the next delivery uses them);
        returns how many. Raises jinja2.TemplateSyntaxError naming the broken file."""
        names = sorted(
            {
                path.relative_to(directory).as_posix()
                for directory in self.template_dirs
                for path in directory.rglob("*")
                if path.is_file() and path.name.endswith(tuple(f".{part}" for part in PARTS))
            }
        )
        for name in names:
            self._env.get_template(name)
        return len(names)

    def template_names(self) -> list[str]:
        """Every template the default language provides (`customer.ack`, …)."""
        suffix = ".subject.txt"
        return sorted(
            {
                path.name[: -len(suffix)]
                for d in self.template_dirs
                for path in (d / DEFAULT_LANGUAGE).glob(f"*{suffix}")
            }
        )


# ---------------------------------------------------------------------------------------------
# Filters


def case_number(value: int | str) -> str:
    """`1042` -> `00001042`, the number customers see (SPEC.md §2)."""
    return format_case_number(int(value))


def local_time(value: str | datetime, tz: str, lang: str = DEFAULT_LANGUAGE) -> str:
    """An instant shown in a zone: `Friday 18 December 2026, 22:00 MST` (en) or
    `sexta-feira, 18 de dezembro de 2026, 22:00 MST` (pt). Zones whose abbreviation is only
    an offset (`-03`) are shown as `UTC-03:00`."""
    if isinstance(value, str):
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        instant = value
    if instant.tzinfo is None:
        raise ValueError(f"instant without a UTC offset: {value!r}")
    shown = instant.astimezone(ZoneInfo(tz))
    zone = shown.tzname() or ""
    if not zone or zone[0] in "+-" or zone[0].isdigit():
        offset = shown.strftime("%z")
        zone = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    lang = lang if lang in _WEEKDAYS else DEFAULT_LANGUAGE
    weekday = _WEEKDAYS[lang][shown.weekday()]
    month = _MONTHS[lang][shown.month - 1]
    clock = f"{shown.hour:02d}:{shown.minute:02d}"
    if lang == "pt":
        return f"{weekday}, {shown.day} de {month} de {shown.year}, {clock} {zone}"
    return f"{weekday} {shown.day} {month} {shown.year}, {clock} {zone}"


def status_name(status: str, lang: str = DEFAULT_LANGUAGE) -> str:
    """The display name of a status machine name, in the reader's language."""
    value = CaseStatus(status)
    if lang == "pt":
        return _STATUS_PT[value]
    return STATUS_DISPLAY[value]


def paragraphs(text: str) -> Markup:
    """Plain text as escaped HTML paragraphs, keeping line breaks (for bodies typed by people).

    Each block is escaped whole and its line breaks become `<br>` after: escaping leaves line
    breaks alone, so this is each line escaped, at a fraction of the cost for a long excerpt."""
    blocks = (block.strip() for block in str(text).replace("\r\n", "\n").split("\n\n"))
    return Markup("\n".join(f"<p>{escape(block)}</p>".replace("\n", "<br>\n") for block in blocks if block))


@jinja2.pass_context
def _local_filter(ctx: jinja2.runtime.Context, value: str | datetime, tz: str) -> str:
    return local_time(value, tz, str(ctx.get("lang", DEFAULT_LANGUAGE)))


@jinja2.pass_context
def _status_filter(ctx: jinja2.runtime.Context, value: str) -> str:
    return status_name(value, str(ctx.get("lang", DEFAULT_LANGUAGE)))


def utc_iso(instant: datetime) -> str:
    """The form instants take in template contexts: ISO 8601 in UTC with its offset."""
    return instant.astimezone(UTC).isoformat()
