"""A read-only fan-out over real loopback hosts is paid once per host, not twice.

Each host keeps a file named after the address the SSH session arrived on; the "read"
appends a line to it and prints how many it holds, so the tests count real executions
on every host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

from remote_support import Sshd

SELFDRIVE = str(Path(sys.executable).parent / "selfdrive")

RUNBOOK = '''
from selfdrive import Context, Risk, runbook

COUNT = ('d="$HOME/reads-{{ tag }}"; mkdir -p "$d"; '
         'f="$d/$(echo $SSH_CONNECTION | cut -d" " -f3)"; echo x >> "$f"; wc -l < "$f"')


@runbook(risk=Risk.LOW, timeout="1m")
def look_around(ctx: Context, tag: str) -> None:
    """Read every host, change one, read every host again."""
    web = ctx.hosts("web", max_concurrency=3)
    first = web.run(COUNT, readonly=True)
    ctx.note("first", {h: r.stdout.strip() for h, r in first.results.items()})
    ctx.ssh("web2").run("true")
    second = web.run(COUNT, readonly=True)
    ctx.note("second", {h: r.stdout.strip() for h, r in second.results.items()})
'''


def _project(root: Path, sshd: Sshd, hosts: int = 3) -> Path:
    (root / "runbooks").mkdir(parents=True)
    (root / "runbooks" / "look.py").write_text(textwrap.dedent(RUNBOOK))
    lines = ['team = "reads"', 'level = "L4"', "entry_points = false", "", "[ssh]",
             f'known_hosts = "{sshd.known_hosts}"', "", "[inventory.groups]",
             "web = [" + ", ".join(f'"web{i + 1}"' for i in range(hosts)) + "]", ""]
    for i in range(hosts):
        lines += [f"[inventory.hosts.web{i + 1}]", f'address = "{sshd.addresses[i]}"',
                  f"port = {sshd.port}", f'user = "{sshd.user}"', f'key = "{sshd.client_key}"',
                  ""]
    (root / "selfdrive.toml").write_text("\n".join(lines))
    return root


def _sd(root: Path, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFDRIVE_")}
    proc = subprocess.run([SELFDRIVE, *args, "--json"], cwd=root, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def _executions(sshd: Sshd, tag: str, hosts: int = 3) -> dict[str, int]:
    home = Path(os.path.expanduser(f"~{sshd.user}"))
    out = {}
    for i, address in enumerate(sshd.addresses[:hosts]):
        path = home / f"reads-{tag}" / address
        out[f"web{i + 1}"] = len(path.read_text().splitlines()) if path.exists() else 0
    return out


def test_a_read_only_fan_out_is_reused_per_host_until_that_host_changes(
        tmp_path: Path, sshd: Sshd) -> None:
    root = _project(tmp_path / "p", sshd)
    tag = uuid.uuid4().hex[:8]
    run = _sd(root, "run", "look-around", "-p", f"tag={tag}")["run"]
    assert run["status"] == "succeeded"
    # Planned: both fan-outs on every host (the change on web2 is only planned). Live:
    # the first fan-out is taken from the plan everywhere; the second too, except on
    # web2, which changed in between.
    assert _executions(sshd, tag) == {"web1": 2, "web2": 3, "web3": 2}
    steps = _sd(root, "logs", run["id"])["steps"]
    notes = {s["name"]: s["data"] for s in steps if s["kind"] == "note"
             and not s["phase"].startswith("plan:")}
    assert notes == {"first": {"web1": "1", "web2": "1", "web3": "1"},
                     "second": {"web1": "2", "web2": "3", "web3": "2"}}
    reads = [s for s in steps if s["kind"] == "command" and s["readonly"]
             and not s["phase"].startswith("plan:")]
    reused = {(s["target"], bool((s["data"] or {}).get("reused"))) for s in reads}
    assert len(reads) == 6
    assert reused == {("web1", True), ("web2", True), ("web3", True), ("web2", False)}
    assert all(s["status"] == "ok" for s in reads)
