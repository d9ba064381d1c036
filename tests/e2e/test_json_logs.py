"""`[logging] format = "json"` on a real `mailcase serve`: one JSON object per line with timestamp, level,
logger and message, the ingest line's fields as keys, never the body; the file is reopened on SIGHUP."""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

from support.daemon import MailcaseDaemon, wait_until
from support.desk_mail import message

BODY = "The trunk password is hunter2-7f3a and the body must never reach a log."


def records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines()]  # fails on any line that is not one JSON object


def test_serve_logs_json_lines_with_the_ingest_fields_and_reopens_them_on_sighup(tmp_path: Path) -> None:
    log_file = tmp_path / "mailcase.log"
    env = {"MAILCASE_LOGGING__FILE": str(log_file), "MAILCASE_LOGGING__FORMAT": "json", "MAILCASE_SMTP__WORKERS": "2"}
    with MailcaseDaemon(tmp_path, env=env) as daemon:
        daemon.prepare()
        daemon.start()
        data = message(("Pat Doe", "pat@acme.example"), "Trunk down", BODY, message_id="json-log@acme.example")
        with daemon.smtp() as client:
            client.sendmail("pat@acme.example", ["support@support.example.com"], data)
        ingest = wait_until(
            lambda: [r for r in records(log_file) if r.get("decision")], timeout=30, what="the ingest line"
        )
        (line,) = ingest
        assert {k: line[k] for k in ("level", "message_id", "channel", "decision")} == {
            "level": "INFO", "message_id": "<json-log@acme.example>", "channel": "smtp", "decision": "open_case",
        }
        assert line["case"] == "00000001" and line["reason"] and line["logger"] == "mailcase.ingest.pipeline"
        assert datetime.fromisoformat(line["timestamp"]).utcoffset() is not None
        assert "hunter2" not in log_file.read_text()

        # A worker must be up before SIGHUP (one that is still starting dies of it and is restarted).
        wait_until(lambda: any(r["message"].startswith("SMTP worker 1 serving") for r in records(log_file)),
                   timeout=30, what="the SMTP worker")
        log_file.rename(tmp_path / "mailcase.log.1")
        os.kill(daemon.pid, signal.SIGHUP)
        reloaded = wait_until(
            lambda: [r for r in records(log_file) if r["message"].startswith("SIGHUP: reloaded")],
            timeout=30, what="the reload line in the new file",
        )
        assert reloaded[0]["logger"] == "mailcase.daemon"
        # The SMTP worker process writes JSON too, saying which process it is.
        worker = wait_until(
            lambda: [r for r in records(log_file) if r["message"].startswith("SIGHUP: SMTP worker 1 reopened")],
            timeout=30, what="the worker's reload line",
        )
        assert worker[0]["process"] == "smtp-worker 1"
        assert daemon.stop() == 0
    for record in records(log_file) + records(tmp_path / "mailcase.log.1"):
        assert {"timestamp", "level", "logger", "message"} <= record.keys()
