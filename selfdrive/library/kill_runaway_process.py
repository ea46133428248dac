"""A runaway process: stop what burns CPU or memory past a threshold, never what is protected."""

from __future__ import annotations

import re
from typing import Annotated, NamedTuple

from pydantic import Field, StringConstraints

from selfdrive import Context, Risk, runbook
from selfdrive.library._common import HostName, OneOrMore, Runner, where

ProcessName = Annotated[str, StringConstraints(pattern=r"^[^\s/\x00]{1,64}$")]
#: Never candidates, whatever the thresholds: init and the machinery that runs us.
PROTECTED_NAMES = frozenset({"init", "systemd", "kthreadd", "sshd", "selfdrive"})
# The shell's own pid first, so that its ancestors (this run's selfdrive, or the SSH
# session) can be excluded; lstart is the start time, which makes a pid unambiguous.
# -ww: ps cuts lines at $COLUMNS (80 in many cron and CI shells) without it, and a long
# command line would lose what `match` looks for. C.UTF-8: numbers and dates in the C
# format we parse, yet command lines in UTF-8 (under plain C, ps prints "ü" as "??").
PS = "echo $$; LC_ALL=C.UTF-8 ps -ww -e -o pid=,ppid=,pcpu=,rss=,stat=,lstart=,comm="
ARGS = "LC_ALL=C.UTF-8 ps -ww -e -o pid=,args="
# TERM, up to grace seconds for it to go, then KILL; each signal only while the pid
# still belongs to the process that was chosen (same start time, not a zombie), never
# to a newcomer that got the pid since. A kill that fails on a live process fails.
STOP = ("export LC_ALL=C.UTF-8; "
        "same() { s=$(ps -o stat= -p {{ pid }}) || return 1; case $s in *Z*) return 1;; esac; "
        '[ "$(echo $(ps -ww -o lstart= -p {{ pid }}))" = {{ lstart }} ]; }; '
        "same || exit 0; kill -TERM {{ pid }} || ! same || exit 1; "
        "i=0; while [ $i -lt {{ grace }} ]; do same || exit 0; sleep 1; i=$((i+1)); done; "
        "kill -KILL {{ pid }} || ! same")


class Proc(NamedTuple):  # not a dataclass: the registry runs this file as an unregistered module
    pid: int
    ppid: int
    cpu: float
    rss_kib: int
    stat: str
    lstart: str
    name: str
    args: str = ""


@runbook(risk=Risk.MEDIUM, domain="host", lock="processes:{{ host or 'local' }}",
         timeout="5m", tags=["library", "process", "cpu", "memory"])
