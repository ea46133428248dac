"""One command on 50 loopback SSH hosts: selfdrive's fan-out against its peers.

Starts its own OpenSSH (scripts/loopback-sshd.sh: 4 sshd processes × ≤16 addresses,
127.0.0.2 … 127.0.0.51, one free port, a tmp folder) and runs ``hostname; sleep 0.1``
on every host with:

* ``SshTarget`` × ``fan_out(max_concurrency=50)``: fresh targets, so connect + auth +
  host key check + the command, as a run's first command on each host pays it;
* the same, again on the now-connected targets (what later commands in a run pay);
* bare paramiko in a ``ThreadPoolExecutor(50)``: socket with TCP_NODELAY, connect,
  ``exec_command``, read, close — no wrapper, no kill support, no host key policy
  beyond AutoAdd (the floor for paramiko);
* bare paramiko, one host after another;
* ``run_playbook`` (ansible-runner + ansible-core, ``shell`` task, forks=50), with
  Ansible's defaults and with pipelining on.

Prints the medians and each as a multiple of the selfdrive fan-out. Needs root (the
script starts sshd and creates the ``sdtest`` user).

    .venv/bin/python bench/remote_fanout.py [--hosts 50] [-r 3] [--no-ansible] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from selfdrive.executor import RunRequest
from selfdrive.sdk.command import Command
from selfdrive.targets.ansible import run_playbook
from selfdrive.targets.fanout import fan_out
from selfdrive.targets.inventory import HostSpec
from selfdrive.targets.ssh import SshTarget

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "loopback-sshd.sh"
COMMAND = "hostname; sleep 0.1"


def free_port(addresses: list[str]) -> int:
    for _ in range(50):
        port = random.randrange(2200, 9200)
        ok = True
        for addr in addresses:
            with socket.socket() as s:
                try:
                    s.bind((addr, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise SystemExit("no free port")


def start_sshd(folder: Path, hosts: int) -> dict[str, str]:
    addresses = [f"127.0.0.{k}" for k in range(2, hosts + 2)]
    env = {**os.environ, "SSHD_DIR": str(folder), "SSHD_PORT": str(free_port(addresses)),
           "SSHD_HOSTS": str(hosts)}
    proc = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"sshd did not start:\n{proc.stdout}\n{proc.stderr}")
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def stop_sshd(folder: Path) -> None:
    subprocess.run(["bash", str(SCRIPT), "stop"], env={**os.environ, "SSHD_DIR": str(folder)},
                   capture_output=True, check=False)


def timed(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bare_one(spec: HostSpec) -> str:
    import paramiko

    sock = socket.create_connection((spec.address, spec.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(spec.address, port=spec.port, username=spec.user, sock=sock,
                       key_filename=str(spec.key), allow_agent=False, look_for_keys=False,
                       timeout=10)
        _, out, _ = client.exec_command(COMMAND)
        text = out.read().decode()
        if out.channel.recv_exit_status() != 0:
            raise RuntimeError(f"{spec.name}: command failed")
        return text
    finally:
        client.close()


RUNBOOK = """
from selfdrive import Context, Risk, runbook

@runbook(risk=Risk.LOW)
def fan(ctx: Context, readonly: bool = False) -> None:
    \"\"\"One command on every host.\"\"\"
    result = ctx.hosts("all", max_concurrency=50, max_errors=50).run(
        "hostname; sleep 0.1", readonly=readonly)
    if not result.ok or len(result.results) != len(ctx.hosts("all").names):
        raise RuntimeError(f"failed: {result.failed} skipped: {result.skipped}")
