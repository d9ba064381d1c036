"""How often `mailcase serve` restarts a dead SMTP worker before it gives up (mailcase.daemon.RestartBudget)."""

from __future__ import annotations

from mailcase.daemon import RestartBudget


def test_a_worker_is_restarted_only_so_often_in_a_window() -> None:
    budget = RestartBudget(limit=2, window=60.0)

    assert budget.allow(0.0) and budget.allow(10.0)
    assert not budget.allow(20.0)  # a third death within the minute: the daemon gives up
    assert budget.allow(75.0)  # the first two have left the window
