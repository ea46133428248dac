"""A secret given to `selfdrive run` shows in no other process: not in any argv (what
``ps -ef`` prints), not in any environment, on this host or on the SSH host."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from process_support import ProcSampler
from remote_support import Sshd

SELFDRIVE = str(Path(sys.executable).parent / "selfdrive")

RUNBOOK = '''
from selfdrive import Context, Risk, SecretStr, runbook


@runbook(risk=Risk.LOW, timeout="1m")
def use_token(ctx: Context, token: SecretStr, out: str) -> None:
    """Uses a secret in local and remote commands, as a parameter and as plain text."""
    plain = token.get_secret_value()
    ctx.run("sleep 0.3; printf %s {{ token }} | sha256sum > {{ out }}/local", check=False)
    ctx.run("sleep 0.3; printf %s {{ t }} | sha256sum >> {{ out }}/local", t=plain,
            check=False)
    web = ctx.ssh("web1")
    one = web.run("sleep 0.3; printf %s {{ token }} | sha256sum", readonly=True, check=False)
    two = web.run("sleep 0.3; printf %s {{ t }} | sha256sum", t=plain, readonly=True,
                  check=False)
    ctx.note("remote", [one.stdout.split()[0], two.stdout.split()[0]])
'''


def test_a_secret_parameter_shows_in_no_process_list_or_environment(
        tmp_path: Path, sshd: Sshd) -> None:
    root = tmp_path / "team"
    (root / "runbooks").mkdir(parents=True)
    (root / "runbooks" / "token.py").write_text(textwrap.dedent(RUNBOOK))
    (root / "selfdrive.toml").write_text(textwrap.dedent(f"""\
        team = "web-sre"
        level = "L4"
        entry_points = false

        [ssh]
        known_hosts = "{sshd.known_hosts}"

        [inventory.hosts.web1]
        address = "{sshd.addresses[0]}"
        port = {sshd.port}
        user = "{sshd.user}"
        key = "{sshd.client_key}"
        """))
    canary = "canary-" + os.urandom(12).hex()
    env = {**os.environ, "SELFDRIVE_USER": "oncall", "CANARY_TOKEN": canary}
    out = tmp_path / "out"
    out.mkdir()
    with ProcSampler([canary.encode()]) as sampler:
        runner = subprocess.Popen([SELFDRIVE, "run", "use-token", "-p", "token=@env:CANARY_TOKEN",
                                   "-p", f"out={out}", "--json"], cwd=root, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 0, stderr
    digest = hashlib.sha256(canary.encode()).hexdigest()
    assert (out / "local").read_text().split() == [digest, "-", digest, "-"]
    record = json.loads(stdout)
    steps = json.loads(subprocess.run([SELFDRIVE, "logs", record["run"]["id"], "--json"],
                                      cwd=root, env=env, capture_output=True, text=True,
                                      check=True).stdout)["steps"]
    assert [s["data"] for s in steps if s["kind"] == "note" and s["phase"] == "body"] == [
        [digest, digest]]
    assert sampler.rounds >= 50, "the sampler did not watch the run"
    assert len(sampler.seen) > 10
    # The runner itself was handed the secret in its environment by the operator: what
    # must hold is that it passes it to no other process.
    assert {h[0] for h in sampler.hits if h[1] == "environ"} <= {runner.pid}
    assert [h for h in sampler.hits if h[0] != runner.pid] == []
