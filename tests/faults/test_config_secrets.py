"""Issue 13 point 10: a config error about a secret key names the key and the expected type, never the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.cli import run_mailcase_process

SECRET_DIGITS = "12345678901"


@pytest.mark.parametrize(
    ("table", "key"),
    [("outbound", "password"), ("security", "secret"), ("imap", "password")],
)
def test_a_secret_typed_as_a_number_is_not_printed(tmp_path: Path, table: str, key: str) -> None:
    config = tmp_path / "config.toml"
    if table == "imap":
        config.write_text(f'[[imap]]\nuser = "desk"\n{key} = {SECRET_DIGITS}\n')
        dotted = f"imap[0].{key}"
    else:
        config.write_text(f"[{table}]\n{key} = {SECRET_DIGITS}\n")
        dotted = f"{table}.{key}"

    result = run_mailcase_process(["cases", "list"], config=config, cwd=tmp_path, timeout=60)

    assert result.status != 0
    assert dotted in result.stderr
    assert "expected a string, got an integer" in result.stderr
    assert SECRET_DIGITS not in result.stderr + result.stdout


def test_a_mistyped_ordinary_key_still_shows_its_value(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[outbound]\nfrom_name = 4242\n")
    result = run_mailcase_process(["cases", "list"], config=config, cwd=tmp_path, timeout=60)
    assert result.status != 0
    assert "outbound.from_name: expected a string, got 4242" in result.stderr
