"""The scheduler: catch-up with grace, misses journaled, DST, no overlap, no double fire."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sense_support import SELFDRIVE, Project, clean_env, explain

from selfdrive.config.sense import expand_cron
from selfdrive.triggers.schedule import Schedule, Scheduler, check_schedules, collect_schedules

TICK = '''
@runbook(risk=Risk.LOW)
def tick(ctx: Context, pause: float = 0) -> None:
    """Appends a line to a marker file, then pauses."""
    ctx.run("echo $$ >> {marks}")
    ctx.run("sleep {{{{ pause }}}}")
'''

EVERY_MINUTE = """
[[schedules]]
name = "every-minute"
runbook = "tick"
cron = "* * * * *"
grace = "{grace}"
params = {{ pause = {pause} }}
"""


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path / "proj")
    p.runbook(TICK.format(marks=tmp_path / "marks"))
    yield p
    p.close()


def scheduler(project: Project, clock: Clock) -> Scheduler:
    config, registry = project.config(), project.registry()
    journal = project.journal()
    return Scheduler(config, registry, journal, project.executor(journal),
                     check_schedules(config, registry), clock=clock)


def lines(project: Project) -> list[str]:
    marks = project.root.parent / "marks"
    return marks.read_text().splitlines() if marks.exists() else []


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_after_three_minutes_down_it_runs_once_and_journals_the_misses(
        project: Project) -> None:
    project.set_config(extra=EVERY_MINUTE.format(grace="1m", pause=0))
    clock = Clock(at("2026-11-25T10:00:30"))
    first = scheduler(project, clock)
    assert [(r.status, r.fire) for r in first.tick(wait=True)] == []
    assert [(r.status, r.fire) for r in first.results] == [("ran", "2026-11-25T10:00:00+00:00")]
    clock.now = at("2026-11-25T10:00:50")
    first.tick(wait=True)
    assert len(first.results) == 1 and len(lines(project)) == 1

    # The scheduler is stopped for three minutes, then started again.
    clock.now = at("2026-11-25T10:03:30")
    second = scheduler(project, clock)
    second.tick(wait=True)
    assert [(r.status, r.fire, r.missed) for r in second.results] == [
        ("missed", None, 2), ("ran", "2026-11-25T10:03:00+00:00", 0)]
    assert len(lines(project)) == 2  # once for 10:00, once on restart
    fires = {f["fire_time"]: f for f in project.journal().schedules.fires("every-minute")}
    assert {t: f["status"] for t, f in fires.items()} == {
        "2026-11-25T10:00:00+00:00": "done", "2026-11-25T10:01:00+00:00": "missed",
        "2026-11-25T10:02:00+00:00": "missed", "2026-11-25T10:03:00+00:00": "done"}
    run = project.journal().runs.get(fires["2026-11-25T10:03:00+00:00"]["run_id"])
    assert run.status.value == "succeeded" and run.requested_by == "scheduler"
    assert run.firing == {"kind": "schedule", "name": "every-minute", "own": True,
                          "domain": None}
    [missed] = [e for e in project.journal().events() if e.kind == "schedule.missed"]
    assert missed.data == {"schedule": "every-minute", "count": 2,
                           "first": "2026-11-25T10:01:00+00:00",
                           "last": "2026-11-25T10:02:00+00:00"}
    assert project.rows("SELECT dedup_key FROM runs ORDER BY created_at") == [
        {"dedup_key": "schedule:every-minute:2026-11-25T10:00:00+00:00"},
        {"dedup_key": "schedule:every-minute:2026-11-25T10:03:00+00:00"}]
    clock.now = at("2026-11-25T10:03:45")
    second.tick(wait=True)
    assert len(lines(project)) == 2


def test_a_fire_later_than_its_grace_is_only_journaled_as_missed(project: Project) -> None:
    project.set_config(extra=EVERY_MINUTE.format(grace="1m", pause=0).replace(
        '"* * * * *"', '"*/5 * * * *"'))
    clock = Clock(at("2026-11-25T10:02:00"))  # first sight, 2 minutes after 10:00: too late
    s = scheduler(project, clock)
    s.tick(wait=True)
    assert s.results == [] and lines(project) == []
    clock.now = at("2026-11-25T10:06:30")  # 10:05 missed by 90 s, grace 60 s
    s.tick(wait=True)
    assert [(r.status, r.missed) for r in s.results] == [("missed", 1)]
    assert lines(project) == []
    clock.now = at("2026-11-25T10:10:20")
    s.tick(wait=True)
    assert [r.status for r in s.results] == ["missed", "ran"] and len(lines(project)) == 1


@pytest.mark.parametrize(("start", "expected"), [
    # Autumn: 02:00-03:00 happens twice; a daily 02:30 job runs once, at the first.
    ("2026-10-24T22:00:00", "2026-10-25T00:30:00+00:00"),
    # Spring: 02:30 does not exist; cronsim runs it once, at 03:00 local (CEST).
    ("2026-03-28T23:00:00", "2026-03-29T01:00:00+00:00"),
])
def test_a_daily_0230_berlin_job_runs_once_on_clock_change_days(
        project: Project, start: str, expected: str) -> None:
    project.set_config(extra="""
        [[schedules]]
        name = "nightly"
        runbook = "tick"
        cron = "30 2 * * *"
        timezone = "Europe/Berlin"
        grace = "10m"
        """)
    sched = Schedule(id="x", runbook="tick", cron="30 2 * * *", expression="30 2 * * *",
                     timezone="Europe/Berlin")
    day_start = at(start)
    fires, _ = sched.fires(day_start, day_start + timedelta(hours=24))
    assert [f.astimezone(UTC).isoformat() for f in fires] == [expected]

    clock = Clock(day_start)
    s = scheduler(project, clock)
    while clock.now <= day_start + timedelta(hours=24):  # ticks every 15 minutes all day
        s.tick(wait=True)
        clock.now += timedelta(minutes=15)
    assert [(r.status, r.fire) for r in s.results] == [("ran", expected)]
    assert len(lines(project)) == 1


def test_cron_aliases_are_expanded() -> None:
    assert expand_cron("@daily") == "0 0 * * *"
    assert expand_cron(" @Hourly ") == "0 * * * *"
    assert expand_cron("@weekly") == "0 0 * * 0"
    assert expand_cron("@monthly") == "0 0 1 * *"
    assert expand_cron("@yearly") == "0 0 1 1 *"
    assert expand_cron("*/5 * * * *") == "*/5 * * * *"


def test_a_schedule_never_overlaps_its_own_run(project: Project) -> None:
    project.set_config(extra=EVERY_MINUTE.format(grace="5m", pause=1.5))
    clock = Clock(at("2026-11-25T10:00:05"))
    one = scheduler(project, clock)
    one.tick()  # starts the 10:00 run, which takes 1.5 s
    clock.now = at("2026-11-25T10:01:05")
    one.tick()  # this scheduler knows its run is going: it leaves the fire for later
    other = scheduler(project, clock)  # another scheduler on the same journal
    other.tick(wait=True)
    assert [(r.status, r.fire) for r in other.results] == [
        ("skipped", "2026-11-25T10:01:00+00:00")]
    assert "still in progress" in (other.results[0].detail or "")
    assert one.wait_idle(10)
    clock.now = at("2026-11-25T10:02:05")
    other.tick(wait=True)
    assert [r.status for r in other.results] == ["skipped", "ran"]
    assert len(lines(project)) == 2


def test_schedule_problems_are_reported_with_where_they_come_from(project: Project) -> None:
    project.runbook('''
        @runbook(risk=Risk.LOW, schedule="@fortnightly")
        def odd(ctx: Context) -> None:
            """Bad alias."""

        @runbook(risk=Risk.LOW, schedule="@hourly")
        def needs(ctx: Context, host: str) -> None:
            """Needs a parameter no decorator schedule can give."""

        @runbook(risk=Risk.LOW, schedule="@daily")
        def fine(ctx: Context) -> None:
            """Daily."""
        ''', name="more.py")
    project.set_config(extra="""
        [[schedules]]
        runbook = "nope"
        cron = "0 * * * *"

        [[schedules]]
        runbook = "fine"
        cron = "@daily"

        [[schedules]]
        runbook = "needs"
        cron = "0 3 * * *"
        params = { host = "db1" }
        """)
    schedules, problems = collect_schedules(project.config(), project.registry())
    assert sorted(s.id for s in schedules) == ["fine@@daily", "needs@0 3 * * *"]
    text = "\n".join(problems)
    assert "unknown cron alias '@fortnightly'" in text
    assert "on needs at" in text and "parameter 'host': required" in text
    assert "schedules[0] (runbook 'nope'): no runbook named 'nope'" in text
    assert "schedules[1] (runbook 'fine'): schedule id 'fine@@daily' is already declared" in text
    proc = project.sd("scheduler", "--once")
    assert proc.returncode == 2, explain(proc)
    assert "schedules with problems (nothing was run)" in proc.stderr


def test_scheduler_once_runs_what_is_due_and_exits(project: Project) -> None:
    project.set_config(extra=EVERY_MINUTE.format(grace="2m", pause=0))
    proc = project.sd("scheduler", "--once", "--json")
    assert proc.returncode == 0, explain(proc)
    [result] = json.loads(proc.stdout)
    assert result["status"] == "ran" and result["schedule"] == "every-minute"
    assert result["run"]["status"] == "succeeded"
    assert len(lines(project)) == 1
    again = project.sd("scheduler", "--once")
    assert again.returncode == 0, explain(again)
    if "fire" in again.stderr and "claimed" in again.stderr:  # the minute turned meanwhile
        assert len(lines(project)) == 2
    else:
        assert len(lines(project)) == 1
    listed = project.sd("scheduler", "--list", "--json")
    assert listed.returncode == 0, explain(listed)
    [row] = json.loads(listed.stdout)
    assert row["id"] == "every-minute" and row["last_fire"] is not None


def test_scheduler_once_into_a_closed_pipe_runs_and_exits_as_usual(project: Project) -> None:
    """Output is never part of a run: its reader (`true`) left before anything was written."""
    project.set_config(extra=EVERY_MINUTE.format(grace="2m", pause=0))
    shell = f"'{SELFDRIVE}' scheduler --once --json 2>&1 | true; exit ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", shell], cwd=project.root, env=clean_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, explain(proc)
    assert len(lines(project)) == 1
    [run] = project.rows("SELECT status FROM runs")
    assert run["status"] == "succeeded"


def test_two_schedulers_at_once_never_run_one_fire_twice(tmp_path: Path) -> None:
    for rep in range(10):
        project = Project(tmp_path / f"rep{rep}",
                          extra=EVERY_MINUTE.format(grace="2m", pause=0.2))
        project.runbook(TICK.format(marks=tmp_path / f"marks{rep}"))
        # The journal exists already, as it does for any team running schedulers (two
        # processes creating a brand-new journal at once is the journal's own business).
        project.journal().close()
        procs = [subprocess.Popen([SELFDRIVE, "scheduler", "--once", "--json"],
                                  cwd=project.root, env=clean_env(), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=30) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n".join(e[:400] for _, e in outs)
        results = [r for out, _ in outs for r in json.loads(out)]
        ran = [r for r in results if r["status"] == "ran"]
        fires = project.rows("SELECT fire_time, status FROM schedule_fires")
        runs = project.rows("SELECT dedup_key FROM runs")
        marks_file = tmp_path / f"marks{rep}"
        assert marks_file.exists(), (rep, results, fires, outs)
        marks = marks_file.read_text().splitlines()
        # One fire per minute; if the minute turned between the two, two distinct fires.
        assert len(ran) == len(runs) == len(marks) == len({r["fire"] for r in ran}), \
            (rep, results, fires)
        assert len(runs) == len({r["dedup_key"] for r in runs})
        assert 1 <= len(ran) <= 2


def _wait_for(path: Path, lines_wanted: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= lines_wanted:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never got {lines_wanted} line(s)")


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_finishes_the_run_in_progress_or_marks_it(project: Project, signals: int,
                                                          tmp_path: Path) -> None:
    project.set_config(extra=EVERY_MINUTE.format(grace="2m", pause=1.5))
    log = (tmp_path / "sched.log").open("w")
    proc = subprocess.Popen([SELFDRIVE, "scheduler", "--tick", "0.1"], cwd=project.root,
                            env=clean_env(), stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        _wait_for(tmp_path / "marks", 1)  # the run is in its 1.5 s pause now
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        code = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "sched.log").read_text()
    [run] = project.rows("SELECT * FROM runs")
    [fire] = project.rows("SELECT * FROM schedule_fires WHERE status != 'missed'")
    if signals == 1:
        assert code == 0, text
        assert run["status"] == "succeeded" and fire["status"] == "done", text
        assert "finishing the runs in progress" in text and "scheduler stopped" in text
    else:
        assert code == 130, text
        assert run["status"] == "interrupted" and fire["status"] == "interrupted", text
        steps = project.rows("SELECT status FROM steps WHERE run_id = ? AND phase = 'body' "
                             "AND kind = 'command'", (run["id"],))
        assert [s["status"] for s in steps] == ["ok", "unknown"]
        assert "marked interrupted" in text


def test_due_at_the_edges_of_a_minute() -> None:
    from selfdrive.triggers.schedule import due

    every = Schedule(id="m", runbook="tick", cron="* * * * *", expression="* * * * *",
                     grace=timedelta(minutes=2))
    for now, fire in (("10:00:59.999", "10:00:00"), ("10:00:00", "10:00:00"),
                      ("09:59:59.999999", "09:59:00")):
        plan = due(every, None, at(f"2026-11-25T{now}"))
        assert plan is not None and plan.fire == at(f"2026-11-25T{fire}"), now
        assert plan.missed == ()
    plan = due(every, at("2026-11-25T10:00:00"), at("2026-11-25T10:00:59.9"))
    assert plan is None  # nothing after the fire already handled
    plan = due(every, at("2026-11-25T10:00:00"), at("2026-11-25T10:01:00"))
    assert plan is not None and plan.fire == at("2026-11-25T10:01:00")
