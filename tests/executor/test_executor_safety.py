"""Safety: shell quoting, secrets kept out of the journal, mistakes caught before any write."""

from __future__ import annotations

import pytest

from selfdrive import RunState
from selfdrive.executor import Executor, RunRequest, StepEvent
from selfdrive.sdk.command import MASK
from selfdrive.sdk.errors import ParameterError, TemplateError, UnknownRunbookError

S = RunState
SECRET = "Zq8-wPx-s3cr3t-9137"


def run_count(project) -> int:
    return project.rows("SELECT COUNT(*) AS n FROM runs")[0]["n"]


def journal_bytes(project) -> dict[str, bytes]:
    folder = project.journal_path.parent
    files = {p.name: p.read_bytes() for p in folder.iterdir()
             if p.name.startswith(project.journal_path.name)}
    assert project.journal_path.name in files
    return files


# -- shell quoting -------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    "x; touch {owned}",
    "x && touch {owned}",
    "$(touch {owned})",
    "`touch {owned}`",
    "x\ntouch {owned}",
    "x' ; touch {owned}; echo '",
    "x | tee {owned}",
])
def test_parameter_values_cannot_inject_shell(project, payload):
    owned = project.root / "owned"
    value = payload.format(owned=owned)
    project.write('''
        @runbook(risk=Risk.LOW)
        def shout(ctx: Context, v: str) -> None:
            ctx.run("echo {{ v }}")
    ''')

    outcome = project.submit("shout", {"v": value})

    assert outcome.decision.mode.value == "autonomous"
    assert outcome.run.status is S.SUCCEEDED
    assert not owned.exists()
    (cmd,) = [s for s in project.journal.runs.steps(outcome.run.id)
              if s.phase == "body" and s.kind == "command"]
    assert cmd.stdout == value + "\n"


def test_safe_marks_a_trusted_fragment_that_the_shell_interprets(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def pipeline(ctx: Context, out: str) -> None:
            ctx.run("echo one {{ op | safe }} cat > {{ out }}", op="|")
    ''')
    out = project.root / "out"
    outcome = project.submit("pipeline", {"out": str(out)})
    assert outcome.run.status is S.SUCCEEDED
    assert out.read_text() == "one\n"


# -- secrets -------------------------------------------------------------------------


def test_a_secret_reaches_the_command_but_never_the_journal(project):
    received = project.root / "received"
    project.write('''
        @runbook(risk=Risk.LOW)
        def rotate(ctx: Context, token: SecretStr, out: str) -> None:
            ctx.run("echo token={{ token }}")
            ctx.run("echo {{ token }} >&2")
            ctx.run("printf %s {{ token }} > {{ out }}")
            ctx.log("rotating with " + token.get_secret_value())
            ctx.note("credential", {"value": token.get_secret_value(), "raw": token})

        @rotate.verify
        def accepted(ctx: Context, token: SecretStr) -> bool:
            raise AssertionError("server refused " + token.get_secret_value())

        @rotate.rollback
        def restore(ctx: Context, token: SecretStr) -> None:
            ctx.run("echo restoring {{ token }}; exit 9", check=True)
    ''')

    outcome = project.submit("rotate", {"token": SECRET, "out": str(received)})

    assert received.read_text() == SECRET, "the command received the real value"
    assert outcome.run.status is S.ROLLBACK_FAILED
    # While the journal is open its newest pages live in the -wal file; after closing,
    # they are checkpointed into the database file. Look at both moments.
    while_open = journal_bytes(project)
    assert f"{project.journal_path.name}-wal" in while_open
    project.journal.close()
    for name, data in [*while_open.items(), *journal_bytes(project).items()]:
        assert SECRET.encode() not in data, name
    assert SECRET not in outcome.message
    assert SECRET not in repr(outcome.plan.as_json())

    # The masking is visible, so the test above looked at the right rows.
    reopened = project.open_journal()
    steps = reopened.runs.steps(outcome.run.id)
    stdouts = [s.stdout for s in steps if s.phase == "body" and s.kind == "command"]
    assert f"token={MASK}\n" in stdouts
    stderrs = [s.stderr for s in steps if s.phase == "body" and s.kind == "command"]
    assert f"{MASK}\n" in stderrs
    logs = [s.stdout for s in steps if s.kind == "log" and s.phase == "body"]
    assert logs == [f"rotating with {MASK}"]
    notes = [s.data for s in steps if s.kind == "note" and s.phase == "body"]
    assert notes == [{"value": MASK, "raw": MASK}]
    assert f"server refused {MASK}" in (reopened.runs.get(outcome.run.id).error or "")
    assert reopened.runs.get(outcome.run.id).params["token"] == MASK


def test_a_secret_split_by_the_output_tail_does_not_reach_the_observer(project):
    """The observer shows the tail of stderr; a secret straddling the cut must not leak."""
    events: list[StepEvent] = []

    class Recorder:
        def step(self, event: StepEvent) -> None:
            events.append(event)

        def message(self, text: str) -> None:
            events.append(StepEvent("message", "message", "ok", text))

    project.write('''
        @runbook(risk=Risk.LOW)
        def leak(ctx: Context, token: SecretStr, pad: int) -> None:
            ctx.run("printf %s {{ token }} >&2; head -c {{ pad }} /dev/zero | tr '\\\\0' . >&2; "
                    "exit 1", check=False)
    ''')
    executor = Executor(project.config(), project.registry(), project.open_journal(),
                        observer=Recorder())
    keep = 9  # the last 500 characters of stderr hold only the secret's last 9
    request = RunRequest(runbook="leak", params={"token": SECRET, "pad": 500 - keep},
                         requested_by="alice")
    outcome = executor.submit(request)
    assert outcome.run.status is S.SUCCEEDED  # the exit code was not checked
    details = [e.detail for e in events if e.kind == "command" and e.status == "failed"]
    assert len(details) == 1 and details[0]
    shown = " ".join(f"{e.text} {e.detail or ''}" for e in events)
    assert SECRET[-keep:] not in shown
    assert SECRET not in shown


# -- mistakes caught before anything is written --------------------------------------


def test_undefined_template_variable_raises_and_writes_no_run(project):
    marker = project.root / "marker"
    project.write('''
        @runbook(risk=Risk.LOW)
        def typo(ctx: Context, marker: str) -> None:
            ctx.run("touch {{ marker }}")
            ctx.run("rm -rf {{ folder }}")
    ''')
    with pytest.raises(TemplateError, match="folder"):
        project.submit("typo", {"marker": str(marker)})
    assert run_count(project) == 0
    assert project.rows("SELECT COUNT(*) AS n FROM events")[0]["n"] == 0
    assert not marker.exists()


def test_template_error_in_a_precondition_writes_no_run(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def typo(ctx: Context) -> None:
            ctx.run("true")

        @typo.precondition
        def check(ctx: Context) -> bool:
            return ctx.run("test -e {{ nothing }}", readonly=True, check=False).ok
    ''')
    with pytest.raises(TemplateError, match="nothing"):
        project.submit("typo")
    assert run_count(project) == 0


