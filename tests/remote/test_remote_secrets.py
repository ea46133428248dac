"""A canary secret, unwrapped by the runbook, reaches its targets and nothing else.

The runbook takes ``token: SecretStr`` (given as ``-p token=@env:VAR``) and hands the
plain value (``token.get_secret_value()``) to local, SSH, fan-out and Ansible steps, in
its body, a precondition, a verification and a rollback; to log lines, notes and the
commands of failing steps. Through the real CLI, the canary must reach the local file
and the remote host, and appear in no output, no ``--json``, no ``logs``, no report,
and no byte of the journal or its -wal file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from remote_support import Sshd

SELFDRIVE = str(Path(sys.executable).parent / "selfdrive")

RUNBOOK = '''
from selfdrive import Context, Risk, SecretStr, runbook

PLAY = [{"hosts": "all", "gather_facts": False, "tasks": []}]


@runbook(risk=Risk.LOW, timeout="3m")
def use_canary(ctx: Context, token: SecretStr, out: str, remote: str, host: str = "web1",
               mode: str = "ok", playbook: bool = False) -> None:
    """Hand the unwrapped secret to every kind of step."""
    plain = token.get_secret_value()
    mirrored = SecretStr(plain[::-1])  # a secret the run learns from a command's variables
    ctx.run("echo {{ t }} | wc -c", t=plain, readonly=True)
    ctx.run("echo {{ m }}", m=mirrored, readonly=True)
    ctx.run(f"echo {plain} > /dev/null")  # the secret in the template text itself
    ctx.log(f"using {plain} and {plain[::-1]}")
    ctx.note("token", {"value": plain, plain: "as a key", "mirrored": plain[::-1]})
    ctx.run("printf %s {{ t }} > {{ out }}; echo {{ t }}; echo {{ t }} >&2", t=plain)
    ctx.ssh(host).run("printf %s {{ t }} > {{ remote }}; echo {{ t }}; echo {{ t }} >&2",
                      t=plain)
    ctx.hosts([host]).run("echo fan-out {{ t }}", t=plain, readonly=True)
    if playbook:
        tasks = [{"name": f"stamp {plain}",
                  "copy": {"dest": remote + ".ansible", "content": "{{ t }}"}}]
        ctx.ansible([{**PLAY[0], "tasks": tasks}], hosts=host, extravars={"t": plain})
    if mode == "body":
        ctx.ssh(host).run("echo {{ t }} >&2; exit 3", t=plain, check=True)


@use_canary.precondition
def canary_is_given(ctx: Context, token: SecretStr, host: str) -> bool:
    plain = token.get_secret_value()
    ctx.log(f"checking {plain}")
    here = ctx.run("test -n {{ t }} && echo {{ t }}", t=plain, readonly=True, check=False)
    there = ctx.ssh(host).run("test -n {{ t }} && echo {{ t }}", t=plain, readonly=True,
                              check=False)
    return here.ok and there.ok


@use_canary.verify
def canary_arrived(ctx: Context, token: SecretStr, out: str, remote: str, host: str,
                   mode: str) -> bool:
    plain = token.get_secret_value()
    here = ctx.run("cat -- {{ out }}", readonly=True)
    there = ctx.ssh(host).run("cat -- {{ remote }}; echo seen {{ t }} >&2", t=plain,
                              readonly=True)
    if mode == "verify":
        ctx.ssh(host).run("test {{ t }} = wrong", t=plain, readonly=True, check=True)
    return here.stdout == plain and there.stdout == plain


@use_canary.rollback
def forget_canary(ctx: Context, token: SecretStr, out: str, remote: str, host: str) -> None:
    plain = token.get_secret_value()
    ctx.log(f"rolling back {plain}")
    ctx.ssh(host).run("rm -f -- {{ remote }}; echo removed {{ t }}", t=plain)
    ctx.run("rm -f -- {{ out }}; echo removed {{ t }} >&2", t=plain)
'''


@pytest.fixture
def team(tmp_path: Path, sshd: Sshd) -> Iterator[Path]:
    root = tmp_path / "team"
    (root / "runbooks").mkdir(parents=True)
    (root / "runbooks" / "canary.py").write_text(textwrap.dedent(RUNBOOK))
    (root / "selfdrive.toml").write_text("\n".join([
        'team = "t"', 'level = "L4"', "entry_points = false",
        "[ssh]", f'known_hosts = "{sshd.known_hosts}"',
        "[inventory.hosts.web1]", f'address = "{sshd.addresses[0]}"', f"port = {sshd.port}",
        f'user = "{sshd.user}"', f'key = "{sshd.client_key}"', ""]))
    yield root


@pytest.mark.slow
def test_an_unwrapped_canary_reaches_its_targets_and_no_sink(team: Path, sshd: Sshd,
                                                             tmp_path: Path) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    needles = (canary, canary[::-1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFDRIVE_")}
    env.update(SELFDRIVE_USER="alice", CANARY_TOKEN=canary)
    out = tmp_path / "received"
    home = Path(os.path.expanduser(f"~{sshd.user}"))
    remote = home / f"selfdrive-canary-{uuid.uuid4().hex[:8]}"
    params = ["-p", "token=@env:CANARY_TOKEN", "-p", f"out={out}", "-p", f"remote={remote}"]
    outputs: list[str] = []

    def sd(*args: str, code: int) -> str:
        proc = subprocess.run([SELFDRIVE, *args], cwd=team, env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=240, check=False)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        outputs.append(f"$ selfdrive {' '.join(args)}\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    journal = team / ".selfdrive" / "journal.db"
    sd("history", code=0)  # creates the journal
    # A read transaction held open for the whole test: SQLite cannot checkpoint past a
    # reader, so every page the runs write stays in the -wal file, where it is read.
    reader = sqlite3.connect(journal, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM runs").fetchone()

        sd("plan", "use-canary", *params, "-p", "playbook=true", code=0)
        sd("plan", "use-canary", *params, "--json", code=0)
        assert not out.exists() and not remote.exists(), "a plan made a change"

        sd("run", "use-canary", *params, "-p", "playbook=true", code=0)
        assert out.read_text() == canary, "the local command did not get the secret"
        assert remote.read_text() == canary, "the host did not get the secret"
        assert Path(f"{remote}.ansible").read_text() == canary, "Ansible did not get it"

        failed_verify = json.loads(sd("run", "use-canary", *params, "-p", "mode=verify",
                                      "--json", code=5))
        assert failed_verify["run"]["status"] == "rolled_back"
        assert not out.exists() and not remote.exists(), "the rollback did not run"

        failed_body = sd("run", "use-canary", *params, "-p", "mode=body", code=1)
        assert "rolled back with forget_canary" in failed_body

        runs = json.loads(sd("history", "--json", code=0))
        assert [r["status"] for r in runs] == ["rolled_back", "rolled_back", "succeeded",
                                               "planned", "planned"]
        for run in runs:
            sd("logs", run["id"], code=0)
            sd("logs", run["id"], "--json", code=0)
            sd("report", run["id"], code=0)
            sd("report", run["id"], "--format", "html", code=0)
        sd("report", "--since", "1d", code=0)
        sd("report", "--since", "1d", "--format", "html", code=0)

        # Not vacuous: the masked secret is where the unmasked one would have been.
        succeeded = json.loads(sd("logs", runs[2]["id"], "--json", code=0))
        shown = json.dumps(succeeded)
        for fragment in ("using ****** and ******", "printf %s ****** > ",
                         "echo fan-out ******", "ansible inline playbook: stamp ******",
                         "echo ****** > /dev/null", "checking ******"):
            assert fragment in shown, fragment
        body_failure = json.loads(sd("logs", runs[0]["id"], "--json", code=0))["run"]["error"]
        assert body_failure.startswith("echo ****** >&2; exit 3 failed on web1: exit code 3 (at ")
        assert "test ****** = wrong failed on web1: exit code 1" in runs[1]["error"]

        wal = journal.with_name("journal.db-wal")
        assert b"using ****** and ******" in wal.read_bytes()  # the pages are in the -wal file
        for path in _files(journal.parent):
            data = path.read_bytes()
            for needle in needles:
                assert needle.encode() not in data, f"the secret is in {path.name}"
    finally:
        reader.close()
        for path in (remote, Path(f"{remote}.ansible")):
            path.unlink(missing_ok=True)

    for text in outputs:
        for needle in needles:
            assert needle not in text, f"the secret leaked to the CLI's output:\n{text}"
    for path in _files(journal.parent):
        for needle in needles:
            assert needle.encode() not in path.read_bytes(), f"the secret is in {path.name}"


def _files(folder: Path) -> list[Path]:
    """Every file under the journal's folder (Ansible's private folders live there too)."""
    return [p for p in folder.rglob("*") if p.is_file()]
