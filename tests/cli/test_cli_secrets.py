"""A SecretStr parameter reaches the command and nothing else: no output, no journal byte."""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path

from cli_support import Project, explain

SECRET_RUNBOOK = '''
"""Uses a secret every way a runbook can: command, log line, stdout, note, error."""
from selfdrive import Context, Risk, SecretStr, runbook


@runbook(risk=Risk.LOW)
def use_token(ctx: Context, token: SecretStr, out: str, fail: bool = False) -> None:
    """Hands a token to a command."""
    ctx.log(f"using token {token.get_secret_value()} now")
    ctx.run("echo token={{ token }}", readonly=True)
    ctx.run("printf '%s' {{ token }} > {{ out }}")
    ctx.run("echo again={{ token }}; echo err={{ token }} >&2")
    ctx.note("token_used", f"yes: {token.get_secret_value()}")
    if fail:
        raise RuntimeError(f"failing on purpose with {token.get_secret_value()}")


@use_token.verify
def token_written(ctx: Context, token: SecretStr, out: str) -> bool:
    result = ctx.run("cat {{ out }}", readonly=True)
    return result.stdout == token.get_secret_value()
'''


def test_a_secret_never_leaves_the_command(l4: Project, tmp_path: Path) -> None:
    l4.runbook("secret.py", SECRET_RUNBOOK)
    token = f"tok-{secrets.token_hex(16)}"
    out = tmp_path / "received-token"
    params = ["-p", f"token={token}", "-p", f"out={out}"]

    # Create the journal, then hold a read transaction open on it for the whole test:
    # SQLite cannot checkpoint past a reader, so every page any command writes stays in
    # the -wal file, where this test can read it.
    first = l4.sd("history")
    assert first.returncode == 0, explain(first)
    reader = sqlite3.connect(l4.journal, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM runs").fetchone()

        outputs = []

        def sd(*args: str, code: int) -> str:
            proc = l4.sd(*args)
            assert proc.returncode == code, explain(proc)
            outputs.append(proc.stdout + proc.stderr)
            return proc.stdout

        sd("plan", "use-token", *params, code=0)
        sd("plan", "use-token", *params, "--json", code=0)
        assert not out.exists(), "plan ran a change"
        sd("run", "use-token", *params, code=0)
        assert out.read_text() == token, "the command did not receive the secret"
        out.unlink()
        sd("run", "use-token", *params, "--json", code=0)
        assert out.read_text() == token
        sd("run", "use-token", *params, "-p", "fail=true", code=1)
        sd("run", "use-token", *params, "-p", "fail=true", "--json", code=1)

        history_json = sd("history", "--json", code=0)
        sd("history", code=0)
        runs = json.loads(history_json)
        assert len(runs) == 6
        assert all(r["params"]["token"] == "******" for r in runs)
        for run in runs:
            sd("logs", run["id"], code=0)
            sd("logs", run["id"], "--json", code=0)
        sd("show", "use-token", "--json", code=0)

        # The runs did what they were asked, so the checks below are not vacuous.
        logs = json.loads(sd("logs", runs[3]["id"], "--json", code=0))
        assert runs[3]["status"] == "succeeded"
        texts = [s.get("stdout") or "" for s in logs["steps"]]
        assert "using token ****** now" in texts
        assert "token=******\n" in texts
        assert any("again=******" in (s.get("stdout") or "") and
                   "err=******" in (s.get("stderr") or "") for s in logs["steps"])
        assert "failing on purpose with ******" in (runs[0]["error"] or "")

        journal_files = [p for p in l4.journal.parent.iterdir()
                         if p.name.startswith(l4.journal.name)]
        names = {p.name for p in journal_files}
        assert {"journal.db", "journal.db-wal", "journal.db-shm"} <= names, names
        # The log lines are in the -wal file: the file holds what the commands wrote.
        assert b"using token ****** now" in l4.journal.with_name("journal.db-wal").read_bytes()
        needle = token.encode()
        for path in journal_files:
            assert needle not in path.read_bytes(), f"the secret is in {path.name}"
    finally:
        reader.close()

    for text in outputs:
        assert token not in text, f"the secret leaked to the CLI's output:\n{text}"
    for path in l4.journal.parent.iterdir():
        assert token.encode() not in path.read_bytes(), f"the secret is in {path.name}"


def test_a_secret_from_the_environment_never_is_on_the_command_line(tmp_path: Path) -> None:
    """`-p token=@env:NAME` reads the value from the environment; a missing one is exit 2."""
    import os
    import subprocess
    import sys

    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "tok.py").write_text(
        "from selfdrive import Context, Risk, SecretStr, runbook\n\n"
        "@runbook(risk=Risk.READ_ONLY)\n"
        "def use_token(ctx: Context, out: str, token: SecretStr) -> None:\n"
        '    """Write the token where the test can read it."""\n'
        "    ctx.run('printf %s {{ token }} > {{ out }}', readonly=True)\n")
    (tmp_path / "selfdrive.toml").write_text('team = "t"\nlevel = "L1"\n')
    secret = "s3cr3t-from-env-7c1d"
    exe = str(Path(sys.executable).parent / "selfdrive")
    env = {**os.environ, "SELFDRIVE_USER": "alice", "API_TOKEN": secret}
    out = tmp_path / "got"
    done = subprocess.run([exe, "run", "use-token", "-p", f"out={out}",
                           "-p", "token=@env:API_TOKEN"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == secret
    assert secret not in done.stdout + done.stderr
    missing = subprocess.run([exe, "run", "use-token", "-p", f"out={out}",
                              "-p", "token=@env:NO_SUCH_VAR_X"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert missing.returncode == 2
    assert "environment variable 'NO_SUCH_VAR_X' is not set" in missing.stderr
