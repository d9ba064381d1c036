"""Quoted-reply and signature stripping over the reply corpus in tests/fixtures/replies/."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailcase.ingest.quotes import strip_quoted

REPLIES = Path(__file__).resolve().parent.parent / "fixtures" / "replies"
CASES = sorted(
    path for path in REPLIES.iterdir()
    if path.suffix in {".txt", ".eml"} and not path.name.endswith(".expected.txt")
)


def _new_text(path: Path) -> str:
    if path.suffix == ".eml":
        from mailcase.ingest.parse import parse_message

        return parse_message(path.read_bytes()).new_text
    return strip_quoted(path.read_text(encoding="utf-8"))


def test_reply_corpus_covers_both_languages_and_every_client_style() -> None:
    names = " ".join(path.name for path in CASES)
    assert len(CASES) >= 20
    for style in ("outlook_desktop", "outlook_web", "outlook_mobile", "gmail", "apple_mail", "thunderbird"):
        assert style in names
    assert "_pt" in names and "_en" in names


@pytest.mark.parametrize("path", CASES, ids=[path.name for path in CASES])
def test_reply_new_text_matches_expected(path: Path) -> None:
    expected = (REPLIES / f"{path.stem}.expected.txt").read_text(encoding="utf-8").strip("\n")
    assert _new_text(path) == expected


def test_crlf_line_endings_give_the_same_new_text() -> None:
    text = (REPLIES / "gmail_en.txt").read_text(encoding="utf-8").replace("\n", "\r\n")
    assert strip_quoted(text) == "Yes, the Teams calling plan is assigned to all 40 users now."


def test_message_that_is_all_quote_keeps_its_full_text() -> None:
    assert strip_quoted("> only a quote\n> nothing new\n") == "> only a quote\n> nothing new"


def test_empty_text_stays_empty() -> None:
    assert strip_quoted("") == ""
    assert strip_quoted("\n\n") == ""


def test_signature_separator_on_the_first_line_is_not_a_signature() -> None:
    assert strip_quoted("--\nthe whole message") == "--\nthe whole message"


def test_sent_from_my_in_the_middle_of_a_message_is_kept() -> None:
    text = "Hi,\nSent from my laptop at home, the link works there.\nBut not at the office.\nOr the lab.\nPat"
    assert strip_quoted(text) == text


def test_huge_pasted_log_is_returned_whole_and_quickly() -> None:
    text = "\n".join(f"2025-06-03T10:{i % 60:02d} trunk-1 state flap {i}" for i in range(200_000))
    assert strip_quoted(text) == text
