"""The LMTP listener of `mailcase serve` (RFC 2033), spoken to directly: LHLO, one reply per recipient after
DATA, EHLO refused. (tests/e2e/test_postfix.py drives it from a real Postfix.)"""

from __future__ import annotations

import socket
from pathlib import Path

from support.daemon import MailcaseDaemon
from support.relay import HOST, free_port

MESSAGE = (
    b"From: Pat Doe <pat@acme.example>\r\nTo: support@support.example.com, macd@support.example.com\r\n"
    b"Subject: Calls drop over LMTP\r\nMessage-ID: <lmtp-1@acme.example>\r\n\r\nEvery call drops.\r\n"
)


class _Lmtp:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.file = self.sock.makefile("rb")

    def reply(self) -> list[str]:
        lines = []
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines

    def command(self, text: str) -> list[str]:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()


def test_lmtp_answers_each_recipient_after_one_commit(tmp_path: Path) -> None:
    port = free_port()
    with MailcaseDaemon(tmp_path, env={"MAILCASE_LMTP__ENABLED": "true", "MAILCASE_LMTP__PORT": str(port)}) as daemon:
        daemon.prepare()
        daemon.start()
        client = _Lmtp(port)
        assert client.reply()[0].startswith("220 ")
        assert client.command("EHLO mx.test.example")[0].startswith("500 ")  # LMTP has LHLO only
        assert client.command("LHLO mx.test.example")[-1].startswith("250 ")
        assert client.command("MAIL FROM:<pat@acme.example>")[0].startswith("250 ")
        assert client.command("RCPT TO:<support@support.example.com>")[0].startswith("250 ")
        assert client.command("RCPT TO:<macd@support.example.com>")[0].startswith("250 ")
        assert client.command("RCPT TO:<nobody@elsewhere.example>")[0].startswith("550 ")
        assert client.command("DATA")[0].startswith("354 ")
        client.sock.sendall(MESSAGE + b".\r\n")

        replies = [client.reply()[0], client.reply()[0]]  # one per accepted recipient (RFC 2033 §4.2)

        assert all(reply.startswith("250 2.0.0 Ok: queued as ") for reply in replies), replies
        assert client.command("QUIT")[0].startswith("221 ")
        cases = daemon.cli("cases", "list", "--json").json()
        assert [case["subject"] for case in cases] == ["Calls drop over LMTP"]
        assert daemon.stop() == 0
        assert f"LMTP listening on {HOST}:{port}" in daemon.log()