def test_template_error_in_a_verification_still_ends_the_run(project):
    """Verifications are not planned, so their mistakes surface after the change: the run
    must not be left 'running' forever; it fails verification and rolls back."""
    conf = project.root / "app.conf"
    conf.write_text("old\n")
    project.write('''
        @runbook(risk=Risk.LOW)
        def deploy(ctx: Context, conf: str) -> None:
            ctx.run("echo new > {{ conf }}")

        @deploy.verify(attempts=3, interval=0.01)
        def healthy(ctx: Context, conf: str) -> bool:
            return ctx.run("curl {{ health_url }}", readonly=True, check=False).ok

        @deploy.rollback
        def restore(ctx: Context, conf: str) -> None:
            ctx.run("echo old > {{ conf }}")
    ''')
    outcome = project.submit("deploy", {"conf": str(conf)})
    assert outcome.run.status is S.ROLLED_BACK
    assert outcome.exit_code == 5
    assert "health_url" in (outcome.run.error or "")
    assert conf.read_text() == "old\n"
    checks = [s for s in project.journal.runs.steps(outcome.run.id) if s.phase == "verify"
              and s.kind == "check"]
    assert len(checks) == 1, "a template mistake is not retried"
    assert project.journal.runs.find(status=["running"]) == []


@pytest.mark.parametrize(("params", "words"), [
    ({"target": "x", "force": True}, ["'force'", "not a parameter"]),
    ({}, ["'target'", "required"]),
    ({"target": "x", "count": "many"}, ["'count'"]),
])
def test_bad_parameters_raise_and_write_no_run(project, params, words):
    project.write('''
        @runbook(risk=Risk.LOW)
        def strict(ctx: Context, target: str, count: int = 1) -> None:
            ctx.run("echo {{ target }} {{ count }}")
    ''')
    with pytest.raises(ParameterError) as info:
        project.submit("strict", params)
    for word in words:
        assert word in str(info.value)
    assert run_count(project) == 0


def test_unknown_runbook_raises_with_a_suggestion_and_writes_no_run(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def restart_web(ctx: Context) -> None:
            ctx.run("true")
    ''')
    with pytest.raises(UnknownRunbookError, match="restart-web"):
        project.submit("restart-wbe")
    assert run_count(project) == 0
