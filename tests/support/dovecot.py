"""A private, throwaway Dovecot IMAP server for tests: start, stop, restart, reset UIDVALIDITY; it never touches the system's Dovecot.

Each server runs `dovecot -F -c <conf>` as our child process, listening on a free 127.0.0.1 port,
with its config, sockets, state and Maildir in a short temporary directory under /tmp (Unix
socket paths must fit in 108 bytes, and as root the mail user `dovecot` must be able to reach the
Maildir, which pytest's 0700 tmp tree forbids) and its log in the test's `tmp_path`. No TLS,
plaintext auth on loopback, one user from a passwd-file. As root, Dovecot's processes run as the
Debian package's `dovecot`/`dovenull` users; as any other user, everything runs as that user.

Fixtures (import them into a test module): `dovecot` (advertises MOVE) and `dovecot_without_move`
(advertises UIDPLUS but not MOVE, as older servers do). When Dovecot is not installed the tests
are skipped, unless CI=true, where they fail.

Dovecot's master takes a second or two to exit on SIGTERM (it sleeps while its log process
drains), so fixtures stop servers without waiting and a non-daemon reaper thread waits for the
exit (SIGKILL after a bound) and removes the directory; the interpreter joins that thread before
it exits, so no server outlives the test run. `stop()` and `restart()` called by a test do wait.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from mailcase.config import ImapSettings

IN_CI = os.environ.get("CI", "").lower() == "true"
HOST = "127.0.0.1"
USER = "desk@support.example.com"
PASSWORD = "correct horse battery staple"
START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 15.0

# What Dovecot 2.3 advertises, minus MOVE (RFC 6851). UIDPLUS (RFC 4315) stays, so a client can
# still remove exactly the messages it copied with UID EXPUNGE. Dovecot keeps *accepting* MOVE;
# well-behaved clients key off the advertised capability, which is what this server tests.
CAPABILITIES_WITHOUT_MOVE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE "
    "SAVEDATE LITERAL+ NOTIFY"
)

_INDEX_FILES = (
    "dovecot-uidlist",
    "dovecot.index",
    "dovecot.index.log",
    "dovecot.index.log.2",
    "dovecot.index.cache",
)
_LIST_INDEX_FILES = ("dovecot.list.index", "dovecot.list.index.log", "dovecot.list.index.log.2")


def dovecot_binary() -> str | None:
    """The dovecot executable (it lives in /usr/sbin, often not on a user's PATH), or None."""
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")


def require_dovecot() -> str:
    """The dovecot executable; skip the test when it is missing, fail when CI=true."""
    binary = dovecot_binary()
    if binary is None:
        reason = "Dovecot is not installed (apt-get install dovecot-imapd)"
        if IN_CI:
            pytest.fail(f"{reason}; it is required in CI (CI=true)")
        pytest.skip(reason)
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def folder_path(maildir: Path, folder: str) -> Path:
    """Where a folder lives in a Maildir++ tree: INBOX is the root, `A` is `.A`, `A/B` is `.A.B`."""
    if folder.upper() == "INBOX":
        return maildir
    return maildir / ("." + folder.replace("/", "."))


class DovecotServer:
    """One private Dovecot instance; `start()` it, use `settings()` for the poller, `client()` to look."""

    def __init__(
        self,
        binary: str,
        log_path: Path,
        *,
        advertise_move: bool = True,
        user: str = USER,
        password: str = PASSWORD,
        oauth2_introspection_url: str = "",
        oauthbearer: bool = True,
    ) -> None:
        self.binary = binary
        # With an introspection URL, a second passdb signs in with OAuth2 bearer tokens
        # (XOAUTH2, and OAUTHBEARER RFC 7628 unless `oauthbearer` is False) checked there (RFC 7662).
        self.oauth2_introspection_url = oauth2_introspection_url
        self.oauthbearer = oauthbearer
        self.log_path = log_path
        self.advertise_move = advertise_move
        self.user = user
        self.password = password
        self.host = HOST
        self.port = 0
        # Short and reachable by the mail user: see the module docstring.
        self.root = Path(tempfile.mkdtemp(prefix="mcdc-"))
        self.home = self.root / "home"
        self.maildir = self.home / "Maildir"
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start on a free port (the same one again after `stop()`); return once it greets clients."""
        if self.running:
            raise RuntimeError("Dovecot is already running")
        if self.port:
            self._spawn_and_wait()
            return
        for attempt in range(3):
            self.port = free_port()
            try:
                self._spawn_and_wait()
                return
            except RuntimeError as error:
                if "in use" not in str(error) or attempt == 2:
                    raise

    def stop(self, *, wait: bool = True) -> None:
        """SIGTERM our dovecot master (by PID); with `wait`, return once it has exited."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        if wait:
            _wait_or_kill(process)
            self._process = None

    def kick(self, user: str | None = None) -> None:
        """Disconnect every session of `user` (`doveadm kick`), as a server-side sign-out does."""
        doveadm = shutil.which("doveadm") or shutil.which("doveadm", path="/usr/bin:/usr/sbin")
        if doveadm is None:
            raise RuntimeError("doveadm is missing (it comes with dovecot-core)")
        subprocess.run(
            [doveadm, "-c", str(self.root / "dovecot.conf"), "kick", user or self.user],
            check=True,
            capture_output=True,
            timeout=STOP_TIMEOUT_SECONDS,
        )

    def restart(self) -> None:
        """Stop, then start again on the same port and Maildir."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop without waiting; a reaper thread waits for the exit and removes the directory."""
        process = self._process
        self.stop(wait=False)
        self._process = None
        root = self.root

        def reap() -> None:
            if process is not None:
                _wait_or_kill(process)
            shutil.rmtree(root, ignore_errors=True)

        # Not a daemon thread: the interpreter joins it before exiting, so no server is left behind.
        self._reaper = threading.Thread(target=reap, name=f"dovecot-reaper-{self.port}")
        self._reaper.start()

    def _spawn_and_wait(self) -> None:
        self._write_config()
        stderr_path = self.root / "dovecot.stderr"
        with stderr_path.open("ab") as stderr:
            self._process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.root / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"dovecot exited at start: {self._diagnostics()}")
            if self._greets():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"dovecot did not accept connections within {START_TIMEOUT_SECONDS} s: {self._diagnostics()}")

    def _greets(self) -> bool:
        # Reading the greeting, not just connecting: Dovecot accepts before auth is ready and
        # delays the greeting until it is (RFC 3501 §7.1.1 "* OK").
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as probe:
                return probe.recv(64).startswith(b"* OK")
        except OSError:
            return False

    def _diagnostics(self) -> str:
        parts = []
        for path in (self.root / "dovecot.stderr", self.log_path):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace")[-2000:])
        return " | ".join(part.strip() for part in parts if part.strip()) or "no output"

    def _write_config(self) -> None:
        for directory in (self.root / "run", self.root / "state", self.home):
            directory.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        rootless = os.geteuid() != 0
        if rootless:
            # Rootless Dovecot: every process runs as us, and chroot (which needs root) is off.
            mail = pwd.getpwuid(os.geteuid())
            internal_user = login_user = mail.pw_name
            internal_group = grp.getgrgid(mail.pw_gid).gr_name
        else:
            # Dovecot refuses UID 0 for mail and for its own unprivileged processes; the Debian
            # package creates `dovecot` (internal) and `dovenull` (login) for this.
            internal_user, login_user = "dovecot", "dovenull"
            for name in (internal_user, login_user):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    pytest.fail(f"user {name!r} is missing; reinstall dovecot-core")
            mail = pwd.getpwnam(internal_user)
            internal_group = grp.getgrgid(mail.pw_gid).gr_name
            self.root.chmod(0o755)
            os.chown(self.home, mail.pw_uid, mail.pw_gid)
        chroot = "  chroot =\n" if rootless else ""
        (self.root / "users").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        capability = "" if self.advertise_move else f"imap_capability = {CAPABILITIES_WITHOUT_MOVE}\n"
        mechanisms = "plain login"
        oauth2_passdb = ""
        if self.oauth2_introspection_url:
            bearer = " oauthbearer" if self.oauthbearer else ""
            mechanisms += " xoauth2" + bearer
            (self.root / "oauth2.conf").write_text(
                "introspection_mode = post\n"
                f"introspection_url = {self.oauth2_introspection_url}\n"
                "force_introspection = yes\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n"
            )
            oauth2_passdb = f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2{bearer}
  args = {self.root / "oauth2.conf"}
}}
"""
        config = f"""\
