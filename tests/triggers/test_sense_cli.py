"""`selfdrive trigger` and `selfdrive alerts`: the receiver's path, from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sense_support import SELFDRIVE, Project, clean_env, explain

BOOKS = '''
@runbook(risk=Risk.LOW, triggers=[alert("HighLatency", service=re.compile("api|web"),
                                         params={{"service": "{{{{ labels.service }}}}"}})])
def restart_service(ctx: Context, service: str) -> None:
    """Restarts a service (here: notes it in a file)."""
    ctx.run("echo restarted {{{{ service }}}} >> {marks}")


@runbook(risk=Risk.READ_ONLY, triggers=[alert("HighLatency")])
def latency_report(ctx: Context) -> None:
    """Collects what an on-call person looks at first."""
    ctx.run("echo p99=870ms; echo 'top: GET /checkout'", readonly=True)
    ctx.note("region", "eu-west-1")
    ctx.log("checked the load balancer")
'''


@pytest.fixture
def project(tmp_path: Path) -> Project:
    p = Project(tmp_path / "proj", level="L2")
    p.runbook(BOOKS.format(marks=tmp_path / "marks"))
    return p


def test_trigger_runs_matching_runbooks_and_alerts_show_the_brief(project: Project,
                                                                   tmp_path: Path) -> None:
    proc = project.sd("trigger", "HighLatency", "-l", "service=api", "-l", "region=eu",
                      "-a", "summary=p99 over 800ms", "--json")
    assert proc.returncode == 0, explain(proc)
    out = json.loads(proc.stdout)
    alert = out["alert"]
    assert alert["name"] == "HighLatency" and alert["source"] == "cli"
    assert alert["matched"] == ["restart-service", "latency-report"]
    runs = {r["runbook"]: r["run"] for r in out["runs"]}
    assert runs["restart-service"]["status"] == "succeeded"
    assert runs["restart-service"]["mode"] == "autonomous"  # L2 × LOW, its own trigger
    assert runs["latency-report"]["status"] == "succeeded"
    assert (tmp_path / "marks").read_text() == "restarted api\n"

    listed = project.sd("alerts")
    assert listed.returncode == 0, explain(listed)
    assert "HighLatency" in listed.stdout and runs["restart-service"]["id"] in listed.stdout

    shown = project.sd("alerts", "show", str(alert["id"]))
    assert shown.returncode == 0, explain(shown)
    text = shown.stdout
    assert f"alert #{alert['id']}: HighLatency (firing)" in text
    assert "labels: region=eu, service=api" in text
    assert "latency-report (diagnostic): started" in text
    # The context brief: the diagnostic's commands and output, notes and logs.
    assert "# HighLatency — alert #" in text
    assert "Summary: p99 over 800ms" in text
    assert "$ echo p99=870ms; echo 'top: GET /checkout'" in text
    assert "    p99=870ms\n    top: GET /checkout" in text
    assert "note region = eu-west-1" in text and "log: checked the load balancer" in text
    as_json = json.loads(project.sd("alerts", "show", str(alert["id"]), "--json").stdout)
    assert as_json["brief"] and "p99=870ms" in as_json["brief"]

    again = project.sd("trigger", "HighLatency", "-l", "service=api", "-l", "region=eu")
    assert again.returncode == 0, explain(again)
    assert "restart-service: duplicate" in again.stdout
    assert (tmp_path / "marks").read_text() == "restarted api\n"
    dup_id = str(int(alert["id"]) + 1)
    dup = project.sd("alerts", "show", dup_id)  # a duplicate shows the brief it links to
    assert "p99=870ms" in dup.stdout, explain(dup)


def test_trigger_resolved_and_unmatched_alerts_start_nothing(project: Project,
                                                            tmp_path: Path) -> None:
    resolved = project.sd("trigger", "HighLatency", "-l", "service=api", "--resolved",
                          "--json")
    assert resolved.returncode == 0, explain(resolved)
    out = json.loads(resolved.stdout)
    assert out["alert"]["status"] == "resolved" and out["runs"] == []
    other = project.sd("trigger", "Unknown", "-l", "x=y")
    assert other.returncode == 0, explain(other)
    assert "matches no runbook" in other.stdout
    assert not (tmp_path / "marks").exists()
    listed = json.loads(project.sd("alerts", "--json").stdout)
    assert [a["status"] for a in listed] == ["firing", "resolved"]


def test_runs_and_the_alerts_that_started_them_name_each_other(project: Project) -> None:
    proc = project.sd("trigger", "HighLatency", "-l", "service=web", "--json")
    assert proc.returncode == 0, explain(proc)
    out = json.loads(proc.stdout)
    alert_id, run_ids = out["alert"]["id"], [r["run"]["id"] for r in out["runs"]]
    assert len(run_ids) == 2
    by_hand = project.sd("run", "restart-service", "-p", "service=db", "--yes", "--json")
    assert by_hand.returncode == 0, explain(by_hand)
    hand_id = json.loads(by_hand.stdout)["run"]["id"]
    project.sd("trigger", "HighLatency", "-l", "service=web")  # a duplicate: links, no run

    history = json.loads(project.sd("history", "--json").stdout)
    assert {r["id"]: r["alert_id"] for r in history} == {
        **dict.fromkeys(run_ids, alert_id), hand_id: None}
    assert f"alert #{alert_id}" in project.sd("history").stdout
    logs = json.loads(project.sd("logs", run_ids[0], "--json").stdout)
    assert logs["run"]["alert_id"] == alert_id
    shown = json.loads(project.sd("alerts", "show", str(alert_id), "--json").stdout)
    assert shown["run_ids"] == run_ids
    listed = {a["id"]: a["run_ids"] for a in json.loads(project.sd("alerts", "--json").stdout)}
    assert listed == {alert_id: run_ids, alert_id + 1: []}


def test_bad_input_is_exit_2_naming_it(project: Project) -> None:
    proc = project.sd("trigger", "HighLatency", "-l", "service")
    assert proc.returncode == 2 and "-l 'service': expected key=value" in proc.stderr
    proc = project.sd("alerts", "show", "999")
    assert proc.returncode == 2 and "no alert #999" in proc.stderr
    proc = project.sd("trigger", "HighLatency", "-l", f"service={'x' * 5000}")
    assert proc.returncode == 2 and "at most 1024 allowed" in proc.stderr


def test_help_lists_the_commands_and_imports_no_server_or_cron_library() -> None:
    snippet = ("import json, sys\nfrom selfdrive.cli.main import main\n"
               "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
               "print('@@' + json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", snippet], env=clean_env(),
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    help_text, _, modules = proc.stdout.partition("@@")
    for command in ("serve", "trigger", "alerts", "scheduler"):
        assert f"\n  {command} " in help_text, command
    loaded = set(json.loads(modules))
    assert not {m for m in loaded if m.split(".")[0] in ("waitress", "cronsim")}
    assert "selfdrive.triggers" not in loaded and "selfdrive.cli.cmd_sense" not in loaded
    serve_help = subprocess.run([SELFDRIVE, "serve", "--help"], env=clean_env(),
                                capture_output=True, text=True, timeout=30, check=False)
    assert serve_help.returncode == 0 and "--port" in serve_help.stdout
