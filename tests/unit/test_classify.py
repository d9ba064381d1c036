"""Loop and backscatter protection, subject cleaning, case tags, commands and MACD requests."""

from __future__ import annotations

import pytest

from mailcase.domain import AutoKind, CaseKind
from mailcase.rules.classify import (
    Escalate,
    Note,
    Subscribe,
    Unsubscribe,
    case_tags,
    classify_auto,
    clean_subject,
    detect_command,
    macd_request,
)

PLAIN = "text/plain; charset=utf-8"

# Header sets written after what each product really sends (shapes, not copies).
OUTLOOK_PERSON = [
    ("Received", "from AM0PR01MB1234.eurprd01.prod.outlook.com by ... with HTTPS"),
    ("From", "Pat Doe <pat@acme.example>"),
    ("To", "support@support.example.com"),
    ("Subject", "SIP trunk down at Denver site"),
    ("Thread-Topic", "SIP trunk down at Denver site"),
    ("Thread-Index", "AdnVx1c2YWJjZGVmZw=="),
    ("Message-ID", "<SN6PR01MB4321A@SN6PR01MB4321.namprd01.prod.outlook.com>"),
    ("X-MS-Has-Attach", ""),
    ("X-MS-TNEF-Correlator", ""),
    ("X-MS-Exchange-Organization-AuthAs", "Internal"),
]
EXCHANGE_OOF = [
    ("From", "Pat Doe <pat@acme.example>"),
    ("To", "support@support.example.com"),
    ("Subject", "Automatic reply: [Case #00001042] SIP trunk down"),
    ("Thread-Topic", "[Case #00001042] SIP trunk down"),
    ("X-MS-Has-Attach", ""),
    ("X-Auto-Response-Suppress", "All"),
    ("X-MS-Exchange-Inbox-Rules-Loop", "pat@acme.example"),
    ("X-MS-TNEF-Correlator", ""),
    ("auto-submitted", "auto-generated"),
    ("x-ms-exchange-generated-message-source", "Mailbox Rules Agent"),
]
GMAIL_VACATION = [
    ("From", "Joao Silva <joao@brisa.example.com.br>"),
    ("Subject", "Férias: Re: [Case #00001042] Link caiu"),
    ("Precedence", "bulk"),
    ("X-Autoreply", "yes"),
    ("Auto-Submitted", "auto-replied"),
]
ZIMBRA_OOF = [
    ("From", "lee@acme.example"),
    ("Subject", "Re: [Case #00001042] SIP trunk down"),
    ("Auto-Submitted", "auto-replied (zimbra; vacation)"),
    ("Precedence", "bulk"),
    ("X-Mailer", "Zimbra 9.0.0_GA_4178 (zclient/9.0.0_GA_4178)"),
]


def test_person_writing_from_outlook_is_human() -> None:
    kind, reason = classify_auto(OUTLOOK_PERSON, "pat@acme.example", "pat@acme.example", PLAIN)
    assert kind is AutoKind.HUMAN
    assert reason


def test_exchange_out_of_office_is_an_auto_reply_named_by_auto_submitted() -> None:
    kind, reason = classify_auto(EXCHANGE_OOF, "pat@acme.example", "pat@acme.example", PLAIN)
    assert kind is AutoKind.AUTO_GENERATED
    assert "Auto-Submitted" in reason


def test_exchange_out_of_office_without_auto_submitted_is_caught_by_exchange_headers() -> None:
    headers = [(n, v) for n, v in EXCHANGE_OOF if n.lower() != "auto-submitted"]
    kind, reason = classify_auto(headers, "pat@acme.example", "pat@acme.example", PLAIN)
    assert kind is AutoKind.AUTO_REPLY
    assert "X-MS-Exchange" in reason and "X-Auto-Response-Suppress" in reason


def test_mail_redirected_by_an_exchange_inbox_rule_is_still_human() -> None:
    headers = OUTLOOK_PERSON + [("X-MS-Exchange-Inbox-Rules-Loop", "pat@acme.example")]
    assert classify_auto(headers, "pat@acme.example", None, PLAIN)[0] is AutoKind.HUMAN


