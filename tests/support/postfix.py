"""A private Debian Postfix instance for tests: its own main.cf/master.cf, queue and data directories under a
temp dir, loopback only, a free non-standard port, never port 25 and never the system instance; no tests here.

    with PrivatePostfix(root, transport="smtp:[127.0.0.1]:2525", relayhost=capture) as mx:
        queue_id = mx.send(message_bytes, sender, recipients)   # over SMTP to its smtpd
        mx.wait_for(queue_id, "deferred")                     # read from its own maillog
        mx.flush()                                            # `postqueue -c … -f`: retry now
        mx.wait_for(queue_id, "sent")

It is started and stopped with `postfix -c <its config dir>`: the commands act on this instance only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import smtplib
import subprocess
import time
from pathlib import Path
from types import TracebackType

from support.relay import HOST, free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
DOMAIN = "support.example.com"


def postfix_available() -> str:
    """Why the Postfix tests cannot run here, or "" when they can."""
    if not os.path.exists(POSTFIX):
        return "Debian's postfix is not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root"
    return ""


MASTER_CF = """\
{port}  inet  n  -  n  -  -  smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
{extra}"""


class PostfixError(AssertionError):
    pass


class PrivatePostfix:
    """One private Postfix: root directory, smtpd on a free loopback port, mail for DOMAIN to `transport`."""

    def __init__(self, root: Path, *, transport: str, relayhost: str, master_extra: str = "",
                 main_extra: str = "") -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.queue_dir = root / "queue"
        self.data_dir = root / "data"
        self.maillog = root / "maillog"
        self.port = free_port()
        self.transport = transport
        self.relayhost = relayhost
        self.master_extra = master_extra
        self.main_extra = main_extra
        self.started = False

    def _main_cf(self) -> str:
        return "\n".join([
            "compatibility_level = 3.6",
            f"queue_directory = {self.queue_dir}",
            f"data_directory = {self.data_dir}",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            f"maillog_file = {self.maillog}",
            f"maillog_file_prefixes = {self.root}",
            "myhostname = mx.test.example",
            "mydomain = test.example",
            "myorigin = $myhostname",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            f"relay_domains = {DOMAIN}",
            f"transport_maps = texthash:{self.config_dir / 'transport'}",
            # Everything else, bounces included, goes to the test's capture relay: a bounce cannot hide.
            f"relayhost = {self.relayhost}",
            "smtp_dns_support_level = disabled",
            "lmtp_dns_support_level = disabled",
            "smtpd_banner = $myhostname ESMTP",
            "alias_maps =",
            "alias_database =",
            "local_recipient_maps =",
            "biff = no",
            # The test retries on demand (`postqueue -f`), never by waiting.
            "queue_run_delay = 300s",
            "minimal_backoff_time = 300s",
            "maximal_backoff_time = 600s",
            "delay_warning_time = 0",
            "smtpd_recipient_restrictions = permit_mynetworks, reject",
            "smtp_tls_security_level = none",
            "lmtp_tls_security_level = none",
            "smtpd_tls_security_level = none",
            self.main_extra,
        ]) + "\n"

    def start(self) -> None:
        for directory in (self.config_dir, self.queue_dir, self.data_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        self.root.chmod(0o755)  # the postfix user must reach its queue and data directories
        shutil.chown(self.data_dir, "postfix")
        (self.config_dir / "main.cf").write_text(self._main_cf())
        (self.config_dir / "transport").write_text(f"{DOMAIN} {self.transport}\n")
        (self.config_dir / "master.cf").write_text(
            MASTER_CF.format(port=f"{HOST}:{self.port}", extra=self.master_extra)
        )
        self._postfix("check")
        self._postfix("start")
        self.started = True
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with smtplib.SMTP(HOST, self.port, timeout=5) as client:
                    client.noop()
                return
            except OSError:
                time.sleep(0.1)
        raise PostfixError(f"private postfix did not listen on {self.port}:\n{self.log()}")

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        result = subprocess.run([POSTFIX, "-c", str(self.config_dir), "stop"], capture_output=True, text=True,
                                check=False, timeout=60)
        pid_file = self.queue_dir / "pid" / "master.pid"
        if result.returncode != 0 and pid_file.exists():  # stop it by its own PID, nothing broader
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().strip()), 9)

    def _postfix(self, command: str) -> None:
        result = subprocess.run([POSTFIX, "-c", str(self.config_dir), command], capture_output=True, text=True,
                                check=False, timeout=60)
        if result.returncode != 0:
            raise PostfixError(f"postfix {command} failed: {result.stdout}{result.stderr}\n{self.log()}")

    def send(self, data: bytes, sender: str, recipients: list[str]) -> str:
        """Submit over SMTP to this instance's smtpd; returns the queue id it gave."""
        with smtplib.SMTP(HOST, self.port, timeout=30) as client:
            client.ehlo("client.acme.example")
            client.mail(sender)
            for recipient in recipients:
                code, reply = client.rcpt(recipient)
                if code != 250:
                    raise PostfixError(f"RCPT {recipient}: {code} {reply!r}")
            code, reply = client.data(data)
        match = re.search(r"queued as ([0-9A-Za-z]+)", reply.decode())
        if code != 250 or match is None:
            raise PostfixError(f"DATA: {code} {reply!r}")
        return match.group(1)

    def flush(self) -> None:
        """Retry every deferred message now."""
        subprocess.run([POSTQUEUE, "-c", str(self.config_dir), "-f"], check=True, capture_output=True, timeout=60)

    def queue(self) -> str:
        """`postqueue -p`: what is still queued (deferred or active)."""
        return subprocess.run([POSTQUEUE, "-c", str(self.config_dir), "-p"], check=True, capture_output=True,
                              text=True, timeout=60).stdout

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def deliveries(self, queue_id: str) -> list[str]:
        """The maillog's delivery lines (`status=…`) for one queue id, oldest first."""
        return [line for line in self.log().splitlines() if f" {queue_id}: " in line and " status=" in line]

    def wait_for(self, queue_id: str, status: str, *, count: int = 1, timeout: float = 60.0) -> list[str]:
        """Wait (bounded) until `count` delivery lines of `queue_id` have `status=<status>`; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.deliveries(queue_id) if f" status={status} " in line]
            if len(lines) >= count:
                return lines
            if time.monotonic() >= deadline:
                raise PostfixError(f"no {count} x status={status} for {queue_id} within {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.1)

    def bounces(self) -> list[str]:
        """Lines saying Postfix bounced something or sent a non-delivery notification."""
        return [line for line in self.log().splitlines()
                if " status=bounced " in line or "sender non-delivery notification" in line]

    def __enter__(self) -> PrivatePostfix:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
