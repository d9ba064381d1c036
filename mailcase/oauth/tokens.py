"""The token file: every grant's access and refresh tokens, created 0600 and rewritten atomically under an exclusive lock; it never logs and never fetches.

Several processes (the daemon, SMTP workers, `mailcase tick`, a second daemon on the same host)
share one file. `TokenFile.locked()` holds `flock` on a sibling `.lock` file for a whole
read-refresh-write, so two processes never refresh the same grant at once, and the second one
reads the token the first one stored. Writes go to a temporary file in the same directory
(0600 from its creation, never world-readable even for an instant) and replace the file.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the database is reached only when grants are kept in PostgreSQL
    import sqlalchemy as sa

FILE_MODE = 0o600


@dataclass(slots=True)
class StoredGrant:
    """What is kept about one grant. Times are aware UTC; empty strings mean "unknown"."""

    access_token: str = field(default="", repr=False)
    expires_at: datetime | None = None
    refresh_token: str = field(default="", repr=False)
    refresh_expires_at: datetime | None = None
    account: str = ""
    scopes: tuple[str, ...] = ()
    obtained_at: datetime | None = None
    # "" (never tried), "ok", "failed" (the last refresh failed: unreachable, retried) or
    # "signed_out" (refused: not signed in yet, revoked, a wrong or expired secret).
    state: str = ""
    state_since: datetime | None = None
    error: str = ""
    # The expiry warning last logged and mailed ("client secret expires 2027-06-30"), so each
    # is sent once, by whichever process notices first.
    warned: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
            elif isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredGrant:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                continue
            if key.endswith(("_at", "_since")) and value:
                value = datetime.fromisoformat(value)
            elif key.endswith(("_at", "_since")):
                value = None
            elif key == "scopes":
                value = tuple(value or ())
            values[key] = value
        return cls(**values)


class TokenFile:
    """One JSON file `{"grants": {name: StoredGrant}}`; thread- and process-safe through `locked()`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._thread_lock = threading.RLock()

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, StoredGrant]]:
        """The grants, exclusively; changes made to the mapping are written when the block ends (even by an exception)."""
        with self._thread_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                grants = self._read()
                before = {name: grant.to_json() for name, grant in grants.items()}
                try:
                    yield grants
                finally:
                    # Also when the block raised: a failed refresh records the grant's new state.
                    after = {name: grant.to_json() for name, grant in grants.items()}
                    if after != before:
                        self._write(after)
            finally:
                os.close(fd)  # closing releases the flock

    def read(self) -> dict[str, StoredGrant]:
        """A snapshot, for display (`oauth status`); takes the lock so a half-written file is never read."""
        with self.locked() as grants:
            return dict(grants)

    def _read(self) -> dict[str, StoredGrant]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        if not text.strip():
            return {}
        data = json.loads(text)
        return {name: StoredGrant.from_json(value) for name, value in data.get("grants", {}).items()}

    def _write(self, grants: dict[str, dict[str, Any]]) -> None:
        fd, temporary = tempfile.mkstemp(prefix=".oauth-", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"grants": grants}, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, FILE_MODE)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


class DatabaseTokenStore:
    """The same interface as TokenFile, in the database (`[oauth] store = "database"`): for several
    daemons on several hosts, which share no file. Each grant is encrypted (Fernet: AES-128-CBC
    and HMAC-SHA256) with a key derived from the installation secret, so a database dump alone
    holds no usable token. The rows are locked FOR UPDATE for the whole read-refresh-write."""

    def __init__(self, engine: sa.Engine, secret: bytes, names: Iterable[str]) -> None:
        from cryptography.fernet import Fernet

        self._engine = engine
        self._names = tuple(names)
        key = base64.urlsafe_b64encode(hashlib.sha256(b"mailcase oauth grants\x00" + secret).digest())
        self._fernet = Fernet(key)
        self._thread_lock = threading.RLock()

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, StoredGrant]]:
        from cryptography.fernet import InvalidToken
        from sqlmodel import Session

        from mailcase.store.oauth_grants import lock_grants, save_grant

        with self._thread_lock, Session(self._engine) as session:
            try:
                encrypted = lock_grants(session=session, names=self._names)
                grants: dict[str, StoredGrant] = {}
                for name, value in encrypted.items():
                    if not value:
                        continue
                    try:
                        grants[name] = StoredGrant.from_json(json.loads(self._fernet.decrypt(value.encode())))
                    except InvalidToken:
                        # Another installation secret: unusable, as if never signed in.
                        grants[name] = StoredGrant(error="stored grant not readable with this installation secret")
                before = {name: grant.to_json() for name, grant in grants.items()}
                try:
                    yield grants
                finally:
                    # Also when the block raised: a failed refresh records the grant's new state.
                    for name, grant in grants.items():
                        data = grant.to_json()
                        if before.get(name) != data:
                            token = self._fernet.encrypt(json.dumps(data, sort_keys=True).encode()).decode()
                            save_grant(session=session, name=name, value=token)
                    session.commit()
            except BaseException:
                session.rollback()
                raise

    def read(self) -> dict[str, StoredGrant]:
        with self.locked() as grants:
            return dict(grants)