"""


def runbook_executor(folder: Path, specs: list[HostSpec], known_hosts: Path, *,
                     reuse_reads: str | None = None) -> Any:
    """A whole team project: config with the inventory, the runbook file, a journal.

    ``reuse_reads``: the team's ``[executor] reuse_reads`` (None: the default).
    """
    from selfdrive.config import parse_config
    from selfdrive.executor import Executor
    from selfdrive.journal import open_journal
    from selfdrive.registry import load_registry

    root = folder / f"team-{reuse_reads or 'default'}"
    (root / "runbooks").mkdir(parents=True, exist_ok=True)
    (root / "runbooks" / "fan.py").write_text(RUNBOOK)
    config = parse_config({
        "team": "bench", "level": "L4",
        "guardrails": {"blast_radius": 1000, "rate_limit_per_runbook": 1000,
                       "rate_limit_total": 1000},
        "ssh": {"known_hosts": str(known_hosts)},
        **({"executor": {"reuse_reads": reuse_reads}} if reuse_reads is not None else {}),
        "inventory": {
            "hosts": {s.name: {"address": s.address, "port": s.port, "user": s.user,
                               "key": str(s.key)} for s in specs},
            "groups": {"all": [s.name for s in specs]}},
    }, root / "selfdrive.toml")
    return Executor(config, load_registry(config.runbook_dirs, entry_points=False),
                    open_journal(config.journal_path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("-r", "--repeats", type=int, default=3)
    parser.add_argument("--no-ansible", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="selfdrive-bench-sshd-"))
    try:  # from here on the server and its folder are removed, even when it fails to start
        info = start_sshd(folder, args.hosts)
        port, user = int(info["SSHD_PORT"]), info["SSHD_USER"]
        known_hosts, key = Path(info["SSHD_KNOWN_HOSTS"]), Path(info["SSHD_CLIENT_KEY"])
        specs = [HostSpec(f"h{i + 1}", addr, port, user, key)
                 for i, addr in enumerate(info["SSHD_ADDRESSES"].split())]
        command = Command(masked=COMMAND, raw=COMMAND)
        rows: dict[str, list[float]] = {}
        sshd_procs = len(info["SSHD_PIDS"].split())

        def record(name: str, seconds: float) -> None:
            rows.setdefault(name, []).append(seconds)

        def check(outputs: list[str]) -> None:
            if len(outputs) != len(specs) or any(not o.strip() for o in outputs):
                raise SystemExit("a host returned no output")

        def one_host() -> None:
            with SshTarget(specs[0], known_hosts=known_hosts) as t:
                r = t.run(command, 10)
                if not r.ok:
                    raise SystemExit(f"one host: {r.error}")

        one_host()  # warm-up (imports, page cache)
        team = runbook_executor(folder, specs, known_hosts)
        # The read-only run as it was before a live run took the plan's reads: paid twice.
        twice = runbook_executor(folder, specs, known_hosts, reuse_reads="0s")
        for _ in range(args.repeats):
            record("SshTarget, one host (connect + command)", timed(one_host))

            targets = [SshTarget(s, known_hosts=known_hosts) for s in specs]

            def fresh(targets: list[SshTarget] = targets) -> None:
                res = fan_out(targets, lambda t: command, timeout=30,
                              max_concurrency=len(specs), max_errors=len(specs))
                if not res.ok:
                    raise SystemExit(f"fan_out failed: {res.failed}")
                check([r.stdout for r in res.results.values()])

            record(f"SshTarget × fan_out({len(specs)}), connect + command", timed(fresh))
            record(f"SshTarget × fan_out({len(specs)}), connections reused", timed(fresh))
            for t in targets:
                t.close()

            for readonly, executor, how in (
                    (False, team, "a change"),
                    (True, team, "read-only, reads taken from the plan"),
                    (True, twice, "read-only, reuse_reads = 0s (paid twice)")):
                def whole_run(readonly: bool = readonly, executor: Any = executor) -> None:
                    outcome = executor.submit(RunRequest(runbook="fan",
                                                         params={"readonly": readonly},
                                                         requested_by="bench"))
                    if outcome.exit_code != 0:
                        raise SystemExit(f"runbook run: {outcome.run.status} "
                                         f"{outcome.message}")

                record(f"selfdrive runbook run, ctx.hosts({len(specs)}), {how}",
                       timed(whole_run))

            def bare_parallel() -> None:
                with ThreadPoolExecutor(max_workers=len(specs)) as pool:
                    check(list(pool.map(bare_one, specs)))

            record(f"bare paramiko, ThreadPoolExecutor({len(specs)})", timed(bare_parallel))
        record("bare paramiko, sequential", timed(lambda: check([bare_one(s) for s in specs])))

        if not args.no_ansible:
            play = [{"hosts": "all", "gather_facts": False,
                     "tasks": [{"name": "cmd", "shell": COMMAND}]}]
            for pipelining in (False, True):
                def ansible(pipelining: bool = pipelining) -> None:
                    r = run_playbook(play, specs, known_hosts=known_hosts, forks=len(specs),
                                     pipelining=pipelining, timeout=600,
                                     private_root=folder / "ansible")
                    if not r.ok:
                        raise SystemExit(f"ansible: {r.status} {r.error} {r.failures}")

                label = "pipelining" if pipelining else "defaults"
                record(f"ansible-runner forks={len(specs)}, {label}", timed(ansible))
    finally:
        stop_sshd(folder)
        shutil.rmtree(folder, ignore_errors=True)

    base_name = f"SshTarget × fan_out({len(specs)}), connect + command"
    base = statistics.median(rows[base_name])
    floor = statistics.median(rows[f"bare paramiko, ThreadPoolExecutor({len(specs)})"])
    result: dict[str, Any] = {
        "hosts": len(specs), "sshd_processes": sshd_procs, "command": COMMAND,
        "repeats": args.repeats,
        "rows": {name: {"median_s": statistics.median(v), "runs": len(v),
                        "x_fanout": statistics.median(v) / base,
                        "x_bare_parallel": statistics.median(v) / floor}
                 for name, v in rows.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"`{COMMAND}` on {len(specs)} loopback hosts ({sshd_procs} sshd processes), "
          f"Python {sys.version.split()[0]}; medians of {args.repeats} runs "
          f"(sequential and Ansible: 1 run)")
    print(f"{'':66} {'median':>9} {'× fan_out':>10} {'× bare ∥':>9}")
    for name, row in result["rows"].items():
        print(f"{name:66} {row['median_s']:8.2f}s {row['x_fanout']:9.2f}× "
              f"{row['x_bare_parallel']:8.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
