"""The pytest plugin: registered through the entry point, light to import, fixtures work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ("paramiko", "ansible_runner", "ansible", "jinja2", "pydantic", "sqlite_utils",
         "selfdrive.executor", "selfdrive.config", "selfdrive.sdk", "selfdrive.targets")

RUNBOOK = '''
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def bounce(ctx: Context, host: str) -> None:
    """Bounce the app on one host."""
    if ctx.ssh(host).run("pgrep -x app", readonly=True, check=False).ok:
        ctx.ssh(host).run("pkill -x app")


@bounce.verify
def app_is_gone(ctx: Context, host: str) -> bool:
    return not ctx.ssh(host).run("pgrep -x app", readonly=True, check=False).ok
'''

TESTS = '''
from bounce import bounce
from selfdrive.testing import plan_of, simulate


def test_plan_uses_the_teams_inventory(selfdrive_fake):
    selfdrive_fake.on("pgrep -x app", target="web1", stdout="42")
    plan = plan_of(bounce, selfdrive_fake, host="web1")
    assert [(c.target, c.command) for c in plan.changes] == [("web1", "pkill -x app")]


def test_registry_fixture(selfdrive_registry):
    assert [rb.name for rb in selfdrive_registry] == ["bounce"]


def test_swallowed(selfdrive_fake):
    try:
        selfdrive_fake.ssh("web1").run("uptime", readonly=True)
    except BaseException:
        pass
'''


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_importing_the_plugin_imports_nothing_heavy() -> None:
    code = ("import sys, json; import selfdrive.testing.plugin; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    loaded = json.loads(out)
    assert not [m for m in loaded if m.startswith(HEAVY)], loaded


def test_fixtures_in_a_team_project_and_the_swallowed_error_fails(tmp_path: Path) -> None:
    (tmp_path / "selfdrive.toml").write_text(textwrap.dedent('''
        team = "plugin"
        entry_points = false
        [inventory.hosts.web1]
        address = "10.0.0.1"
    '''))
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "bounce.py").write_text(RUNBOOK)
    (runbooks / "test_bounce.py").write_text(TESTS)

    proc = _pytest(tmp_path, "runbooks")
    assert "3 passed, 1 error" in proc.stdout, proc.stdout + proc.stderr
    assert "test_swallowed" in proc.stdout and "'uptime' on 'web1'" in proc.stdout

    off = _pytest(tmp_path, "-p", "no:selfdrive", "runbooks/test_bounce.py::test_swallowed")
    assert off.returncode != 0 and "fixture 'selfdrive_fake' not found" in off.stdout