def test_x_auto_response_suppress_alone_does_not_make_mail_automatic() -> None:
    headers = OUTLOOK_PERSON + [("X-Auto-Response-Suppress", "DR, RN, NRN, OOF, AutoReply")]
    assert classify_auto(headers, "pat@acme.example", None, PLAIN)[0] is AutoKind.HUMAN


def test_gmail_vacation_responder_is_an_auto_reply() -> None:
    kind, reason = classify_auto(GMAIL_VACATION, "joao@brisa.example.com.br", "joao@brisa.example.com.br", PLAIN)
    assert kind is AutoKind.AUTO_REPLY
    assert reason.startswith("Auto-Submitted: auto-replied")


def test_zimbra_vacation_is_an_auto_reply_not_bulk() -> None:
    kind, reason = classify_auto(ZIMBRA_OOF, "lee@acme.example", "", PLAIN)
    assert kind is AutoKind.AUTO_REPLY
    assert "zimbra" in reason


def test_auto_submitted_no_is_a_person() -> None:
    headers = [("Subject", "hello"), ("Auto-Submitted", "no")]
    assert classify_auto(headers, "pat@acme.example", None, PLAIN)[0] is AutoKind.HUMAN


@pytest.mark.parametrize("value", ["auto-generated", "auto-notified", "Auto-Generated; comment", "vacation"])
def test_auto_submitted_other_than_no_is_auto_generated(value: str) -> None:
    kind, reason = classify_auto([("Auto-Submitted", value)], "alerts@acme.example", None, PLAIN)
    assert kind is AutoKind.AUTO_GENERATED
    assert value in reason


@pytest.mark.parametrize("name", ["X-Autoreply", "X-Autorespond", "x-auto-reply", "X-Autoreply-From"])
def test_vendor_autoreply_headers_make_an_auto_reply(name: str) -> None:
    kind, reason = classify_auto([(name, "yes")], "pat@acme.example", None, PLAIN)
    assert kind is AutoKind.AUTO_REPLY
    assert reason.lower().startswith(name.lower())


def test_precedence_auto_reply_is_an_auto_reply() -> None:
    assert classify_auto([("Precedence", "auto_reply")], "a@b.example", None, PLAIN)[0] is AutoKind.AUTO_REPLY


@pytest.mark.parametrize(("value", "kind"), [("bulk", AutoKind.BULK), ("junk", AutoKind.BULK), ("list", AutoKind.LIST)])
def test_precedence_bulk_junk_and_list(value: str, kind: AutoKind) -> None:
    got, reason = classify_auto([("Precedence", value)], "news@vendor.example", "bounces@vendor.example", PLAIN)
    assert got is kind
    assert reason == f"Precedence: {value}"


def test_mailing_list_post_is_list_mail_named_by_list_id() -> None:
    headers = [
        ("From", "Lee <lee@acme.example>"),
        ("List-Id", "NOC team <noc.lists.acme.example>"),
        ("List-Post", "<mailto:noc@lists.acme.example>"),
        ("List-Unsubscribe", "<mailto:noc-leave@lists.acme.example>"),
    ]
    kind, reason = classify_auto(headers, "lee@acme.example", "noc-bounces@lists.acme.example", PLAIN)
    assert kind is AutoKind.LIST
    assert reason.startswith("List-Id")


