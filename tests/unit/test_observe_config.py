"""The `[http]`, `[health]` and `[alerts]` keys: off by default, a token from its file, loopback unless a
token guards the endpoint, and one clear error naming the key otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailcase.config import load_config
from mailcase.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_endpoint_is_off_and_on_loopback_by_default() -> None:
    settings = load_config(None, {})
    assert settings.http.enabled is False
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 9125)
    assert settings.health.sweep_stall_seconds == 300 and settings.health.outbox_stall_seconds == 900
    assert settings.alerts.webhook_url == "" and settings.alerts.admin_address == ""


def test_the_token_and_the_webhook_url_come_from_their_files_and_are_never_shown(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("scrape-me\n")
    (tmp_path / "hook").write_text("https://hooks.example.net/T000/secret-path\n")
    config = write(tmp_path, '[http]\nenabled = true\nhost = "0.0.0.0"\ntoken_file = "token"\n'
                             '[alerts]\nwebhook_url_file = "hook"\n')  # fmt: skip
    settings = load_config(config, {})
    assert settings.http.token == "scrape-me"
    assert settings.alerts.webhook_url == "https://hooks.example.net/T000/secret-path"
    assert "scrape-me" not in repr(settings) and "secret-path" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[http]\nenabled = true\nhost = "0.0.0.0"\n', "http.host"),
        ("[http]\nport = 70000\n", "http.port"),
        ("[health]\ncheck_interval_seconds = 0\n", "health.check_interval_seconds"),
        ("[health]\nrelay_down_seconds = -1\n", "health.relay_down_seconds"),
        ('[alerts]\nwebhook_url = "ftp://example.net/"\n', "alerts.webhook_url"),
        ('[alerts]\nadmin_address = "nobody"\n', "alerts.admin_address"),
        ('[http]\ntoken_file = "missing"\n', "http.token_file"),
    ],
)
def test_a_wrong_value_names_its_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), {})
    assert caught.value.key == key
