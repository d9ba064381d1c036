"""What users install is the wheel: build the sdist and the wheel from it, install the wheel into a
fresh virtual environment outside the source tree, and run a desk from an empty directory with
nothing but what the wheel carries: sample config, schema, example directory, a message in, the
acknowledgement out to a relay, the status page."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from support.cli import REPO
from support.relay import CaptureRelay

pytestmark = pytest.mark.wheel

CONSTRAINTS = REPO / "constraints.txt"


def _run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, stdin: bytes | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    completed = subprocess.run(
        argv, cwd=cwd, env=env, input=stdin, capture_output=True, timeout=timeout, check=False
    )
    assert completed.returncode == 0, (argv, completed.stdout[-2000:], completed.stderr[-4000:])
    return completed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The `bin/` of a fresh venv with the freshly built wheel installed (not editable)."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    # Without flags, `build` makes the sdist and then the wheel *from the sdist*: a file missing
    # from the sdist breaks the wheel here, not on a user's machine.
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], cwd=root)
    wheels = sorted(dist.glob("mailcase-*.whl"))
    assert len(wheels) == 1 and sorted(dist.glob("mailcase-*.tar.gz"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if CONSTRAINTS.exists():
        pip += ["-c", str(CONSTRAINTS)]
    _run([*pip, str(wheels[0])], cwd=root)
    yield venv / "bin"


def test_the_wheel_carries_templates_static_files_samples_and_licence(installed: Path) -> None:
    wheel = next((installed.parent.parent / "dist").glob("mailcase-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "mailcase/templates/en/customer.ack.txt",
        "mailcase/templates/pt/customer.ack.html",
        "mailcase/templates/status/style.css",
        "mailcase/examples/config.toml",
        "mailcase/examples/directory.toml",
        "mailcase/migrations/versions/0001_initial_schema.py",
    ):
        assert required in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert "html2text" not in text  # GPL-3.0: cannot ship beside Apache-2.0


def _message() -> bytes:
    mail = EmailMessage()
    mail["From"] = "Pat Doe <pat@acme.example>"
    mail["To"] = "support@support.example.com"
    mail["Subject"] = "Phones drop calls after 30 seconds"
    mail["Message-ID"] = "<wheel-smoke-1@acme.example>"
    mail["Date"] = "Wed, 25 Nov 2026 15:00:00 -0700"
    mail.set_content("Since this morning, every call drops.")
    return bytes(mail)


def test_a_desk_runs_from_an_empty_directory_on_the_installed_wheel(
    installed: Path, tmp_path: Path
) -> None:
    desk = tmp_path / "desk"
    desk.mkdir()
    mailcase = str(installed / "mailcase")
    with CaptureRelay() as relay:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILCASE_", "PYTHON"))}
        env.update(MAILCASE_OUTBOUND__HOST=relay.host, MAILCASE_OUTBOUND__PORT=str(relay.port))

        sample = _run([mailcase, "config", "sample"], cwd=desk, env=env).stdout
        (desk / "config.toml").write_bytes(sample)
        directory = _run([mailcase, "directory", "example"], cwd=desk, env=env).stdout
        (desk / "directory.toml").write_bytes(directory)
        _run([mailcase, "init"], cwd=desk, env=env)
        _run([mailcase, "directory", "import", "directory.toml"], cwd=desk, env=env)
        taken = _run([mailcase, "ingest"], cwd=desk, env=env, stdin=_message())
        assert b"case 00000001" in taken.stdout
        _run([mailcase, "tick"], cwd=desk, env=env)
        _run([mailcase, "status", "build", "--out", "site"], cwd=desk, env=env)

        acks = [m for m in relay.messages if "pat@acme.example" in m.rcpt_tos]
    assert len(acks) == 1
    ack = acks[0].message
    assert ack["Subject"].startswith("[Case #00000001]")
    assert ack["In-Reply-To"] == "<wheel-smoke-1@acme.example>"
    assert (desk / "mailcase.db").exists()
    assert (desk / "site" / "index.html").read_text(encoding="utf-8").count("<html") == 1
    assert (desk / "site" / "style.css").stat().st_size > 0
    version = _run([mailcase, "--version"], cwd=desk, env=env).stdout.decode()
    assert version.startswith("mailcase ")
