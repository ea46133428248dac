"""When things go wrong: preconditions, verification, rollback, read-only breaches, timeouts."""

from __future__ import annotations

import time

import pytest
from process_support import gone_soon

from selfdrive import RunState

S = RunState




def steps_of(project, run_id: str, phase: str, kind: str | None = None) -> list:
    return [s for s in project.journal.runs.steps(run_id)
            if s.phase == phase and (kind is None or s.kind == kind)]


# -- preconditions -------------------------------------------------------------------

GUARDED = '''
@runbook(risk=Risk.LOW)
def guarded(ctx: Context, ready: str, marker: str) -> None:
    ctx.run("touch {{ marker }}")

@guarded.precondition
def ready_file_exists(ctx: Context, ready: str) -> bool:
    return ctx.run("test -e {{ ready }}", readonly=True, check=False).ok
'''


def test_unmet_precondition_stops_before_the_body(project):
    project.write(GUARDED)
    marker = project.root / "marker"

    outcome = project.submit("guarded", {"ready": str(project.root / "nope"),
                                         "marker": str(marker)})

    assert not marker.exists()
    assert outcome.run.status is S.PRECONDITION_FAILED
    assert outcome.exit_code == 4
    assert "ready_file_exists" in outcome.message
    assert "ready_file_exists" in (outcome.run.error or "")
    assert project.run_states(outcome.run.id) == ["requested", "decided",
                                                  "precondition_failed"]
    assert not [s for s in project.journal.runs.steps(outcome.run.id) if s.phase == "body"]


def test_met_precondition_lets_the_body_run(project):
    project.write(GUARDED)
    marker, ready = project.root / "marker", project.root / "ready"
    ready.write_text("")
    outcome = project.submit("guarded", {"ready": str(ready), "marker": str(marker)})
    assert outcome.run.status is S.SUCCEEDED
    assert marker.exists()
    (check,) = steps_of(project, outcome.run.id, "precondition", "check")
    assert (check.name, check.status) == ("ready_file_exists", "ok")


def test_precondition_rechecked_live_after_the_world_changed(project):
    """Met while planning, unmet when the run starts: the live check wins."""
    project.write('''
        @runbook(risk=Risk.LOW)
        def racy(ctx: Context, counter: str, marker: str) -> None:
            ctx.run("touch {{ marker }}")

        @racy.precondition
        def only_once(ctx: Context, counter: str) -> bool:
            path = Path(counter)
            calls = int(path.read_text()) + 1 if path.exists() else 1
            path.write_text(str(calls))
            return calls == 1
    ''')
    marker = project.root / "marker"
    outcome = project.submit("racy", {"counter": str(project.root / "n"),
                                      "marker": str(marker)})
    assert not marker.exists()
    assert outcome.run.status is S.PRECONDITION_FAILED
    assert outcome.exit_code == 4
    assert project.run_states(outcome.run.id) == ["requested", "decided", "running",
                                                  "precondition_failed"]
    (check,) = steps_of(project, outcome.run.id, "precondition", "check")
    assert check.status == "failed" and check.error == "returned False"


# -- verification and rollback -------------------------------------------------------

DEPLOY = '''
@runbook(risk=Risk.LOW)
def deploy(ctx: Context, conf: str, want: str) -> None:
    ctx.run("echo v2 > {{ conf }}")

@deploy.verify
def serves_wanted_version(ctx: Context, conf: str, want: str) -> bool:
    return ctx.run("grep -qx {{ want }} {{ conf }}", readonly=True, check=False).ok

@deploy.rollback
def restore(ctx: Context, conf: str) -> None:
    ctx.run("echo v1 > {{ conf }}")
'''


def test_failed_verification_rolls_back_with_exit_5(project):
    project.write(DEPLOY)
    conf = project.root / "app.conf"
    conf.write_text("v1\n")

    outcome = project.submit("deploy", {"conf": str(conf), "want": "v3"})

    assert conf.read_text() == "v1\n", "the rollback's effect is on disk"
    assert outcome.run.status is S.ROLLED_BACK
    assert outcome.exit_code == 5
    assert "serves_wanted_version" in (outcome.run.error or "")
    assert "rolled back with restore" in outcome.message
    assert project.run_states(outcome.run.id) == [
        "requested", "decided", "running", "verification_failed", "rolling_back",
        "rolled_back"]
    assert project.rows("SELECT verified FROM runs")[0]["verified"] == 0
    (rollback,) = steps_of(project, outcome.run.id, "rollback", "command")
    assert rollback.status == "ok" and "echo v1" in (rollback.command or "")


