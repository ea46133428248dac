"""reload-nginx-config against a stand-in "nginx" (a script with -t and -s reload, and a
health check reading what was loaded): install, reload, verify, roll back."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from kit_support import Team

from selfdrive.library.reload_nginx_config import reload_nginx_config
from selfdrive.sdk import RunState
from selfdrive.testing import FakeContext, plan_of, simulate

NGINX = """#!/bin/bash
# A stand-in for nginx: -t checks a file, -s reload "loads" the live file, health
# answers like a server running the loaded config would.
state={state}
case "$1" in
    -t) file=$4; grep -q '^events' "$file" && ! grep -q 'syntax error' "$file" ;;
    -s) cp "$state/live.conf" "$state/loaded.conf" ;;
    health) test -f "$state/loaded.conf" && ! grep -q 'return 500' "$state/loaded.conf" ;;
esac
"""
GOOD = "events {}\nhttp { server { listen 8080; return 200; } }\n"


@dataclass(frozen=True)
class Server:
    state: Path
    live: Path
    params: dict[str, str]


@pytest.fixture
def server(tmp_path: Path) -> Server:
    state = tmp_path / "nginx"
    state.mkdir()
    script = tmp_path / "nginx.sh"
    script.write_text(NGINX.format(state=state))
    script.chmod(0o755)
    live = state / "live.conf"
    live.write_text("events {}\nhttp { server { listen 80; } }\n")
    (state / "loaded.conf").write_text(live.read_text())
    return Server(state, live, {"config_path": str(live),
                                "validate_command": f'{script} -t -q -c "$1"',
                                "reload_command": f"{script} -s reload",
                                "health_command": f"{script} health"})


def _candidate(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "candidate.conf"
    path.write_text(text)
    return path


def test_a_good_config_is_installed_reloaded_and_serves(team: Team, tmp_path: Path,
                                                        server: Server) -> None:
    live, state = server.live, server.state
    old = live.read_text()
    params = {**server.params, "new_config": str(_candidate(tmp_path, GOOD))}
    real_plan = team.plan("reload-nginx-config", **params)

    fake = FakeContext()
    fake.on(f"test -f {live} && test -f {params['new_config']}")
    fake.on(re.compile(r"^sh -c .* -t -q -c .* sh "))  # the candidate validates
    fake.on(re.compile(r"^cmp -s -- "), exit_code=1)  # the rollback's "is it ours?" (plan)
    assert plan_of(reload_nginx_config, fake, **params).hash == real_plan.hash
    assert [c.command for c in real_plan.changes][:2] == [
        f"cp -p -- {live} {live}.selfdrive-prev", f"cp -- {params['new_config']} {live}"]

    outcome = team.run("reload-nginx-config", **params)
    assert outcome.run.status is RunState.SUCCEEDED, outcome.message
    assert live.read_text() == GOOD == (state / "loaded.conf").read_text()
    assert Path(f"{live}.selfdrive-prev").read_text() == old


def test_an_unhealthy_config_is_rolled_back_and_reloaded(team: Team, tmp_path: Path,
                                                         server: Server) -> None:
    live, state = server.live, server.state
    old = live.read_text()
    bad = GOOD.replace("return 200", "return 500")
    params = {**server.params, "new_config": str(_candidate(tmp_path, bad))}
    outcome = team.run("reload-nginx-config", **params)
    assert outcome.run.status is RunState.ROLLED_BACK and outcome.exit_code == 5, \
        outcome.message
    assert live.read_text() == old == (state / "loaded.conf").read_text()
    rollback = [s["command"] for s in team.steps(outcome.run.id)
                if s["phase"] == "rollback" and s["kind"] == "command" and not s["readonly"]]
    assert rollback == [f"cp -p -- {live}.selfdrive-prev {live}",
                        f"sh -c {shlex.quote(str(params['reload_command']))} sh {live}"]


def test_an_invalid_candidate_changes_nothing(team: Team, tmp_path: Path,
                                              server: Server) -> None:
    live = server.live
    old = live.read_text()
    params = {**server.params,
              "new_config": str(_candidate(tmp_path, "events {}\nsyntax error\n"))}
    outcome = team.run("reload-nginx-config", **params)
    assert outcome.run.status is RunState.PRECONDITION_FAILED and outcome.exit_code == 4
    assert live.read_text() == old and not Path(f"{live}.selfdrive-prev").exists()


def test_a_failed_reload_rolls_back_but_never_restores_a_file_it_did_not_replace() -> None:
    fake = FakeContext(default_ok=True)
    fake.on("test -f /etc/nginx/nginx.conf && test -f /tmp/new.conf")
    fake.on("sh -c 'nginx -t -q -c \"$1\"' sh /tmp/new.conf")
    fake.on("sh -c 'nginx -t -q -c \"$1\"' sh /etc/nginx/nginx.conf")
    fake.on("sh -c 'nginx -s reload' sh /etc/nginx/nginx.conf", exit_code=1, times=1)
    fake.on(re.compile(r"^cmp -s -- /etc/nginx/nginx.conf /tmp/new.conf"), exit_code=1)
    sim = simulate(reload_nginx_config, fake, config_path="/etc/nginx/nginx.conf",
                   new_config="/tmp/new.conf")
    assert sim.status is RunState.ROLLED_BACK and sim.exit_code == 1
    # The live file is not the candidate (someone changed it?): nothing is restored.
    assert sim.commands("rollback", changes=True) == []
    assert "nothing to restore" in " ".join(sim.logs)