protocols = imap
listen = {self.host}
instance_name = mailcase-test-{self.root.name}
base_dir = {self.root / "run"}
state_dir = {self.root / "state"}
log_path = {self.log_path}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_failure_delay = 0
default_internal_user = {internal_user}
default_login_user = {login_user}
default_internal_group = {internal_group}
first_valid_uid = {min(mail.pw_uid, 500) or 1}
mail_location = maildir:{self.maildir}
mail_fsync = never
mail_max_userip_connections = 50
{capability}{oauth2_passdb}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root / "users"}
}}
userdb {{
  driver = static
  args = uid={mail.pw_uid} gid={mail.pw_gid} home={self.home}
}}
# No growing delay after failed logins from one IP (Dovecot's auth penalty): the wrong-password
# test retries quickly on purpose.
service anvil {{
{chroot}  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
{chroot}  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
        (self.root / "dovecot.conf").write_text(config)

    def set_password(self, password: str) -> None:
        """Change the user's password on the running server (its passwd-file is read at every sign-in)."""
        self.password = password
        (self.root / "users").write_text(f"{self.user}:{{PLAIN}}{password}::::::\n")

    # -- UIDVALIDITY -----------------------------------------------------------------------

    def reset_uidvalidity(self, folder: str = "INBOX") -> tuple[int, int]:
        """Give `folder` a new UIDVALIDITY and renumber its messages from UID 1; return (old, new).

        Stops the server, deletes the folder's UID list and indexes (as a restore from backup or
        a rebuilt index would), starts it again. Dovecot draws the new value from its
        `dovecot-uidvalidity` counter, so it differs from the old one; checked, not assumed.
        """
        old = self.uidvalidity(folder)
        self.stop()
        directory = folder_path(self.maildir, folder)
        for name in _INDEX_FILES:
            (directory / name).unlink(missing_ok=True)
        for name in _LIST_INDEX_FILES:
            (self.maildir / name).unlink(missing_ok=True)
        self.start()
        new = self.uidvalidity(folder)
        if new == old:
            raise RuntimeError(f"UIDVALIDITY of {folder} did not change ({old})")
        return old, new

    # -- looking at the mailbox ------------------------------------------------------------

    def settings(self, **overrides: Any) -> ImapSettings:
        """Poller settings for this server (plain IMAP on loopback)."""
        base = ImapSettings(
            name="desk",
            host=self.host,
            port=self.port,
            tls="none",
            user=self.user,
            password=self.password,
            folder="INBOX",
            processed_folder="Processed",
            poll_interval_seconds=1,
            batch_size=100,
            timeout_seconds=10,
            idle=True,
        )
        return replace(base, **overrides)

    @contextlib.contextmanager
    def client(self) -> Iterator[IMAPClient]:
        """A logged-in IMAPClient, logged out afterwards."""
        client = IMAPClient(self.host, self.port, ssl=False, timeout=10)
        try:
            client.login(self.user, self.password)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(self, messages: Iterable[bytes], folder: str = "INBOX", flags: tuple[bytes, ...] = ()) -> None:
        with self.client() as client:
            for message in messages:
                client.append(folder, message, flags=flags)

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self.client() as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            return sorted(client.search(["ALL"]))

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """The raw bytes of every message in `folder`, in UID order."""
        with self.client() as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = sorted(client.search(["ALL"]))
            fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
            return [fetched[uid][b"BODY[]"] for uid in uids]

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.client() as client:
            return int(client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"])

    def capabilities(self) -> tuple[bytes, ...]:
        with self.client() as client:
            return tuple(client.capabilities())

    def greeting_capabilities(self) -> tuple[bytes, ...]:
        """What a client sees before signing in (the AUTH= mechanisms are only listed there)."""
        client = IMAPClient(self.host, self.port, ssl=False, timeout=10)
        try:
            return tuple(client.capabilities())
        finally:
            with contextlib.suppress(Exception):
                client.shutdown()


def _wait_or_kill(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


@contextlib.contextmanager
def running_dovecot(log_dir: Path, *, advertise_move: bool = True, **options: Any) -> Iterator[DovecotServer]:
    """A started server for the duration of the block; stopped (and reaped) afterwards."""
    server = DovecotServer(require_dovecot(), log_dir / "dovecot.log", advertise_move=advertise_move, **options)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[DovecotServer]:
    """A private Dovecot that advertises MOVE (RFC 6851)."""
    with running_dovecot(tmp_path) as server:
        yield server


@pytest.fixture
def dovecot_without_move(tmp_path: Path) -> Iterator[DovecotServer]:
    """A private Dovecot that advertises UIDPLUS but not MOVE."""
    with running_dovecot(tmp_path, advertise_move=False) as server:
        yield server