def test_passing_verification_does_not_roll_back(project):
    project.write(DEPLOY)
    conf = project.root / "app.conf"
    conf.write_text("v1\n")
    outcome = project.submit("deploy", {"conf": str(conf), "want": "v2"})
    assert outcome.run.status is S.SUCCEEDED
    assert conf.read_text() == "v2\n"
    assert steps_of(project, outcome.run.id, "rollback") == []


def test_verification_retries_until_it_passes(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def restart(ctx: Context, counter: str) -> None:
            ctx.run("true")

        @restart.verify(attempts=3, interval=0.05)
        def comes_up_on_third_try(ctx: Context, counter: str) -> bool:
            path = Path(counter)
            calls = int(path.read_text()) + 1 if path.exists() else 1
            path.write_text(str(calls))
            return ctx.run("test {{ n }} -ge 3", readonly=True, n=calls).ok
    ''')
    started = time.monotonic()
    outcome = project.submit("restart", {"counter": str(project.root / "n")})
    elapsed = time.monotonic() - started

    assert outcome.run.status is S.SUCCEEDED
    assert outcome.exit_code == 0
    checks = steps_of(project, outcome.run.id, "verify", "check")
    assert [(c.attempt, c.status) for c in checks] == [(1, "failed"), (2, "failed"), (3, "ok")]
    assert elapsed >= 0.1, "two pauses of 0.05 s between three attempts"
    assert project.rows("SELECT verified FROM runs")[0]["verified"] == 1


def test_verification_gives_up_after_its_attempts(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def restart(ctx: Context) -> None:
            ctx.run("true")

        @restart.verify(attempts=2, interval="10ms")
        def never(ctx: Context) -> bool:
            return ctx.run("false", readonly=True)
    ''')
    outcome = project.submit("restart")
    assert outcome.run.status is S.VERIFICATION_FAILED
    assert outcome.exit_code == 5
    assert "after 2 attempt(s)" in (outcome.run.error or "")
    assert "no rollback declared" in outcome.message
    assert len(steps_of(project, outcome.run.id, "verify", "check")) == 2


@pytest.mark.parametrize("failure", [
    'ctx.run("exit 3", check=True)',
    'if not ctx.dry_run: raise RuntimeError("disk on fire")',
])
def test_body_failure_rolls_back_with_exit_1(project, failure):
    project.write(f'''
        @runbook(risk=Risk.LOW)
        def migrate(ctx: Context, conf: str) -> None:
            ctx.run("echo half-done > {{{{ conf }}}}")
            {failure}
            ctx.run("echo done > {{{{ conf }}}}")

        @migrate.rollback
        def restore(ctx: Context, conf: str) -> None:
            ctx.run("echo original > {{{{ conf }}}}")
    ''')
    conf = project.root / "app.conf"
    conf.write_text("original\n")

    outcome = project.submit("migrate", {"conf": str(conf)})

    assert conf.read_text() == "original\n"
    assert outcome.run.status is S.ROLLED_BACK
    assert outcome.exit_code == 1
    error = outcome.run.error or ""
    assert "exit code 3" in error or "RuntimeError: disk on fire" in error
    assert project.run_states(outcome.run.id) == [
        "requested", "decided", "running", "failed", "rolling_back", "rolled_back"]
    (body,) = steps_of(project, outcome.run.id, "body", "call")
    assert body.status == "failed"
    commands = [s.command or "" for s in steps_of(project, outcome.run.id, "body", "command")]
    assert not any("echo done" in c for c in commands)


def test_rollback_that_raises_ends_rollback_failed(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def migrate(ctx: Context) -> None:
            ctx.run("exit 2", check=True)

        @migrate.rollback
        def undo(ctx: Context) -> None:
            if not ctx.dry_run:
                raise RuntimeError("backup is missing")
    ''')
    outcome = project.submit("migrate")
    assert outcome.run.status is S.ROLLBACK_FAILED
    assert outcome.exit_code == 1
    assert "rollback undo failed" in (outcome.run.error or "")
    assert "backup is missing" in (outcome.run.error or "")
    assert "FAILED" in outcome.message
    assert project.run_states(outcome.run.id)[-3:] == ["failed", "rolling_back",
                                                       "rollback_failed"]
    (call,) = steps_of(project, outcome.run.id, "rollback", "call")
    assert call.status == "failed"


def test_body_raising_while_planning_fails_before_any_change(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def broken(ctx: Context, marker: str, undone: str) -> None:
            raise KeyError("no such cluster")
            ctx.run("touch {{ marker }}")

        @broken.rollback
        def undo(ctx: Context, undone: str) -> None:
            ctx.run("touch {{ undone }}")
    ''')
    marker, undone = project.root / "marker", project.root / "undone"
    outcome = project.submit("broken", {"marker": str(marker), "undone": str(undone)})
    assert outcome.run.status is S.FAILED
    assert outcome.exit_code == 1
    assert "planning failed: KeyError" in (outcome.run.error or "")
    assert not marker.exists() and not undone.exists()
    assert project.run_states(outcome.run.id) == ["requested", "decided", "failed"]


