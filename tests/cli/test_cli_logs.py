"""`selfdrive logs RUN_ID` shows when each step started and how long it took."""

from __future__ import annotations

import re

from cli_support import Project, explain

BOOK = '''
"""Two slow commands and a check."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def slow_steps(ctx: Context) -> None:
    """Sleeps twice."""
    ctx.run("sleep 0.4", check=True)
    ctx.run("sleep 0.2", check=True)


@slow_steps.verify
def slept(ctx: Context) -> bool:
    return ctx.run("sleep 0.1", readonly=True).ok
'''

ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\d\d:\d\d:\d\d\.\d{3})\s+(\S+)\s+\[(\S+)\] (.*)$")


def _seconds(took: str) -> float:
    return float(took[:-2]) / 1000 if took.endswith("ms") else float(took[:-1])


def _clock(text: str) -> float:
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_logs_show_each_steps_start_and_duration(l4: Project) -> None:
    l4.runbook("book.py", BOOK)
    ran = l4.sd_json("run", "slow-steps")
    run_id = ran["run"]["id"]
    proc = l4.sd("logs", run_id)
    assert proc.returncode == 0, explain(proc)
    assert re.search(r"^started \S+ \S+, finished \S+ \S+, took \S+$", proc.stdout, re.M)
    assert re.search(r"^\s+#\s+STATUS\s+START \(UTC\)\s+TOOK\s+STEP$", proc.stdout, re.M)
    matched = [m for line in proc.stdout.splitlines() if (m := ROW.match(line))]
    rows = {m[6]: m for m in matched if not m[5].startswith("plan:")}
    first, second = rows["local: sleep 0.4"], rows["local: sleep 0.2"]
    assert 0.4 <= _seconds(first[4]) < 5, first[0]
    assert 0.2 <= _seconds(second[4]) < 5, second[0]
    assert _clock(second[3]) - _clock(first[3]) >= 0.4
    assert 0.1 <= _seconds(rows["slept (attempt 1)"][4]) < 5
    # The times shown are the journal's.
    steps = {s["seq"]: s for s in l4.sd_json("logs", run_id)["steps"]}
    assert steps[int(first[1])]["started_at"][11:23] == first[3]
    # A plan's steps ran before they were recorded: a time, no duration.
    planned = [m for m in matched if m[5].startswith("plan:")]
    assert planned and all(m[4] == "-" for m in planned)