def test_newsletter_with_only_list_unsubscribe_is_bulk() -> None:
    headers = [
        ("List-Unsubscribe", "<https://news.vendor.example/u/abc>, <mailto:u@news.vendor.example>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    kind, reason = classify_auto(headers, "news@vendor.example", "bounce-123@news.vendor.example", PLAIN)
    assert kind is AutoKind.BULK
    assert "List-Unsubscribe" in reason


def test_delivery_status_report_is_a_bounce() -> None:
    content_type = 'multipart/report; report-type=delivery-status;\n boundary="9B0A4"'
    kind, reason = classify_auto([], "postmaster@acme.example", "", content_type)
    assert kind is AutoKind.BOUNCE
    assert "delivery-status" in reason


def test_read_receipt_report_is_auto_generated_not_a_bounce() -> None:
    content_type = 'multipart/report; report-type="disposition-notification"; boundary=x'
    kind, reason = classify_auto([], "pat@acme.example", "pat@acme.example", content_type)
    assert kind is AutoKind.AUTO_GENERATED
    assert "disposition-notification" in reason


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@mx.acme.example", "postmaster@acme.example"])
def test_mail_system_senders_are_bounces(sender: str) -> None:
    kind, reason = classify_auto([("Subject", "failure notice")], sender.lower(), None, PLAIN)
    assert kind is AutoKind.BOUNCE
    assert sender.lower() in reason


def test_exim_failed_recipients_header_is_a_bounce() -> None:
    headers = [("X-Failed-Recipients", "eve@outsider.example"), ("Subject", "Mail delivery failed")]
    kind, reason = classify_auto(headers, "mailer@relay.example", "", PLAIN)
    assert kind is AutoKind.BOUNCE
    assert reason.startswith("X-Failed-Recipients")


def test_null_sender_with_bounce_subject_is_a_bounce() -> None:
    headers = [("Subject", "Undelivered Mail Returned to Sender")]
    assert classify_auto(headers, "relay@isp.example", "<>", PLAIN)[0] is AutoKind.BOUNCE


def test_null_sender_without_other_markers_is_auto_generated() -> None:
    kind, reason = classify_auto([("Subject", "Your ticket")], "robot@vendor.example", "<>", PLAIN)
    assert kind is AutoKind.AUTO_GENERATED
    assert "null envelope sender" in reason


def test_return_path_stands_in_for_an_unknown_envelope_sender() -> None:
    headers = [("Return-Path", "<>"), ("Subject", "hello")]
    assert classify_auto(headers, "robot@vendor.example", None, PLAIN)[0] is AutoKind.AUTO_GENERATED
    # A known envelope sender wins over a Return-Path left in the headers.
    assert classify_auto(headers, "robot@vendor.example", "robot@vendor.example", PLAIN)[0] is AutoKind.HUMAN


@pytest.mark.parametrize(
    "subject",
    ["Automatic reply: SIP trunk down", "Out of Office: back Monday", "Resposta automática: Link caiu"],
)
def test_out_of_office_subject_without_headers_is_an_auto_reply(subject: str) -> None:
    assert classify_auto([("Subject", subject)], "pat@acme.example", None, PLAIN)[0] is AutoKind.AUTO_REPLY


def test_person_asking_about_automatic_replies_is_human() -> None:
    headers = [("Subject", "Re: how do I set an automatic reply: question")]
    assert classify_auto(headers, "pat@acme.example", None, PLAIN)[0] is AutoKind.HUMAN


# ---------------------------------------------------------------------------- subjects


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: SIP trunk down", "SIP trunk down"),
        ("RE: FW: SIP trunk down", "SIP trunk down"),
        ("Fwd: Re: Fw: SIP trunk down", "SIP trunk down"),
        ("AW: WG: Störung", "Störung"),
        ("SV: VS: Linje nere", "Linje nere"),
        ("RES: ENC: Link caiu", "Link caiu"),
        ("Enc: Res: Link caiu", "Link caiu"),
        ("TR: Panne", "Panne"),
        ("Re[2]: SIP trunk down", "SIP trunk down"),
        ("Re(3):SIP trunk down", "SIP trunk down"),
        ("RE: [Case #00001042] SIP trunk down", "SIP trunk down"),
        ("[Case #00001042] RE: SIP trunk down", "SIP trunk down"),
        ("RE: [EXTERNAL] RE: [Case #1042]   SIP   trunk\tdown", "SIP trunk down"),
        ("SIP trunk down [Case #00001042]", "SIP trunk down"),
        ("Re: [Site 12] SIP trunk down", "[Site 12] SIP trunk down"),
        ("Request: new numbers", "Request: new numbers"),
        ("Resolution plan", "Resolution plan"),
        ("", ""),
    ],
)
def test_clean_subject_strips_prefixes_and_tags(subject: str, expected: str) -> None:
    assert clean_subject(subject) == expected


