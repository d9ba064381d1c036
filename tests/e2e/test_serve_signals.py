"""SIGHUP on a real `mailcase serve` (issue 17): the daemon keeps running, reopens its log file (as logrotate's
postrotate expects), re-checks the templates, tells its SMTP workers, and logs that it did."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from support.daemon import MailcaseDaemon, wait_until


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_sighup_reopens_the_log_file_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    log_file = tmp_path / "mailcase.log"
    with MailcaseDaemon(
        tmp_path, env={"MAILCASE_LOGGING__FILE": str(log_file), "MAILCASE_SMTP__WORKERS": "2"}
    ) as daemon:
        daemon.prepare()
        daemon.start()
        wait_until(lambda: "SMTP worker 1 serving" in _log(log_file), timeout=30, what="the SMTP worker")
        log_file.rename(tmp_path / "mailcase.log.1")  # what logrotate does before its postrotate

        os.kill(daemon.pid, signal.SIGHUP)

        reloaded = wait_until(
            lambda: "SIGHUP: reloaded" in _log(log_file) and "SMTP worker 1 reopened" in _log(log_file),
            timeout=30, what="the reload lines in the new log file",
        )
        assert reloaded
        line = next(line for line in _log(log_file).splitlines() if "SIGHUP: reloaded" in line)
        assert " INFO mailcase.daemon: " in line
        assert "1 log file(s) reopened" in line and "template files checked" in line
        assert "SIGHUP" not in _log(tmp_path / "mailcase.log.1")
        assert daemon.running
        with daemon.smtp() as client:  # still serving
            assert client.noop()[0] == 250
        assert daemon.stop() == 0
        assert "stopped" in _log(log_file).splitlines()[-1]
