"""plan_of against fakes gives the plan `selfdrive plan` gives against real targets.

Each scenario plans twice: for real (the CLI or the Executor, with real commands on
the local shell or the loopback sshd) and with the kit, whose fakes answer what the
real targets answered. The hashes must be equal, or the fakes have drifted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

from kit_support import SELFDRIVE, Team
from remote_support import Sshd

from selfdrive.testing import FakeContext, plan_of

DAY = 86400

CLEAN = '''
from selfdrive import Context, Risk, SecretStr, runbook


@runbook(risk=Risk.LOW, timeout="1m")
def clean_cache(ctx: Context, path: str, days: int = 7) -> None:
    """Delete cache files older than N days."""
    found = ctx.run("find {{ path }} -type f -mtime +{{ days }} -print", readonly=True,
                    check=True)
    for name in sorted(found.stdout.splitlines()):
        ctx.run("rm -f -- {{ name }}", name=name)


@clean_cache.precondition
def cache_exists(ctx: Context, path: str) -> bool:
    return ctx.run("test -d {{ path }}", readonly=True, check=False).ok


@clean_cache.verify
def nothing_old_left(ctx: Context, path: str, days: int) -> bool:
    r = ctx.run("find {{ path }} -type f -mtime +{{ days }} -print -quit", readonly=True,
                check=False)
    return r.ok and not r.stdout.strip()


@clean_cache.rollback
def say_sorry(ctx: Context, path: str) -> None:
    ctx.run("logger -t selfdrive -- {{ path }}")


@runbook(risk=Risk.LOW, timeout="1m")
def store_token(ctx: Context, token: SecretStr, out: str) -> None:
    """Store a token's length and the token itself."""
    size = ctx.run("printf %s {{ token }} | wc -c", readonly=True, check=True)
    ctx.note("length", int(size.stdout))
    ctx.run("printf %s {{ token }} > {{ out }}")


@runbook(risk=Risk.LOW, timeout="1m")
def store_unwrapped(ctx: Context, token: SecretStr, out: str) -> None:
    """The same, with the secret unwrapped and passed on as a plain string."""
    plain = token.get_secret_value()
    size = ctx.run("printf %s {{ t }} | wc -c", t=plain, readonly=True)
    ctx.note("length", int(size.stdout))
    ctx.log(f"storing {plain}")
    ctx.run("printf %s {{ t }} > {{ out }}", t=plain)
'''

REMOTE = '''
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW, timeout="1m")
def mark_hosts(ctx: Context, group: str = "web", name: str = "kit-marker") -> None:
    """Leave a marker in each host's home folder."""
    homes = ctx.hosts(group).run("echo $HOME", readonly=True)
    for host, result in homes.results.items():
        ctx.ssh(host).run("touch -- {{ p }}", p=f"{result.stdout.strip()}/{name}-{host}")
    ctx.hosts(group, max_concurrency=2).run("echo done {{ name }} > /dev/null")


@mark_hosts.precondition
def first_host_answers(ctx: Context) -> bool:
    return ctx.ssh("web1").run("true", readonly=True, check=False).ok
