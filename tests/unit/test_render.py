"""Templates: every one renders in English and Portuguese from its documented context (docs/templates.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pytest

from mailcase.notify.render import Renderer, TemplateMissing, local_time, paragraphs, status_name

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
LANGUAGES = ("en", "pt")

# One sample context per template: exactly the required keys of docs/templates.md, so that
# StrictUndefined proves the documented contract is enough. OPTIONAL adds the optional keys.
SAMPLES: dict[str, dict[str, Any]] = {
    "customer.ack": {"case_number": 1042, "case_subject": "Phones down in Denver office"},
    "customer.non_mpoc": {"sender_address": "jo@acme.example"},
    "customer.sender_unverified": {
        "original_subject": "MACD: add 40 licences",
        "claimed_address": "pat@acme.example",
        "reason": "sender not authenticated (dmarc=fail, p=reject, d=acme.example)",
    },
    "staff.sender_unverified": {
        "original_subject": "Re: [Case #00001042] Phones",
        "claimed_address": "ana@support.example.com",
        "reason": "technician ana@support.example.com not proven on case 00001042",
    },
    "customer.reopened": {"case_number": 1042, "case_subject": "Phones down"},
    "customer.reply": {
        "case_number": 1042,
        "case_subject": "Phones down",
        "body": "Hello Pat,\n\nWe restarted the gateway.\nPlease test again.",
        "author_name": "Ana Lima",
    },
    "customer.status_changed": {"case_number": 1042, "case_subject": "Phones down", "status": "in_progress"},
    "customer.escalated": {
        "case_number": 1042,
        "case_subject": "Phones down",
        "level": 2,
        "owner_name": "Rui Costa, Support Manager",
    },
    "customer.nudge": {"case_number": 1042, "case_subject": "Phones down"},
    "customer.closed_no_response": {"case_number": 1042, "case_subject": "Phones down"},
    "customer.subscription": {
        "action": "subscribed",
        "master_number": 900,
        "support_address": "support@support.example.com",
    },
    "customer.maintenance": {
        "stage": "ahead",
        "kind": "scheduled",
        "start": "2026-12-19T05:00:00+00:00",
        "end": "2026-12-19T11:00:00+00:00",
        "tz": "America/Chicago",
        "products": ["Microsoft Teams", "Cisco"],
        "description": "Core router software upgrade.",
        "justification": "Fixes a security vulnerability.",
    },
    "customer.master_update": {
        "master_number": 900,
        "master_subject": "Teams calls failing",
        "status": "in_progress",
        "body": "The carrier has found the faulty link.",
    },
    "customer.master_closed": {"master_number": 900, "master_subject": "Teams calls failing"},
    "staff.new_case": {
        "case_number": 1042,
        "case_subject": "Phones down",
        "organisation_name": "Acme Corp",
        "requester": "pat@acme.example",
        "priority": "P4",
        "excerpt": "All phones in the Denver office show no service.",
    },
    "staff.held_digest": {
        "tz": "America/Denver",
        "held": [{"id": 7, "from": "eve@outsider.example", "subject": "Hello", "reason": "not a contact",
                  "received_at": "2026-11-25T23:00:00+00:00"}],
        "expiring": [{"id": 3, "from": "old@outsider.example", "subject": "Invoice",
                      "received_at": "2026-09-01T16:00:00+00:00"}],
        "purge_after_days": 90,
    },
    "staff.reply_not_sent": {"original_subject": "Re: Phones down", "reason": "the case is closed", "held_id": 7},
    "staff.customer_update": {
        "case_number": 1042,
        "case_subject": "Phones down",
        "organisation_name": "Acme Corp",
        "from_address": "pat@acme.example",
        "status": "in_progress",
        "excerpt": "Still broken after the restart.",
    },
    "staff.sla_reminder": {
        "case_number": 1042,
        "case_subject": "Phones down",
        "organisation_name": "Acme Corp",
        "priority": "P2",
        "deadline": "response",
        "due_at": "2026-11-25T23:30:00+00:00",
        "tz": "America/Denver",
    },
    "staff.sla_escalation": {
        "case_number": 1042,
        "case_subject": "Phones down",
        "organisation_name": "Acme Corp",
        "priority": "P2",
        "status": "new",
        "level": 2,
        "deadline": "response",
        "due_at": "2026-11-25T23:30:00+00:00",
        "tz": "America/Denver",
        "summary": "All phones in the Denver office show no service.",
    },
    "staff.unassigned_alert": {
        "case_number": 1042,
        "case_subject": "Phones down",
        "organisation_name": "Acme Corp",
        "priority": "P1",
        "created_at": "2026-11-25T23:00:00+00:00",
        "tz": "America/Denver",
    },
    "staff.hold_expired": {
        "case_number": 1042,
        "case_subject": "Phones down",
        "organisation_name": "Acme Corp",
        "hold_until": "2026-11-26T15:00:00+00:00",
        "tz": "America/Denver",
    },
    "staff.oauth_alert": {
        "condition": "signed_out",
        "grant": "m365",
        "reason": "token endpoint refused: invalid_grant: AADSTS50173: the grant was revoked",
        "since": "2026-11-25T23:00:00+00:00",
    },
    "staff.health_alert": {
        "part": "scheduler",
        "state": "critical",
        "detail": "a sweep has been running for 412s",
        "since": "2026-11-25T23:00:00+00:00",
        "host": "desk1.support.example.com",
    },
    "staff.escalated": {
        "case_number": 1042,
        "case_subject": "Phones down",
        "organisation_name": "Acme Corp",
        "priority": "P2",
        "status": "in_progress",
        "level": 3,
        "owner_name": "vp-support@support.example.com",
        "reason": "customer",
        "history": [
            {"at": "2026-11-25T23:00:00+00:00", "author": "pat@acme.example", "summary": "Case opened"},
            {"at": "2026-11-25T23:20:00+00:00", "author": "", "summary": "Priority set to P2"},
        ],
        "tz": "America/Denver",
    },
    "staff.master_update_reminder": {
        "master_number": 900,
        "master_subject": "Teams calls failing",
        "due_at": "2026-11-26T00:00:00+00:00",
        "tz": "America/Denver",
    },
}

OPTIONAL: dict[str, dict[str, Any]] = {
    "customer.ack": {
        "recipient_name": "Pat Doe",
        "related_number": 981,
        "macd": "expedited",
        "support_phone": "+1 303 555 0100",
        "chat_url": "https://support.example.com/chat",
    },
    "customer.non_mpoc": {"recipient_name": "Jo", "organisation_name": "Acme Corp", "support_phone": "+1 303 555 0100"},
    "customer.sender_unverified": {"recipient_name": "Pat", "organisation_name": "Acme Corp"},
    "staff.sender_unverified": {},
    "customer.reopened": {"recipient_name": "Pat"},
    "customer.reply": {"awaiting_customer": True},
    "customer.status_changed": {
        "status": "resolved_follow_up",
        "etr": "2026-11-27T18:00:00+00:00",
        "close_at": "2026-11-27T23:00:00+00:00",
        "tz": "America/Chicago",
        "note": "We replaced the <b>gateway</b>.",
        "reopen_window_days": 7,
        "recipient_name": "Pat",
    },
    "customer.escalated": {"reason": "customer", "recipient_name": "Pat"},
    "customer.nudge": {"close_at": "2026-11-27T23:00:00+00:00", "tz": "America/Chicago"},
    "customer.closed_no_response": {"recipient_name": "Pat"},
    "customer.subscription": {"master_subject": "Teams calls failing"},
    "customer.maintenance": {
        "desk_tz": "America/Denver",
        "window_ref": "MW-2026-12",
        "stage": "update",
        "previous_start": "2026-12-18T05:00:00+00:00",
        "previous_end": "2026-12-18T11:00:00+00:00",
        "recipient_name": "Pat",
        "organisation_name": "Acme Corp",
    },
    "customer.master_update": {
        "platform": "Microsoft Teams",
        "case_number": 1042,
        "next_update_at": "2026-11-26T00:00:00+00:00",
        "tz": "America/Chicago",
    },
    "customer.master_closed": {"platform": "Microsoft Teams", "case_number": 1042, "body": "The link is repaired."},
    "staff.new_case": {
        "kind": "macd_standard",
        "assignee": "ana@support.example.com",
        "team": "support",
        "response_due_at": "2026-11-26T23:00:00+00:00",
        "tz": "America/Denver",
        "related_number": 981,
    },
    "staff.customer_update": {
        "priority": "P3", "assignee": "ana@support.example.com",
        "customer_not_told": "the customer was not sent the reopen notice: rate limit",
        "attachments": [{"filename": "a.log", "content_type": "text/plain", "size": 2048, "attached": False,
                         "fetch": "mailcase attachments get 00001042 0123456789ab"}],
    },
    "staff.held_digest": {},
    "staff.reply_not_sent": {"tz": "America/Denver"},
    "staff.sla_reminder": {"assignee": "ana@support.example.com"},
    "staff.sla_escalation": {"assignee": "ana@support.example.com", "level": 3},
    "staff.unassigned_alert": {"excerpt": "Nothing works."},
    "staff.hold_expired": {"assignee": "ana@support.example.com"},
    "staff.escalated": {"requester": "pat@acme.example", "excerpt": "#escalate\nWe are losing sales."},
    "staff.oauth_alert": {},
    "staff.health_alert": {},
    "staff.master_update_reminder": {
        "platform": "Microsoft Teams",
        "last_update_at": "2026-11-25T23:00:00+00:00",
        "subscriber_count": 12,
    },
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def test_every_template_has_a_documented_sample(renderer: Renderer) -> None:
    assert renderer.template_names() == sorted(SAMPLES)
    documented = (TEMPLATES.parent / "docs" / "templates.md").read_text(encoding="utf-8")
    for name in SAMPLES:
        assert f"`{name}`" in documented


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("template", sorted(SAMPLES))
def test_template_renders_from_its_required_context(renderer: Renderer, template: str, lang: str) -> None:
    assert renderer.language(template, lang) == lang
    rendered = renderer.render(template, lang, SAMPLES[template])
    _assert_well_formed(template, rendered.subject, rendered.text, rendered.html, lang)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("template", sorted(SAMPLES))
def test_template_renders_with_its_optional_context(renderer: Renderer, template: str, lang: str) -> None:
    rendered = renderer.render(template, lang, {**SAMPLES[template], **OPTIONAL[template]})
    _assert_well_formed(template, rendered.subject, rendered.text, rendered.html, lang)


def _assert_well_formed(template: str, subject: str, text: str, html: str, lang: str) -> None:
    assert subject and "\n" not in subject
    assert text.strip() and text.endswith("\n")
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert f'<html lang="{lang}">' in html
    context = SAMPLES[template]
    number = context.get("case_number", context.get("master_number"))
    if number is not None:
        assert f"[Case #{number:08d}]" in subject
    assert "\n\n\n" not in text


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("template", sorted(SAMPLES))
def test_a_missing_context_key_is_an_error_not_a_gap(renderer: Renderer, template: str, lang: str) -> None:
    context = dict(SAMPLES[template])
    context.pop(sorted(context)[0])
    with pytest.raises((jinja2.UndefinedError, KeyError)):
        renderer.render(template, lang, context)


def test_every_status_renders_its_meaning(renderer: Renderer) -> None:
    for lang in LANGUAGES:
        for status in (
            "new",
            "in_progress",
            "duplicate",
            "on_hold",
            "shipping",
            "resolved_follow_up",
            "customer_reopened",
            "closed_no_response",
            "closed",
        ):
            context = {
                **SAMPLES["customer.status_changed"],
                "status": status,
                "duplicate_of": 1000,
                "hold_until": "2026-12-01T15:00:00+00:00",
                "tz": "America/Denver",
            }
            rendered = renderer.render("customer.status_changed", lang, context)
            assert status_name(status, lang) in rendered.subject


def test_every_maintenance_stage_and_kind_renders(renderer: Renderer) -> None:
    for lang in LANGUAGES:
        for stage in ("ahead", "start", "end", "update", "cancelled"):
            for kind in ("scheduled", "unscheduled", "connect"):
                context = {**SAMPLES["customer.maintenance"], "stage": stage, "kind": kind}
                assert renderer.render("customer.maintenance", lang, context).subject


def test_customer_html_escapes_what_the_customer_wrote(renderer: Renderer) -> None:
    context = {**SAMPLES["customer.ack"], "case_subject": "<script>alert(1)</script> & more"}
    rendered = renderer.render("customer.ack", "en", context)
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in rendered.html
    assert "<script>alert(1)</script> & more" in rendered.text
    assert "<script>alert(1)</script> & more" in rendered.subject


def test_reply_shows_the_technicians_name_and_body_but_not_their_address(renderer: Renderer) -> None:
    rendered = renderer.render("customer.reply", "en", SAMPLES["customer.reply"])
    assert "Ana Lima" in rendered.text
    assert "We restarted the gateway." in rendered.text
    assert "@support.example.com" not in rendered.text
    assert "<p>Hello Pat,</p>" in rendered.html
    assert "We restarted the gateway.<br>\nPlease test again." in rendered.html


def test_ack_tells_the_customer_it_is_p4_until_reviewed_and_to_phone_when_urgent(renderer: Renderer) -> None:
    text = renderer.render("customer.ack", "en", SAMPLES["customer.ack"]).text
    assert "P4" in text
    assert "urgent" in text
    assert "call us" in text


def test_ack_for_a_related_case_names_both_numbers(renderer: Renderer) -> None:
    context = {**SAMPLES["customer.ack"], "related_number": 981}
    for lang in LANGUAGES:
        rendered = renderer.render("customer.ack", lang, context)
        assert "00001042" in rendered.text and "00000981" in rendered.text
        assert "00001042" in rendered.html and "00000981" in rendered.html


def test_maintenance_shows_the_organisation_zone_and_mountain_time(renderer: Renderer) -> None:
    text = renderer.render("customer.maintenance", "en", SAMPLES["customer.maintenance"]).text
    assert "Friday 18 December 2026, 23:00 CST" in text
    assert "Friday 18 December 2026, 22:00 MST" in text
    assert "Microsoft Teams, Cisco" in text


def test_maintenance_in_mountain_time_is_shown_once(renderer: Renderer) -> None:
    context = {**SAMPLES["customer.maintenance"], "tz": "America/Denver"}
    text = renderer.render("customer.maintenance", "en", context).text
    assert text.count("Friday 18 December 2026, 22:00 MST") == 1


def test_unknown_locale_falls_back_to_english(renderer: Renderer) -> None:
    rendered = renderer.render("customer.nudge", "fr", SAMPLES["customer.nudge"])
    assert rendered.subject.startswith("[Case #00001042] Waiting for your reply")


def test_regional_portuguese_locale_uses_portuguese_templates(renderer: Renderer) -> None:
    assert renderer.language("customer.nudge", "pt-BR") == "pt"
    assert renderer.language("customer.nudge", "pt_BR") == "pt"


def test_locale_without_a_template_falls_back_to_english(tmp_path: Path) -> None:
    for lang, word in (("en", "Hello"), ("pt", "Olá")):
        (tmp_path / lang).mkdir()
        for part in ("subject.txt", "txt", "html"):
            (tmp_path / lang / f"customer.both.{part}").write_text(f"{word} {{{{ n }}}}")
    for part in ("subject.txt", "txt", "html"):
        (tmp_path / "en" / f"customer.only_en.{part}").write_text("Hello {{ n }}")
    renderer = Renderer(tmp_path)
    assert renderer.render("customer.both", "pt", {"n": 1}).subject == "Olá 1"
    assert renderer.render("customer.only_en", "pt", {"n": 1}).subject == "Hello 1"


def test_unknown_template_is_reported(renderer: Renderer) -> None:
    with pytest.raises(TemplateMissing):
        renderer.render("customer.nonexistent", "en", {})


def test_subject_newlines_from_context_cannot_inject_headers(renderer: Renderer) -> None:
    context = {**SAMPLES["customer.ack"], "case_subject": "Hi\r\nBcc: victim@example.com"}
    subject = renderer.render("customer.ack", "en", context).subject
    assert "\n" not in subject and "\r" not in subject


def test_local_time_formats_in_english_and_portuguese() -> None:
    instant = datetime(2026, 12, 19, 5, 0, tzinfo=UTC)
    assert local_time(instant.isoformat(), "America/Denver") == "Friday 18 December 2026, 22:00 MST"
    assert (
        local_time("2026-12-19T05:00:00Z", "America/Denver", "pt")
        == "sexta-feira, 18 de dezembro de 2026, 22:00 MST"
    )
    assert local_time(instant, "America/Sao_Paulo", "pt") == "sábado, 19 de dezembro de 2026, 02:00 UTC-03:00"
    assert local_time("2026-07-01T12:00:00+00:00", "America/Denver") == "Wednesday 1 July 2026, 06:00 MDT"


def test_local_time_refuses_an_instant_without_offset() -> None:
    with pytest.raises(ValueError):
        local_time("2026-12-19T05:00:00", "America/Denver")


def test_paragraphs_escape_and_keep_line_breaks() -> None:
    assert str(paragraphs("a < b\nc\n\nd")) == "<p>a &lt; b<br>\nc</p>\n<p>d</p>"


def test_an_operators_template_directory_overrides_single_files(tmp_path: Path) -> None:
    from mailcase.config import load_config
    from mailcase.resources import packaged_templates, template_search_path

    (tmp_path / "overrides" / "en").mkdir(parents=True)
    (tmp_path / "overrides" / "en" / "customer.ack.subject.txt").write_text(
        "[Case #{{ case_number | case_number }}] We have your message about {{ case_subject }}\n",
        encoding="utf-8",
    )
    config = tmp_path / "config.toml"
    config.write_text('[templates]\ndir = "overrides"\n', encoding="utf-8")
    settings = load_config(config, {})
    assert settings.templates.dir == str(tmp_path / "overrides")  # relative to the config file

    renderer = Renderer(template_search_path(settings.templates.dir))
    context = SAMPLES["customer.ack"]
    rendered = renderer.render("customer.ack", "en", context)
    packaged = Renderer(packaged_templates()).render("customer.ack", "en", context)
    assert rendered.subject.endswith(f"We have your message about {context['case_subject']}")
    assert rendered.subject != packaged.subject
    assert rendered.text == packaged.text  # every file not overridden still comes from the package
    # A language the override directory lacks is still found whole in the package.
    assert renderer.language("customer.ack", "pt") == "pt"


def test_held_digest_lists_the_messages_about_to_be_purged_once_and_keeps_its_title_plain(
    renderer: Renderer,
) -> None:
    for lang in ("en", "pt"):
        html = renderer.render("staff.held_digest", lang, SAMPLES["staff.held_digest"]).html
        title = html.split("<title>", 1)[1].split("</title>", 1)[0]
        assert "<" not in title and "#3" not in title
        assert html.count("old@outsider.example") == 1
