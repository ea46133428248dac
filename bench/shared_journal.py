"""Two machines' schedulers on one PostgreSQL journal, for a few minutes of wall clock.

Two working directories of one team (as two machines would have), each running a
long-lived ``selfdrive scheduler`` against the same PostgreSQL journal, with one
runbook scheduled every minute. Every minute's fire must run exactly once, whichever
scheduler claims it; the script prints, per minute, which machine ran it and how many
runs the journal holds, then ``audit verify`` on the journal. The PostgreSQL cluster
is a throw-away one on loopback (Debian's ``postgresql`` package), as the tests use.

    .venv/bin/python bench/shared_journal.py               # three minutes
    .venv/bin/python bench/shared_journal.py --minutes 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import pg_support  # noqa: E402  (the tests' throw-away cluster, stopped when this exits)

SELFDRIVE = str(Path(sys.executable).parent / "selfdrive")
RUNBOOK = '''
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW, schedule="* * * * *")
def tick(ctx: Context) -> None:
    """Appends the minute it ran for to a shared marker file."""
    ctx.run("date -u +%H:%M >> {marks}")
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=3, help="minute boundaries to watch")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    url = pg_support.server(durable=True).url(pg_support.fresh_database(durable=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFDRIVE_")}
    env.update({"PGPASSWORD": pg_support.PASSWORD, "SELFDRIVE_USER": "bench"})
    with tempfile.TemporaryDirectory() as tmp:
        marks = Path(tmp) / "marks"
        dirs = []
        for name in ("east", "west"):
            root = Path(tmp) / name
            (root / "runbooks").mkdir(parents=True)
            (root / "runbooks" / "tick.py").write_text(RUNBOOK.format(marks=marks))
            (root / "selfdrive.toml").write_text(
                f'team = "bench"\nlevel = "L4"\nentry_points = false\njournal = "{url}"\n')
            dirs.append(root)
        subprocess.run([SELFDRIVE, "history"], cwd=dirs[0], env=env, check=True,
                       capture_output=True)
        procs = [subprocess.Popen([SELFDRIVE, "scheduler", "--tick", "1"], cwd=root, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=(root / "scheduler.log").open("w"))
                 for root in dirs]
        began = datetime.now(UTC)
        # Until the requested number of minute boundaries has passed, plus time to run.
        wait = args.minutes * 60 - began.second + 10
        try:
            time.sleep(wait)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(60)
        import psycopg

        with psycopg.connect(url, password=pg_support.PASSWORD, autocommit=True) as conn:
            fires = conn.execute("SELECT fire_time, status, owner FROM schedule_fires "
                                 "ORDER BY fire_time").fetchall()
            runs = conn.execute("SELECT dedup_key, status FROM runs").fetchall()
        audit = subprocess.run([SELFDRIVE, "audit", "verify", "--json"], cwd=dirs[1], env=env,
                               check=False,
                               capture_output=True, text=True)
        lines = marks.read_text().splitlines() if marks.exists() else []
    per_minute = Counter(lines)
    owners = sorted({owner for _, _, owner in fires})
    result = {
        "minutes_watched": args.minutes, "fires": [
            {"fire": fire, "status": status, "scheduler": owners.index(owner) + 1}
            for fire, status, owner in fires],
        "runs": len(runs), "runs_succeeded": sum(1 for _, s in runs if s == "succeeded"),
        "runs_per_minute": dict(sorted(per_minute.items())),
        "each_minute_once": bool(per_minute) and set(per_minute.values()) == {1}
        and len(runs) == len(per_minute),
        "audit_ok": json.loads(audit.stdout)["ok"] if audit.stdout else False,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"two schedulers on one PostgreSQL journal, {args.minutes} minute boundaries "
          f"({wait:.0f} s)")
    for fire in result["fires"]:
        print(f"  {fire['fire']}  {fire['status']:<8} by scheduler {fire['scheduler']}")
    print(f"  runs: {result['runs']} ({result['runs_succeeded']} succeeded); lines per "
          f"minute: {result['runs_per_minute']}")
    print(f"  every minute ran once: {result['each_minute_once']}; audit verify ok: "
          f"{result['audit_ok']}")


if __name__ == "__main__":
    main()
