"""Guards around live runs that need the journal: rate limits and run locks."""

from __future__ import annotations

import threading
import time

from selfdrive import Mode, RunState
from selfdrive.executor import Executor, RunOutcome, RunRequest

S = RunState


def test_rate_limit_turns_further_autonomous_runs_into_approvals(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def ping(ctx: Context) -> None:
            ctx.run("true")
    ''')
    project.guardrails = {"rate_limit_per_runbook": 2}
    first, second = project.submit("ping"), project.submit("ping")
    assert [first.decision.mode, second.decision.mode] == [Mode.AUTONOMOUS, Mode.AUTONOMOUS]
    assert [first.run.status, second.run.status] == [S.SUCCEEDED, S.SUCCEEDED]

    third = project.submit("ping", approver=None)
    assert third.decision.mode is Mode.APPROVAL
    assert third.run.status is S.PENDING_APPROVAL
    assert any("rate limit: 2 autonomous run(s) of ping" in r for r in third.decision.reasons)
    tripped = [e for e in project.journal.events(third.run.id) if e.kind == "guardrail.tripped"]
    assert len(tripped) == 1

    # Dry-runs are never limited, and approved runs do not count against the limit.
    assert project.submit("ping", dry_run=True).run.status is S.PLANNED
    assert project.submit("ping", approver=lambda *_: True).run.status is S.SUCCEEDED


def test_a_run_lock_makes_a_concurrent_run_skip_and_is_released(project):
    project.write('''
        @runbook(risk=Risk.LOW, lock="db-{{ name }}")
        def migrate(ctx: Context, name: str, started: str, release: str) -> None:
            ctx.run("touch {{ started }}; for i in $(seq 250); do "
                    "test -e {{ release }} && break; sleep 0.02; done")
    ''')
    root = project.root
    (root / "go-now").write_text("")
    params = {"name": "orders", "started": str(root / "started-a"),
              "release": str(root / "release-a")}
    holder: list[RunOutcome] = []

    def first_run() -> None:
        executor = Executor(project.config(), project.registry(), project.open_journal())
        holder.append(executor.submit(RunRequest(runbook="migrate", params=params,
                                                 requested_by="alice")))

    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not (root / "started-a").exists():
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.01)

        blocked = project.submit("migrate", {**params, "started": str(root / "started-b"),
                                             "release": str(root / "go-now")})
        other_key = project.submit("migrate", {"name": "users",
                                               "started": str(root / "started-c"),
                                               "release": str(root / "go-now")})
    finally:
        (root / "release-a").write_text("")
        thread.join(10)

    assert blocked.run.status is S.SKIPPED
    assert blocked.exit_code == 1
    assert "db-orders" in blocked.message and holder[0].run.id in blocked.message
    assert not (root / "started-b").exists(), "a skipped run changes nothing"
    assert other_key.run.status is S.SUCCEEDED, "another key is another lock"
    assert holder[0].run.status is S.SUCCEEDED

    again = project.submit("migrate", {**params, "started": str(root / "started-d"),
                                       "release": str(root / "go-now")})
    assert again.run.status is S.SUCCEEDED, "the lock was released when the run ended"