def kill_runaway_process(ctx: Context,
                         match: Annotated[str, StringConstraints(min_length=1)],
                         min_cpu_percent: Annotated[float, Field(ge=0, le=10_000)] = 90.0,
                         min_rss_mb: Annotated[int, Field(ge=0)] | None = None,
                         allow: OneOrMore[ProcessName] = [],  # noqa: B006 - never mutated
                         max_kills: Annotated[int, Field(ge=1, le=100)] = 1,
                         grace_seconds: Annotated[int, Field(ge=0, le=120)] = 10,
                         host: HostName | None = None) -> None:
    """Stop runaway processes (CPU or memory past a threshold), never protected ones.

    Candidates are processes whose whole command line (however long, read as UTF-8)
    matches `match` (a regular expression) and that use at least `min_cpu_percent`
    CPU (ps's %CPU: CPU time over the process's lifetime) and, when given, at least
    `min_rss_mb` MiB of memory; the hungriest go first, at most `max_kills` of them.

    Each gets SIGTERM, then SIGKILL if it is still there after `grace_seconds`.
    Every signal is sent only if the pid still belongs to the process chosen (same
    start time), so a pid reused in between is never hit. Never candidates: PID 1
    and kernel threads, the processes running this very command (selfdrive itself,
    or the SSH session it came through), anything named `init`, `systemd`,
    `kthreadd`, `sshd` or `selfdrive`, and every name in `allow`.

    Verification takes a fresh look after the kill: no candidate may be left (3
    attempts, 2 s apart). A killed process cannot be revived, so there is no
    rollback; if a supervisor restarts it and it spins again, verification fails and
    a human gets the run.
    """
    on = where(ctx, host)
    chosen = _candidates(on, match, min_cpu_percent, min_rss_mb, allow)[:max_kills]
    ctx.note("chosen", [{"pid": p.pid, "name": p.name, "cpu": p.cpu,
                         "rss_mb": p.rss_kib // 1024} for p in chosen])
    if not chosen:  # it went away since the precondition looked
        ctx.log("no process over the thresholds any more: nothing to do")
    for p in chosen:
        ctx.log(f"stopping {p.pid} ({p.name}, {p.cpu:.0f}% CPU, {p.rss_kib // 1024} MiB): "
                f"{p.args[:200]}")
        on.run(STOP, pid=p.pid, lstart=p.lstart, grace=grace_seconds, check=True)


def _candidates(on: Runner, match: str, min_cpu: float, min_rss_mb: int | None,
                allow: list[str]) -> list[Proc]:
    try:
        pattern = re.compile(match)
    except re.error as exc:
        raise ValueError(f"match={match!r} is not a regular expression: {exc}") from None
    listing = on.run(PS, readonly=True, check=True).stdout.splitlines()
    me, procs = int(listing[0]), _parse(listing[1:])
    args = {}
    for line in on.run(ARGS, readonly=True, check=True).stdout.splitlines():
        pid, _, rest = line.strip().partition(" ")
        if pid.isdigit():
            args[int(pid)] = rest.strip()
    protected = _ancestors(me, procs)
    names = PROTECTED_NAMES | set(allow)
    out = []
    for p in procs.values():
        p_args = args.get(p.pid, "")
        if (p.pid in protected or p.pid <= 2 or p.ppid == 2 or p.name in names
                or "Z" in p.stat or _is_selfdrive(p_args)):
            continue
        if p.cpu < min_cpu or (min_rss_mb is not None and p.rss_kib < min_rss_mb * 1024):
            continue
        if not pattern.search(p_args):
            continue
        out.append(Proc(p.pid, p.ppid, p.cpu, p.rss_kib, p.stat, p.lstart, p.name, p_args))
    return sorted(out, key=lambda p: (-p.cpu, -p.rss_kib, p.pid))


def _parse(rows: list[str]) -> dict[int, Proc]:
    procs = {}
    for row in rows:
        # pid ppid pcpu rss stat  Tue Nov 25 22:38:17 2026  comm (comm may hold spaces)
        parts = row.split(None, 10)
        if len(parts) < 11 or not parts[0].isdigit():
            continue
        pid, ppid = int(parts[0]), int(parts[1])
        procs[pid] = Proc(pid, ppid, float(parts[2]), int(parts[3]), parts[4],
                          " ".join(parts[5:10]), parts[10].strip())
    return procs


def _is_selfdrive(args: str) -> bool:
    """``selfdrive …``, ``…/bin/selfdrive …`` or ``python …/selfdrive …``/``-m selfdrive``."""
    words = args.split()[:3]
    return any(w.rsplit("/", 1)[-1] == "selfdrive" for w in words)


def _ancestors(pid: int, procs: dict[int, Proc]) -> set[int]:
    """``pid`` and every process above it, up to init."""
    seen: set[int] = set()
    while pid > 0 and pid not in seen:
        seen.add(pid)
        parent = procs.get(pid)
        if parent is None:
            break
        pid = parent.ppid
    return seen


@kill_runaway_process.precondition
def a_process_is_over_the_thresholds(ctx: Context, match: str, min_cpu_percent: float,
                                     min_rss_mb: int | None, allow: list[str],
                                     host: str | None) -> bool:
    """Something to stop (else the run ends here, exit 4, having changed nothing)."""
    if not _candidates(where(ctx, host), match, min_cpu_percent, min_rss_mb, allow):
        raise ValueError(f"no process matching {match!r} is over the thresholds")
    return True


@kill_runaway_process.verify(attempts=3, interval="2s")
def no_runaway_is_left(ctx: Context, match: str, min_cpu_percent: float,
                       min_rss_mb: int | None, allow: list[str], host: str | None) -> bool:
    return not _candidates(where(ctx, host), match, min_cpu_percent, min_rss_mb, allow)