'''


def _data(tmp_path: Path) -> tuple[Path, list[Path]]:
    data = tmp_path / "cache dir"  # a space: quoting must agree on both sides
    data.mkdir()
    old = [data / "old-1.bin", data / "old-2.bin"]
    for path in [*old, data / "new.bin"]:
        path.write_text("x")
    for path in old:
        os.utime(path, (time.time() - 30 * DAY, time.time() - 30 * DAY))
    return data, old


def test_a_local_plan_from_the_cli_has_the_fake_plans_hash(team: Team, tmp_path: Path) -> None:
    team.write(CLEAN)
    data, old = _data(tmp_path)
    proc = subprocess.run([SELFDRIVE, "plan", "clean-cache", "-p", f"path={data}", "--json"],
                          cwd=team.root, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SELFDRIVE_USER": "alice"},
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    real = json.loads(proc.stdout)["plan"]

    fake = FakeContext()
    fake.on(f"test -d {shlex.quote(str(data))}")
    fake.on(re.compile(r"^find .* -print$"), stdout="".join(f"{p}\n" for p in old))
    plan = plan_of(team.runbook("clean-cache"), fake, path=str(data))

    assert [c.command for c in plan.changes] == [c["command"] for c in real["changes"]]
    assert plan.hash == real["hash"]
    assert plan.targets == ("local",)
    assert fake.unused() == []
    assert all(p.exists() for p in old)  # neither plan deleted anything


def test_secrets_are_masked_alike_and_the_hash_agrees(team: Team, tmp_path: Path) -> None:
    team.write(CLEAN)
    out = tmp_path / "token.txt"
    real = team.plan("store-token", token="s3cret-Token", out=str(out))

    fake = FakeContext()
    fake.on("printf %s ****** | wc -c", stdout="12\n")
    plan = plan_of(team.runbook("store-token"), fake, token="s3cret-Token", out=str(out))

    assert plan.hash == real.hash
    assert [c.command for c in plan.changes] == [f"printf %s ****** > {out}"]
    assert "s3cret" not in json.dumps(plan.as_json())
    assert not out.exists()


def test_an_unwrapped_secret_is_masked_alike_and_the_hash_agrees(team: Team,
                                                                 tmp_path: Path) -> None:
    team.write(CLEAN)
    out = tmp_path / "token.txt"
    real = team.plan("store-unwrapped", token="s3cret-Token", out=str(out))

    fake = FakeContext()
    fake.on("printf %s ****** | wc -c", stdout="12\n")  # the fake sees the masked face
    plan = plan_of(team.runbook("store-unwrapped"), fake, token="s3cret-Token", out=str(out))

    assert plan.hash == real.hash
    assert [c.command for c in plan.changes] == [f"printf %s ****** > {out}"]
    assert [s.text for s in plan.steps if s.kind == "log"] == ["storing ******"]
    assert "s3cret" not in json.dumps(plan.as_json()) + json.dumps(real.as_json())
    assert fake.commands() == ["printf %s ****** | wc -c"]
    assert not out.exists()


def test_an_ssh_plan_over_the_loopback_sshd_has_the_fake_plans_hash(tmp_path: Path,
                                                                    sshd: Sshd) -> None:
    inventory = {"hosts": {f"web{i + 1}": {"address": sshd.addresses[i], "port": sshd.port,
                                           "user": sshd.user, "key": str(sshd.client_key)}
                           for i in range(3)},
                 "groups": {"web": ["web1", "web2", "web3"]}}
    team = Team(tmp_path / "team", inventory=inventory, known_hosts=sshd.known_hosts)
    try:
        team.write(REMOTE)
        real = team.plan("mark-hosts")
        home = os.path.expanduser(f"~{sshd.user}")

        fake = FakeContext(config=team.config)  # the same inventory names, no connection
        fake.on("echo $HOME", target=None, stdout=f"{home}\n")
        fake.on("true", target="web1")
        plan = plan_of(team.runbook("mark-hosts"), fake)

        assert plan.hash == real.hash
        assert plan.targets == ("web1", "web2", "web3")
        assert [(c.target, c.command) for c in plan.changes][:3] == [
            (f"web{i}", f"touch -- {home}/kit-marker-web{i}") for i in (1, 2, 3)]
        assert sorted(c.target for c in fake.calls) == ["web1", "web1", "web2", "web3"]
        assert not any(Path(home, f"kit-marker-web{i}").exists() for i in (1, 2, 3))
    finally:
        team.close()


def test_a_different_read_gives_a_different_hash(team: Team, tmp_path: Path) -> None:
    """The hash follows what the reads said: the fakes are not a rubber stamp."""
    team.write(CLEAN)
    data, old = _data(tmp_path)
    real = team.plan("clean-cache", path=str(data))
    fake = FakeContext()
    fake.on(f"test -d {shlex.quote(str(data))}")
    fake.on(re.compile(r"^find "), stdout=f"{old[0]}\n")  # one file fewer than on disk
    assert plan_of(team.runbook("clean-cache"), fake, path=str(data)).hash != real.hash
