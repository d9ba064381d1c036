"""systemd: the units in contrib/systemd pass `systemd-analyze verify` and carry the hardening the
README promises, and a real `mailcase serve` speaks the notify protocol (READY=1 once it answers
SMTP, WATCHDOG=1 from its scheduler, STOPPING=1) on a datagram socket the test opens."""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import REPO
from support.daemon import MailcaseDaemon

UNITS = REPO / "contrib" / "systemd"
INSTALLED = "/opt/mailcase/bin/mailcase"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if IN_CI:
            pytest.fail("systemd-analyze is required in CI (Debian's systemd package; .ci/run installs it)")
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return found


def unit_settings(name: str) -> dict[str, list[str]]:
    """Key -> every value it is given in the unit (systemd allows repeats, e.g. ExecStart)."""
    settings: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_units_pass_systemd_analyze_verify(systemd_analyze: str, tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this checkout's mailcase.
    program = str(Path(sys.executable).parent / "mailcase")
    for unit in UNITS.iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED, program))
    units = sorted(str(p) for p in tmp_path.iterdir())
    assert {Path(u).name for u in units} >= {"mailcase.service", "mailcase-tick.service", "mailcase-tick.timer"}
    result = subprocess.run([systemd_analyze, "verify", *units], capture_output=True, text=True, timeout=120, check=False)
    # verify exits 0 on many problems (an unknown key, a bad time span) and only says so: no output at all.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_service_is_notify_with_watchdog_reload_and_hardening() -> None:
    unit = unit_settings("mailcase.service")
    expected = {
        "Type": ["notify"],
        "ExecReload": ["/bin/kill -HUP $MAINPID"],
        "User": ["mailcase"],
        "ProtectSystem": ["strict"],
        "NoNewPrivileges": ["yes"],
        "PrivateTmp": ["yes"],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "ReadWritePaths": ["/var/lib/mailcase /var/log/mailcase"],
    }
    assert {key: unit.get(key) for key in expected} == expected
    assert int(unit["WatchdogSec"][0]) > 0
    assert unit["ExecStart"] == [f"{INSTALLED} --config /etc/mailcase/config.toml serve"]
    assert unit_settings("mailcase-tick.service")["ExecStart"] == [f"{INSTALLED} --config /etc/mailcase/config.toml tick"]


def test_serve_notifies_ready_when_smtp_answers_pings_the_watchdog_and_says_stopping(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    daemon = MailcaseDaemon(tmp_path / "serve")
    daemon.prepare()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")} | daemon.env
    environ |= {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}  # a ping every 0.2 s
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, daemon.log_path.open("ab") as log:
        sock.bind(str(path))
        sock.settimeout(60)  # a bound on a silent daemon, not a timing assertion
        # Started by hand, not by MailcaseDaemon.start(), which would poll the port: here READY=1
        # alone must mean "accepting SMTP", as systemd's dependants will take it.
        process = subprocess.Popen(
            [sys.executable, "-m", "mailcase", "--config", str(daemon.config), "serve"],
            cwd=daemon.workdir, env=environ, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            first = sock.recv(4096).decode()
            assert first.startswith("READY=1\n") and f"smtp={daemon.host}:{daemon.port}" in first
            with smtplib.SMTP(daemon.host, daemon.port, timeout=10) as client:  # one try, no polling
                assert client.noop()[0] == 250
            pings = [sock.recv(4096).decode() for _ in range(3)]
            assert pings == ["WATCHDOG=1"] * 3
            process.terminate()
            assert process.wait(60) == 0, daemon.log()
            while (said := sock.recv(4096).decode()) == "WATCHDOG=1":
                pass
            assert said.startswith("STOPPING=1")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)


def test_no_watchdog_pings_for_another_process(tmp_path: Path) -> None:
    from mailcase.systemd import notify, watchdog_interval

    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({}) is None
    assert notify("READY=1", {}) is False  # not started by systemd: nothing to do, no error
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        name = f"mailcase-test-{os.getpid()}"
        sock.bind("\0" + name)  # the abstract namespace, as systemd's own socket may be
        assert notify("STATUS=x", {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(100) == b"STATUS=x"
