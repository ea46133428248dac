"""`selfdrive learn`: flaky verifications, slow runs, stale runbooks, uncovered alerts,
and promotions the matrix (not the record) holds back — from real runs only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from learning_support import Team, kinds

from selfdrive import RunState
from selfdrive.learning import Thresholds, recommend


def _learn(team: Team, **thresholds: Any) -> list[dict]:
    found = recommend(team.journal, team.executor.registry, team.executor.config,
                      since=None, now=datetime.now(UTC),
                      thresholds=Thresholds(**thresholds))
    return [r.as_json() for r in found]


def test_a_verification_that_passes_only_on_retry_is_flaky(team):
    team.write('''
    @runbook(risk=Risk.LOW)
    def warm_cache(ctx: Context, counter: str) -> None:
        """Warm the cache; it is ready a moment later."""
        ctx.run("echo 0 > {{ counter }}")

    @warm_cache.verify(attempts=3, interval="0s")
    def cache_ready(ctx: Context, counter: str) -> bool:
        seen = int(Path(counter).read_text()) + 1
        Path(counter).write_text(str(seen))
        return seen >= 2          # fails the first time, passes on the retry

    @runbook(risk=Risk.LOW)
    def steady(ctx: Context) -> None:
        """Always verifies at once."""
        ctx.run("true")

    @steady.verify(attempts=3)
    def fine(ctx: Context) -> bool:
        return True
    ''')
    counter = str(team.root / "counter")
    for _ in range(2):
        assert team.submit("warm-cache", {"counter": counter}).run.status is RunState.SUCCEEDED
        assert team.submit("steady").run.status is RunState.SUCCEEDED
    learned = _learn(team)
    assert kinds(learned, "steady") == []
    (flaky,) = [r for r in learned if r["kind"] == "flaky"]
    assert flaky["runbook"] == "warm-cache"
    assert flaky["evidence"] == {"check": "cache_ready", "runs_passed_after_retry": 2,
                                 "runs_verified": 2, "share": 1.0, "most_attempts": 2}
    # One retried run out of many is not a pattern.
    assert "flaky" not in kinds(_learn(team, flaky_min_runs=3), "warm-cache")


def test_runs_that_got_slower_are_reported(team):
    team.write('''
    @runbook(risk=Risk.LOW)
    def backup(ctx: Context, pause: float = 0.0) -> None:
        """Back up; it takes as long as it takes."""
        ctx.run("sleep {{ pause }}")
    ''')
    for pause in (0, 0, 0, 0.3, 0.3, 0.3):  # the 6th is over the rate limit: approved
        outcome = team.submit("backup", {"pause": pause}, approve=True)
        assert outcome.run.status is RunState.SUCCEEDED
    (slow,) = _learn(team, slow_window=3, slow_min_seconds=0.2)
    assert slow["kind"] == "slow" and slow["runbook"] == "backup"
    assert slow["evidence"]["median_seconds_recent"] >= 0.3
    assert slow["evidence"]["median_seconds_before"] < 0.1
    assert slow["evidence"]["runs_compared"] == 3
    # Compared over a longer window than there are runs: no finding.
    assert _learn(team, slow_window=4, slow_min_seconds=0.2) == []
    # A rise smaller than the floor is noise.
    assert _learn(team, slow_window=3, slow_min_seconds=5) == []


def test_stale_runbooks_never_run_or_not_for_long(team):
    team.write('''
    @runbook(risk=Risk.LOW)
    def used(ctx: Context) -> None:
        """Runs now and then."""
        ctx.run("true")

    @runbook(risk=Risk.LOW)
    def forgotten(ctx: Context) -> None:
        """Never run."""
        ctx.run("true")
    ''')
    team.submit("used")
    learned = _learn(team)
    assert kinds(learned, "used") == []
    (never,) = [r for r in learned if r["runbook"] == "forgotten"]
    assert (never["kind"], never["evidence"]["live_runs"]) == ("stale", 0)
    assert "has never run" in never["finding"]
    # With a threshold of zero, the runbook that ran is stale too, naming its last run.
    (used,) = [r for r in _learn(team, stale_after=timedelta(0)) if r["runbook"] == "used"]
    assert used["kind"] == "stale"
    assert used["evidence"]["last_outcome"] == "succeeded"


def test_a_runbook_whose_latest_runs_all_failed_is_failing(team):
    team.write('''
    @runbook(risk=Risk.LOW)
    def fragile(ctx: Context, flag: str) -> None:
        """Fails while its flag file is missing."""
        ctx.run("test -e {{ flag }}", check=True)

    @runbook(risk=Risk.LOW)
    def broken(ctx: Context) -> None:
        """Its code raises every time, while planning."""
        ctx.note("ratio", 1 / 0)
    ''')
    flag = team.root / "flag"
    for _ in range(2):
        assert team.submit("fragile", {"flag": str(flag)}).run.status is RunState.FAILED
        assert team.submit("broken").run.status is RunState.FAILED
    assert kinds(_learn(team), "fragile") == []  # two failures: not yet a pattern
    flag.touch()
    assert team.submit("fragile", {"flag": str(flag)}).run.status is RunState.SUCCEEDED
    assert team.submit("broken").run.status is RunState.FAILED
    learned = _learn(team)
    assert kinds(learned, "fragile") == []  # its latest run succeeded
    (failing,) = [r for r in learned if r["runbook"] == "broken"]
    assert failing["kind"] == "failing"  # not "stale: it has never run"
    assert failing["evidence"]["failed_in_a_row"] == 3
    assert failing["evidence"]["last_error"].startswith(
        "planning failed: ZeroDivisionError: division by zero (at ")


def test_alerts_that_no_runbook_matches_are_uncovered(team):
    """Alerts posted with `selfdrive trigger` (the receiver's path, without HTTP)."""
    team.write('''
    @runbook(risk=Risk.READ_ONLY, triggers=[alert("DiskFull"), alert("Latency", tier="web")])
    def look(ctx: Context) -> None:
        """Look around."""
        ctx.run("true", readonly=True)
    ''')
    for host in ("a", "a", "b"):
        team.sd_ok("trigger", "MemoryLeak", "-l", f"host={host}")
    team.sd_ok("trigger", "DiskFull", "-l", "host=a")
    team.sd_ok("trigger", "Latency", "-l", "tier=db")   # declared, but its matcher says web
    learned = team.sd_json("learn")["recommendations"]
    uncovered = {r["alert"]: r for r in learned if r["kind"] == "uncovered"}
    assert sorted(uncovered) == ["Latency", "MemoryLeak"]
    leak = uncovered["MemoryLeak"]["evidence"]
    assert (leak["alerts"], leak["fingerprints"]) == (3, 2)
    assert leak["first_seen"] <= leak["last_seen"]
    assert "triggers=[alert('MemoryLeak')]" in uncovered["MemoryLeak"]["suggestion"]
    assert uncovered["Latency"]["evidence"]["declared_by"] == ["look"]
    assert "label matchers" in uncovered["Latency"]["suggestion"]
    text = team.sd_ok("learn")
    assert "uncovered alert MemoryLeak: 3 firing alert(s) (2 distinct) matched no runbook" \
        in text


def test_always_approved_runs_suggest_a_higher_level_or_a_record_gated_cell(team):
    team.configure(level="L2")
    team.write('''
    @runbook(risk=Risk.MEDIUM)
    def restart_worker(ctx: Context) -> None:
        """Restart the worker."""
        ctx.run("true")

    @restart_worker.verify
    def up(ctx: Context) -> bool:
        return True

    @runbook(risk=Risk.LOW, approval="always")
    def flush_queue(ctx: Context) -> None:
        """Flush the queue (a human always says yes)."""
        ctx.run("true")

    @flush_queue.verify
    def empty(ctx: Context) -> bool:
        return True
    ''')
    for _ in range(3):
        for name in ("restart-worker", "flush-queue"):
            outcome = team.submit(name, approve=True)
            assert (outcome.run.mode, outcome.run.status) == ("approval", RunState.SUCCEEDED)
    assert _learn(team) == []  # 3 approvals, 5 wanted by default
    learned = {r["runbook"]: r for r in _learn(team, approvals_granted=3)}
    restart = learned["restart-worker"]
    assert restart["kind"] == "promote"
    assert restart["evidence"]["autonomous_from_level"] == "L4"
    assert restart["evidence"]["approved_runs_window"] == 3
    assert '[policy.matrix.L2] MEDIUM = "auto-with-record"' in restart["suggestion"]
    assert "drop it" in learned["flush-queue"]["suggestion"]


def test_a_verification_failure_below_medium_risk_suggests_approval_always(team):
    team.write('''
    @runbook(risk=Risk.LOW)
    def prune(ctx: Context, ok: bool = True) -> None:
        """Prune old images."""
        ctx.run("true")

    @prune.verify
    def pruned(ctx: Context, ok: bool) -> bool:
        return ok
    ''')
    team.submit("prune")
    failed = team.submit("prune", {"ok": False})
    assert failed.run.status is RunState.VERIFICATION_FAILED
    (demote,) = _learn(team)
    assert demote["kind"] == "demote"
    assert demote["evidence"]["mode_now"] == "autonomous"
    assert 'approval="always"' in demote["suggestion"]
