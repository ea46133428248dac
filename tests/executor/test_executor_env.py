"""Variables for one command (``env=``): they reach the command, secrets stay masked in
the journal and the plan, a change in them changes the plan, bad ones are named."""

from __future__ import annotations

import json

import pytest

from selfdrive import Context, Risk, SecretStr, runbook
from selfdrive.sdk.errors import TemplateError
from selfdrive.testing import FakeContext, plan_of

ENV_BOOK = '''
@runbook(risk=Risk.LOW)
def deploy(ctx: Context, token: SecretStr, version: str, out: str) -> None:
    """Hands a version and a token to a command through its environment."""
    ctx.run('printf "%s|%s|%s" "$VERSION" "$TOKEN" "${OTHER-unset}" > {{ out }}',
            env={"VERSION": version, "TOKEN": token}, check=False)
    ctx.run('printf "%s" "${VERSION-unset}" >> {{ out }}', check=False)
'''


def test_variables_reach_the_command_alone_and_secrets_stay_masked(project, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("OTHER", "from-the-runner")  # not on the allow-list
    project.write(ENV_BOOK)
    out = tmp_path / "out"
    outcome = project.submit("deploy", {"token": "tok-123", "version": "1.2", "out": str(out)})
    assert outcome.exit_code == 0, outcome.message
    assert out.read_text() == "1.2|tok-123|unsetunset"
    rows = project.rows("SELECT phase, command, data FROM steps WHERE kind = 'command' "
                        "ORDER BY seq")
    assert [(r["phase"], json.loads(r["data"]) if r["data"] else None) for r in rows] == [
        ("plan:body", {"env": {"VERSION": "1.2", "TOKEN": "******"}}),
        ("plan:body", None),
        ("body", {"env": {"VERSION": "1.2", "TOKEN": "******"}}),
        ("body", None),
    ]
    for table in ("steps", "events", "runs"):
        assert all("tok-123" not in json.dumps(r) for r in project.rows(f"SELECT * FROM {table}"))


READ_BOOK = '''
@runbook(risk=Risk.LOW)
def roll(ctx: Context, src: str) -> None:
    """Passes what it reads to a change, through the change's environment."""
    version = ctx.run("cat {{ src }}", readonly=True).stdout.strip()
    ctx.run("true", env={"VERSION": version}, check=False)
'''


def test_the_plan_hash_covers_the_variables_a_change_passes(project, tmp_path):
    """Same runbook, parameters and command text; only what the change's environment
    would hold differs: an approval of one plan must not cover the other."""
    project.write(READ_BOOK)
    src = tmp_path / "version"
    src.write_text("1.2\n")
    one = project.submit("roll", {"src": str(src)}, dry_run=True).plan
    same = project.submit("roll", {"src": str(src)}, dry_run=True).plan
    src.write_text("1.3\n")
    other = project.submit("roll", {"src": str(src)}, dry_run=True).plan
    assert [c.command for c in one.changes] == [c.command for c in other.changes] == ["true"]
    assert one.hash == same.hash
    assert one.hash != other.hash


def test_the_fake_records_the_variables_masked():
    @runbook(risk=Risk.LOW)
    def deploy(ctx: Context, token: SecretStr) -> None:
        """Passes a token to one command."""
        ctx.run("deploy", env={"TOKEN": token, "N": 3})

    fake = FakeContext(live=True).on("deploy")
    fake.call(deploy, token="tok-123")
    [call] = fake.calls
    assert (call.command, dict(call.env)) == ("deploy", {"TOKEN": "******", "N": "3"})
    plan = plan_of(deploy, FakeContext(), token="tok-123")
    assert plan.changes[0].data == {"env": {"TOKEN": "******", "N": "3"}}


@pytest.mark.parametrize(("env", "words"), [
    ({"1BAD": "x"}, "'1BAD': …}: not an environment variable name"),
    ({"A-B": "x"}, "'A-B': …}: not an environment variable name"),
    ({"OK": None}, "'OK': …}: a value must be a string, a number or a SecretStr, not NoneType"),
    ({"OK": "a\0b"}, "'OK': …}: the value contains a NUL character"),
    (["A=1"], "env= takes a mapping of variable names to values, not list"),
])
def test_bad_variables_are_named_before_anything_runs(env, words):
    @runbook(risk=Risk.LOW)
    def deploy(ctx: Context) -> None:
        """Passes a bad variable."""
        ctx.run("deploy", env=env)

    with pytest.raises(TemplateError, match="env=") as caught:
        plan_of(deploy, FakeContext())
    assert str(caught.value).startswith("command 'deploy': ")
    assert words in str(caught.value)