# -- read-only contexts --------------------------------------------------------------


def test_mutating_command_in_a_precondition_is_refused(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def sneaky(ctx: Context, marker: str) -> None:
            ctx.run("true")

        @sneaky.precondition
        def touches(ctx: Context, marker: str) -> bool:
            return ctx.run("touch {{ marker }}").ok
    ''')
    marker = project.root / "marker"
    outcome = project.submit("sneaky", {"marker": str(marker)})
    assert not marker.exists()
    assert outcome.run.status is S.PRECONDITION_FAILED
    assert outcome.exit_code == 4
    assert "tried a mutating command" in (outcome.run.error or "")
    assert "readonly=True" in (outcome.run.error or "")


def test_mutating_command_in_a_verification_is_refused_and_not_retried(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def sneaky(ctx: Context, marker: str, undone: str) -> None:
            ctx.run("true")

        @sneaky.verify(attempts=3, interval=0.01)
        def touches(ctx: Context, marker: str) -> bool:
            return ctx.run("touch {{ marker }}").ok

        @sneaky.rollback
        def undo(ctx: Context, undone: str) -> None:
            ctx.run("touch {{ undone }}")
    ''')
    marker, undone = project.root / "marker", project.root / "undone"
    outcome = project.submit("sneaky", {"marker": str(marker), "undone": str(undone)})
    assert not marker.exists()
    assert undone.exists()
    assert outcome.run.status is S.ROLLED_BACK
    assert outcome.exit_code == 5
    (check,) = steps_of(project, outcome.run.id, "verify", "check")
    assert check.status == "failed"
    assert "tried a mutating command" in (check.error or "")
    assert not [s for s in steps_of(project, outcome.run.id, "verify", "command")]


