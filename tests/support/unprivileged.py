"""Run `mailcase` as an unprivileged user (what an MTA's pipe does: Postfix refuses `user=root`); no tests here.

The test interpreter may live where another user cannot reach it (pyenv under /root), so the command
is the system's `python3.X` of the same minor version with this checkout and the venv's
site-packages on PYTHONPATH (the same ABI, so the compiled wheels load).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.cli import REPO

PIPE_USER = "nobody"


def unprivileged_python() -> str | None:
    """A Python another user can run with our packages, or None (then skip)."""
    if os.geteuid() != 0:
        return None
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}", sys.executable):
        if os.path.exists(candidate) and _reachable_by_others(Path(candidate).resolve()):
            return candidate
    return None


def _reachable_by_others(path: Path) -> bool:
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        needed = 0o005 if parent == path else 0o001
        if mode & needed != needed:
            return False
    return True


def unprivileged_environment(**extra: str) -> dict[str, str]:
    """PATH, PYTHONPATH (this checkout + the venv's site-packages) and `extra`: nothing inherited."""
    site_packages = sysconfig.get_paths()["purelib"]
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{site_packages}", "LANG": "C.UTF-8", **extra}


def mailcase_argv(python: str, *argv: str) -> list[str]:
    return [python, "-m", "mailcase", *argv]


@contextmanager
def shared_directory(prefix: str = "mailcase-") -> Iterator[Path]:
    """A directory every user may write (pytest's tmp_path is private to root), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
