"""Prepares prometheus-client's multiprocess mode for `serve` whenever its endpoint is on: a fresh directory
for every process's metric files, named in PROMETHEUS_MULTIPROC_DIR before prometheus_client is first
imported (it reads the variable once, at import) and before the workers are spawned (they inherit it).
It must not import prometheus_client or anything that does.

On whenever /metrics is served, not only with `[smtp] workers > 1`: every process the daemon spawns
(the SMTP workers, and any other worker) then counts into the same scrape, and a process added later
cannot be forgotten.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from mailcase.config import Settings

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def share_metrics_between_processes(settings: Settings) -> Path | None:
    """With the endpoint on: the directory every process writes its metrics to (under systemd's
    $RUNTIME_DIRECTORY when set, else a new temporary one), emptied now; else None.

    Raises RuntimeError when prometheus_client was already imported: its values would stay per process.
    """
    if not settings.http.enabled:
        return None
    if "prometheus_client" in sys.modules:
        raise RuntimeError("multiprocess metrics must be set up before prometheus_client is imported")
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        directory = Path(runtime) / "metrics"
        shutil.rmtree(directory, ignore_errors=True)  # a previous run's files would add to our counters
        directory.mkdir(mode=0o700, parents=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="mailcase-metrics-"))
    os.environ[VARIABLE] = str(directory)
    return directory


def remove_metrics_directory(directory: Path | None) -> None:
    """At the end of `serve`: the files mean nothing to the next run."""
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        os.environ.pop(VARIABLE, None)