def test_readonly_commands_in_checks_run_for_real(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def reads(ctx: Context, where: str) -> None:
            ctx.run("true")

        @reads.verify
        def listed(ctx: Context, where: str) -> bool:
            return "hello.txt" in ctx.run("ls {{ where }}", readonly=True).stdout
    ''')
    (project.root / "hello.txt").write_text("")
    outcome = project.submit("reads", {"where": str(project.root)})
    assert outcome.run.status is S.SUCCEEDED
    (cmd,) = steps_of(project, outcome.run.id, "verify", "command")
    assert cmd.readonly and "hello.txt" in (cmd.stdout or "")


# -- timeouts and output limits ------------------------------------------------------


def test_runbook_timeout_kills_the_command_and_fails_the_run(project):
    project.write('''
        @runbook(risk=Risk.LOW, timeout="1s")
        def slow(ctx: Context, pidfile: str) -> None:
            ctx.run("sleep 5 & echo $! > {{ pidfile }}; wait")
    ''')
    pidfile = project.root / "sleep.pid"
    started = time.monotonic()
    outcome = project.submit("slow", {"pidfile": str(pidfile)})
    elapsed = time.monotonic() - started

    assert elapsed < 3.5
    assert outcome.run.status is S.FAILED
    assert outcome.exit_code == 1
    assert "timeout" in (outcome.run.error or "")
    assert gone_soon(int(pidfile.read_text())), "the sleeping process was killed"
    (cmd,) = steps_of(project, outcome.run.id, "body", "command")
    assert cmd.status == "unknown" and cmd.exit_code is None
    assert "timed out" in (cmd.error or "")


def test_rollback_after_a_timeout_gets_a_fresh_budget(project):
    project.write('''
        @runbook(risk=Risk.LOW, timeout=0.5)
        def slow(ctx: Context, undone: str) -> None:
            ctx.run("sleep 5")

        @slow.rollback
        def undo(ctx: Context, undone: str) -> None:
            ctx.run("sleep 0.1; touch {{ undone }}")
    ''')
    undone = project.root / "undone"
    outcome = project.submit("slow", {"undone": str(undone)})
    assert outcome.run.status is S.ROLLED_BACK
    assert undone.exists()
    assert "timeout" in (outcome.run.error or "")


def test_timeout_in_a_precondition_fails_without_rolling_back(project):
    """The body never ran, so there is nothing to undo: a rollback such as 'restore the
    backup' must not run against an untouched system."""
    project.write('''
        @runbook(risk=Risk.LOW, timeout=0.5)
        def guarded(ctx: Context, marker: str, undone: str) -> None:
            ctx.run("touch {{ marker }}")

        @guarded.precondition
        def healthy(ctx: Context) -> bool:
            # Quick while planning; hangs when the run is live.
            return ctx.run("true" if ctx.dry_run else "sleep 3", readonly=True, check=False).ok

        @guarded.rollback
        def restore(ctx: Context, undone: str) -> None:
            ctx.run("touch {{ undone }}")
    ''')
    marker, undone = project.root / "marker", project.root / "undone"
    outcome = project.submit("guarded", {"marker": str(marker), "undone": str(undone)})
    assert not marker.exists()
    assert not undone.exists()
    assert outcome.run.status is S.FAILED
    assert outcome.exit_code == 1
    assert "timeout" in (outcome.run.error or "")
    assert "nothing was rolled back" in outcome.message
    assert project.run_states(outcome.run.id) == ["requested", "decided", "running", "failed"]


def test_command_timeout_from_config_with_check_fails_the_run(project):
    project.executor_options = {"command_timeout": 0.3}
    project.write('''
        @runbook(risk=Risk.LOW)
        def hangs(ctx: Context, after: str) -> None:
            ctx.run("sleep 5", check=True)
            ctx.run("touch {{ after }}")
    ''')
    after = project.root / "after"
    started = time.monotonic()
    outcome = project.submit("hangs", {"after": str(after)})
    assert time.monotonic() - started < 3
    assert outcome.run.status is S.FAILED
    assert "timed out" in (outcome.run.error or "")
    assert not after.exists()


def test_long_output_is_bounded_in_the_journal(project):
    project.executor_options = {"output_limit": 1024}
    project.write('''
        @runbook(risk=Risk.LOW)
        def chatty(ctx: Context) -> None:
            ctx.run("head -c 100000 /dev/zero | tr '\\\\0' x; echo END")
    ''')
    outcome = project.submit("chatty")
    assert outcome.run.status is S.SUCCEEDED
    (cmd,) = steps_of(project, outcome.run.id, "body", "command")
    assert cmd.truncated
    stdout = cmd.stdout or ""
    assert len(stdout) < 1200
    assert "characters cut" in stdout
    assert stdout.startswith("xxx") and stdout.endswith("END\n")


# -- output is never part of a run ---------------------------------------------------


def test_an_observer_that_fails_changes_nothing_the_run_does(project):
    """The observer's reader went away (EPIPE): the run goes on, the observer goes quiet."""
    from selfdrive.executor import Executor, RunRequest

    calls = []

    class ClosedPipe:
        def step(self, event):
            calls.append(event)
            raise BrokenPipeError(32, "Broken pipe")

        def message(self, text):
            calls.append(text)
            raise BrokenPipeError(32, "Broken pipe")

    project.write('''
        @runbook(risk=Risk.LOW)
        def stamps(ctx: Context, folder: str) -> None:
            for i in range(3):
                ctx.run("touch {{ folder }}/{{ i }}", i=i)

        @stamps.verify
        def all_there(ctx: Context, folder: str) -> bool:
            return len(list(Path(folder).iterdir())) == 3

        @stamps.rollback
        def unstamp(ctx: Context, folder: str) -> None:
            ctx.run("rm -f -- {{ folder }}/*")
    ''')
    folder = project.root / "stamps"
    folder.mkdir()
    executor = Executor(project.config(), project.registry(), project.open_journal(),
                        observer=ClosedPipe())
    request = RunRequest(runbook="stamps", params={"folder": str(folder)},
                         requested_by="alice")
    outcome = executor.submit(request)
    assert outcome.run.status is S.SUCCEEDED, outcome.message
    assert sorted(p.name for p in folder.iterdir()) == ["0", "1", "2"]
    assert len(calls) == 1  # told once, then quiet

    planned = executor.submit(RunRequest(runbook="stamps", params={"folder": str(folder)},
                                         requested_by="alice", dry_run=True))
    assert planned.run.status is S.PLANNED and planned.run.error is None