@pytest.mark.parametrize(
    ("subject", "numbers"),
    [
        ("RE: [Case #00001042] SIP trunk down", (1042,)),
        ("[Case#1042] down", (1042,)),
        ("[case #00001042] down", (1042,)),
        ("[ CASE # 7 ] x", (7,)),
        ("[Case #1042] and [Case #1043] and [Case #1042]", (1042, 1043)),
        ("Case 1042 without brackets", ()),
        ("[Case #0]", ()),
        ("Ticket #1042", ()),
    ],
)
def test_case_tags_are_read_tolerantly(subject: str, numbers: tuple[int, ...]) -> None:
    assert case_tags(subject) == numbers


# ---------------------------------------------------------------------------- commands


def test_hash_escalate_on_the_first_line_is_an_escalation() -> None:
    assert detect_command("Re: [Case #00001042] SIP trunk down", "#escalate") == Escalate(source="first line")
    assert detect_command("Re: x", "#ESCALATE please, down for 3 hours") == Escalate(source="first line")


def test_escalate_in_the_subject_is_an_escalation() -> None:
    assert detect_command("RE: [Case #00001042] ESCALATE SIP trunk down", "Still down.") == Escalate(source="subject")
    assert detect_command("Re: [Case #00001042] please escalate", "") == Escalate(source="subject")


def test_escalation_words_that_are_not_the_command_do_nothing() -> None:
    assert detect_command("Re: [Case #1] escalated yesterday", "Thanks") is None
    assert detect_command("Re: x", "We discussed #escalate last week") is None


def test_hash_note_on_the_first_line_is_a_note() -> None:
    assert detect_command("Re: [Case #00001042] x", "#note customer called, sent RMA") == Note()


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("subscribe 00001042", Subscribe(case_number=1042)),
        ("Subscribe #1042", Subscribe(case_number=1042)),
        ("SUBSCRIBE case 1042", Subscribe(case_number=1042)),
        ("subscribe platform Microsoft Teams", Subscribe(platform="Microsoft Teams")),
        ("subscribe platform   Five9 ", Subscribe(platform="Five9")),
        ("unsubscribe 00001042", Unsubscribe(case_number=1042)),
        ("Unsubscribe platform Cisco", Unsubscribe(platform="Cisco")),
        ("Re: [Case #00001042] subscribe", Subscribe()),
        ("unsubscribe", Unsubscribe()),
    ],
)
def test_subscription_commands_in_the_subject(subject: str, expected: object) -> None:
    assert detect_command(subject, "") == expected


def test_subject_merely_mentioning_subscribe_is_no_command() -> None:
    assert detect_command("How do I subscribe to outage notices?", "") is None
    assert detect_command("unsubscribe me from everything please", "") is None


def test_ordinary_reply_has_no_command() -> None:
    assert detect_command("Re: [Case #00001042] SIP trunk down", "Still down after the reboot.") is None


# ---------------------------------------------------------------------------- MACD


@pytest.mark.parametrize(
    ("subject", "to_macd", "expected"),
    [
        ("MACD: add 3 users to hunt group", False, CaseKind.MACD_STANDARD),
        ("macd : move desk phone", False, CaseKind.MACD_STANDARD),
        ("MACD: EXPEDITE add 3 users", False, CaseKind.MACD_EXPEDITED),
        ("MACD: add users (expedited please)", False, CaseKind.MACD_EXPEDITED),
        ("Fwd: MACD: delete extension 4411", False, CaseKind.MACD_STANDARD),
        ("Add two users", True, CaseKind.MACD_STANDARD),
        ("Expedited: add two users", True, CaseKind.MACD_EXPEDITED),
        ("SIP trunk down", False, None),
        ("Question about MACD: pricing", False, None),
        ("Please expedite the repair", False, None),
    ],
)
def test_macd_requests_by_subject_or_address(subject: str, to_macd: bool, expected: CaseKind | None) -> None:
    assert macd_request(subject, to_macd) is expected
