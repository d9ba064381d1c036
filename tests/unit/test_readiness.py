"""The readiness rules (observe/readiness.py) and the alerts (observe/alerts.py) with plain values and an
injected `now`: which part is critical when, and who is told once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mailcase.config import HealthSettings
from mailcase.oauth.health import AMBER, GREEN, RED, ComponentHealth, HealthBoard, Pulse
from mailcase.observe.alerts import Alerter, Change, Webhook
from mailcase.observe.readiness import Observations, Readiness, State, evaluate

START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LIMITS = HealthSettings()  # sweep 300 s, outbox 900 s, relay 600 s, mailbox 300 s


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def seen(**values: Any) -> Observations:
    return Observations(started_at=START, **values)


def states(readiness: Readiness) -> dict[str, State]:
    return {part.name: part.state for part in readiness.parts}


def test_a_fresh_daemon_is_ready_with_one_line_per_part() -> None:
    readiness = evaluate(seen(smtp="", mailboxes=["desk"], pulses={"scheduler": Pulse("scheduler", last_ok=at(10))}),
                         LIMITS, now=at(20))  # fmt: skip
    assert states(readiness) == {
        "smtp": State.OK, "imap:desk": State.OK, "scheduler": State.OK, "outbox": State.OK, "database": State.OK,
    }  # fmt: skip
    assert readiness.ready and readiness.summary() == "ready: 5 parts ok"
    assert readiness.text().splitlines()[2] == "imap:desk ok age=20s polled or heard within the limit"


def test_a_sweep_running_past_its_limit_stalls_the_scheduler_and_ending_it_clears_it() -> None:
    running = Pulse("scheduler", last_ok=at(0), running_since=at(1))
    assert states(evaluate(seen(pulses={"scheduler": running}), LIMITS, now=at(300)))["scheduler"] is State.OK
    stalled = evaluate(seen(pulses={"scheduler": running}), LIMITS, now=at(302))
    assert states(stalled)["scheduler"] is State.CRITICAL and not stalled.ready
    assert stalled.summary() == "not ready: scheduler"
    ended = Pulse("scheduler", last_ok=at(302))
    assert states(evaluate(seen(pulses={"scheduler": ended}), LIMITS, now=at(303)))["scheduler"] is State.OK


def test_no_sweep_ending_within_the_limit_and_one_interval_is_a_stall_and_a_failed_one_a_warning() -> None:
    failed = Pulse("scheduler", last_ok=at(0), last_error="TransientError: database is locked", failures=1)
    assert states(evaluate(seen(pulses={"scheduler": failed}), LIMITS, now=at(60)))["scheduler"] is State.WARNING
    readiness = evaluate(seen(pulses={"scheduler": failed}), LIMITS, now=at(331))
    (scheduler,) = readiness.failing()
    assert scheduler.detail == "no sweep ended for 331s; last failure: TransientError: database is locked"


def test_a_mailbox_refusing_our_sign_in_is_critical_at_once_and_a_silent_one_after_its_limit() -> None:
    refused = ComponentHealth("imap:desk", RED, "[AUTHENTICATIONFAILED] Authentication failed.", at(5))
    readiness = evaluate(seen(mailboxes=["desk"], board=[refused]), LIMITS, now=at(6))
    assert states(readiness)["imap:desk"] is State.CRITICAL
    assert "sign-in refused since 2026-12-07T09:00:05+00:00" in readiness.parts[0].detail
    heard = {"imap:desk": Pulse("imap:desk", last_ok=at(10))}
    assert states(evaluate(seen(mailboxes=["desk"], pulses=heard), LIMITS, now=at(310)))["imap:desk"] is State.OK
    assert states(evaluate(seen(mailboxes=["desk"], pulses=heard), LIMITS, now=at(311)))["imap:desk"] is State.CRITICAL


def test_a_refusing_relay_warns_first_and_is_critical_after_its_limit_and_a_late_notice_too() -> None:
    relay = ComponentHealth("relay", RED, "cannot connect: ConnectionRefusedError", at(0))
    assert states(evaluate(seen(board=[relay]), LIMITS, now=at(599)))["outbox"] is State.WARNING
    assert states(evaluate(seen(board=[relay]), LIMITS, now=at(600)))["outbox"] is State.CRITICAL
    # Delivery paused for an unreachable relay, as the database says (another process may deliver).
    paused = seen(relay_paused="delivery paused until 09:10:00 after 3 unreachable pass(es)", relay_paused_since=at(0))
    assert states(evaluate(paused, LIMITS, now=at(599)))["outbox"] is State.WARNING
    assert states(evaluate(paused, LIMITS, now=at(600)))["outbox"] is State.CRITICAL
    late = evaluate(seen(oldest_due_at=at(0)), LIMITS, now=at(901))
    assert states(late)["outbox"] is State.CRITICAL
    assert late.parts[-2].detail == "delivery stalled: oldest due notice waits 901s"
    assert "outbox" not in states(evaluate(seen(outbound_enabled=False), LIMITS, now=at(1)))


def test_a_database_without_the_write_lock_is_critical_and_other_board_components_show_as_parts() -> None:
    grant = ComponentHealth("oauth:m365", AMBER, "client secret expires 2027-01-02", at(0))
    readiness = evaluate(seen(database_error="database is locked", board=[grant]), LIMITS, now=at(1))
    assert states(readiness) == {
        "scheduler": State.OK, "outbox": State.OK, "database": State.CRITICAL, "oauth:m365": State.WARNING,
    }  # fmt: skip
    assert readiness.state is State.CRITICAL
    assert readiness.as_json()["status"] == "critical"


class RecordingWebhook(Webhook):
    def __init__(self, failures: int = 0) -> None:
        self.posted: list[dict[str, Any]] = []
        self.failures = failures

    def post(self, payload: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("receiver down")
        self.posted.append(payload)


def test_each_change_is_posted_once_in_order_and_a_failed_post_goes_first_next_time() -> None:
    webhook = RecordingWebhook(failures=1)
    mails: list[tuple[str, str]] = []

    def mail(change: Change, host: str) -> None:
        mails.append((change.part.name, change.since.isoformat()))

    alerter = Alerter(webhook=webhook, admin_mail=mail, host="desk1")
    locked = evaluate(seen(database_error="database is locked"), LIMITS, now=at(1))
    assert [c.part.name for c in alerter.update(locked)] == ["database"]
    assert alerter.update(evaluate(seen(database_error="still locked"), LIMITS, now=at(2))) == []  # no change
    alerter.deliver()  # the receiver is down: nothing is lost
    assert webhook.posted == [] and mails == [("database", at(1).isoformat())]
    alerter.update(evaluate(seen(), LIMITS, now=at(3)))
    alerter.deliver()
    alerter.deliver()
    assert [(p["part"], p["previous"], p["state"]) for p in webhook.posted] == [
        ("database", "ok", "critical"), ("database", "critical", "ok"),
    ]  # fmt: skip
    assert webhook.posted[0]["host"] == "desk1" and webhook.posted[0]["detail"].endswith("database is locked")
    assert mails == [("database", at(1).isoformat())]  # one mail, and none for the recovery


def test_the_admin_is_not_mailed_when_the_outbox_is_what_fails() -> None:
    mails: list[str] = []
    alerter = Alerter(admin_mail=lambda change, host: mails.append(change.part.name), host="desk1")
    relay = ComponentHealth("relay", RED, "421 too busy", at(0))
    sweeping = {"scheduler": Pulse("scheduler", last_ok=at(590))}
    alerter.update(evaluate(seen(board=[relay], pulses=sweeping), LIMITS, now=at(600)))
    alerter.deliver()
    assert alerter.states()["outbox"] is State.CRITICAL and mails == []


def test_the_board_keeps_pulses_beside_states() -> None:
    board = HealthBoard()
    board.began("scheduler", now=at(0))
    board.fault("scheduler", "TransientError: database is locked", now=at(5))
    board.fault("scheduler", "TransientError: database is locked", now=at(10))
    assert board.pulse("scheduler") == Pulse(
        "scheduler", last_ok=None, running_since=None, last_error="TransientError: database is locked",
        last_error_at=at(10), failures=2,
    )  # fmt: skip
    board.beat("scheduler", now=at(11))
    pulse = board.pulse("scheduler")
    assert pulse is not None and pulse.failures == 0 and pulse.last_ok == at(11)
    assert board.set("imap:desk", GREEN, "", now=at(0)) is False  # a pulse is not a state
