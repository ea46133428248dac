"""A playbook's plan binds an approval to what Ansible will do, end to end: the real
CLI, real ansible-runner, the loopback sshd.

- the plan carries each predicted change's diff, and its hash covers it: a template
  edited after the approval is a new plan, approved again before anything is written;
- a task check mode cannot predict (``shell``) is a possible change on every host it
  targets, so it counts in the blast radius;
- the files ansible-runner keeps (extra variables, events, output) never outlive a
  ``kill -9`` of selfdrive past the next selfdrive command, and never hold the secret
  after ansible-playbook has read it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import stat
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from approvals_support import Team, clean_env, explain
from remote_support import Sshd, remote_processes, wait_until

from selfdrive.targets.private import MARK_VARIABLE

pytestmark = pytest.mark.slow
FIRST = 6  # loopback hosts 127.0.0.8 and 127.0.0.9: web1, web2


@pytest.fixture
def team(tmp_path: Path) -> Team:
    return Team(tmp_path / "team")


def _config(team: Team, sshd: Sshd, *, level: str = "L4", extra: str = "") -> None:
    hosts = "".join(textwrap.dedent(f"""
        [inventory.hosts.web{i + 1}]
        address = "{sshd.addresses[FIRST + i]}"
        port = {sshd.port}
        user = "{sshd.user}"
        key = "{sshd.client_key}"
        """) for i in range(2))
    team.config(level, f'[ssh]\nknown_hosts = "{sshd.known_hosts}"\n'
                       f'[inventory.groups]\nweb = ["web1", "web2"]\n{hosts}\n{extra}')


@pytest.fixture
def remote_home(sshd: Sshd) -> Iterator[Path]:
    """A folder in the SSH user's home, theirs, removed afterwards."""
    user = pwd.getpwnam(sshd.user)
    folder = Path(user.pw_dir) / f"selfdrive-plan-{uuid.uuid4().hex[:10]}"
    folder.mkdir()
    os.chown(folder, user.pw_uid, user.pw_gid)
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def _own(path: Path, sshd: Sshd) -> None:
    user = pwd.getpwnam(sshd.user)
    os.chown(path, user.pw_uid, user.pw_gid)


TEMPLATE_RUNBOOK = '''
"""HIGH risk: someone other than the requester approves it."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.HIGH, timeout="2m")
def render_config(ctx: Context, dest: str) -> None:
    """Render the app's config from its template, and copy its banner."""
    result = ctx.ansible("site.yml", hosts="web1", extravars={"dest": dest})
    if not result.ok:
        raise RuntimeError(result.error or str(result.failures))
'''

TEMPLATE_PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: render the config
      template: {src: app.conf.j2, dest: "{{ dest }}/app.conf"}
    - name: copy the banner
      copy: {src: banner.txt, dest: "{{ dest }}/banner.txt"}
"""


def _template_team(team: Team, sshd: Sshd, version: str) -> None:
    _config(team, sshd)
    team.runbook("render.py", TEMPLATE_RUNBOOK)
    (team.root / "site.yml").write_text(TEMPLATE_PLAYBOOK)
    (team.root / "app.conf.j2").write_text(
        f"version = {version}\nhost = {{{{ inventory_hostname }}}}\n")
    (team.root / "banner.txt").write_text("welcome\n")


def _ansible_changes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in plan["changes"] if c["kind"] == "ansible-change"]


def test_an_edited_template_after_approval_is_a_new_plan_and_writes_nothing(
        team: Team, sshd: Sshd, remote_home: Path) -> None:
    _template_team(team, sshd, "2")
    conf = remote_home / "app.conf"
    conf.write_text("version = 1\nhost = web1\n")
    _own(conf, sshd)
    asked = team.request("render-config", f"dest={remote_home}", who="alice", code=3)
    run_id = asked["run"]["id"]
    approved_hash = asked["plan"]["hash"]
    render, banner = _ansible_changes(asked["plan"])
    assert render["target"] == "web1" and render["command"].endswith("render the config")
    assert "-version = 1\n+version = 2\n" in render["text"]
    assert "+welcome\n" in banner["text"]
    assert team.sd("approve", run_id, who="bob").returncode == 0

    # The template's source changes after bob approved version 2.
    (team.root / "app.conf.j2").write_text("version = 3\nhost = {{ inventory_hostname }}\n")
    drifted = team.sd("resume", run_id, who="carol")
    assert drifted.returncode == 3, explain(drifted)
    run = team.run_row(run_id)
    assert run["status"] == "pending_approval" and "plan changed" in run["error"]
    assert run["plan_hash"] != approved_hash
    assert conf.read_text() == "version = 1\nhost = web1\n"  # nothing written
    assert not (remote_home / "banner.txt").exists()
    assert team.events("run.resumed", run_id) == []
    # Both plans are shown, with what each would write.
    assert approved_hash[:12] in drifted.stderr and run["plan_hash"][:12] in drifted.stderr
    assert "+version = 2" in drifted.stderr and "+version = 3" in drifted.stderr

    # Approved again, unchanged: it writes exactly what was approved.
    assert team.sd("approve", run_id, who="bob").returncode == 0
    done = team.sd_json("resume", run_id, who="carol", code=0)
    assert done["run"]["status"] == "succeeded"
    assert done["plan"]["hash"] == run["plan_hash"]
    assert conf.read_text() == "version = 3\nhost = web1\n"
    assert (remote_home / "banner.txt").read_text() == "welcome\n"
    logs = team.sd("logs", run_id)
    assert "+version = 3" in logs.stdout, explain(logs)


def test_the_same_plan_twice_has_the_same_hash(team: Team, sshd: Sshd,
                                               remote_home: Path) -> None:
    """Ansible names a fresh temp folder in the diff headers of `template` and `copy`
    every run; they must not make every resume look like a changed plan."""
    _template_team(team, sshd, "2")
    first = team.sd_json("plan", "render-config", "-p", f"dest={remote_home}")
    shown = team.sd("plan", "render-config", "-p", f"dest={remote_home}")  # at a terminal
    assert shown.returncode == 0, explain(shown)
    hashes = [r["plan_hash"] for r in team.rows("SELECT plan_hash FROM runs ORDER BY rowid")]
    assert hashes == [first["plan"]["hash"]] * 2
    texts = [c["text"] for c in _ansible_changes(first["plan"])]
    assert len(texts) == 2 and all("+++ after: " in t for t in texts), texts
    assert not [t for t in texts if "ansible-tmp-" in t or "ansible-local-" in t], texts
    assert any("<ansible temp>/" in t for t in texts), texts
    # The plan, as a person reads it, shows the diffs.
    # (on stdout when it is redirected, as here; on stderr at a terminal)
    seen = shown.stdout + shown.stderr
    assert f"Plan {hashes[0][:12]} — 2 change(s) on web1" in seen, explain(shown)
    assert "+version = 2" in seen and "+welcome" in seen, explain(shown)


SHELL_RUNBOOK = '''
"""LOW risk and verified: autonomous at L4 unless a guardrail trips."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW, timeout="2m")
def restart_app(ctx: Context, marker: str) -> None:
    """Restart the app on every web host (a shell task check mode cannot predict)."""
    result = ctx.ansible([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "restart", "shell": "echo restarted >> {{ marker }}"},
        {"name": "record", "shell": "echo done >> {{ marker }}.log"},
        {"name": "raw", "raw": "echo raw >> {{ marker }}.raw"},
        # A module without check-mode support: skipped "for check mode".
        {"name": "answer", "expect": {"command": "true", "responses": {"x": "y"}}},
        {"name": "never", "shell": "echo never >> {{ marker }}.never", "when": "false"},
    ]}], hosts="web", extravars={"marker": marker})
    if not result.ok:
        raise RuntimeError(result.error or str(result.failures))


@restart_app.verify
def restarted(ctx: Context) -> bool:
    return True
'''


def test_shell_tasks_count_in_the_blast_radius(team: Team, sshd: Sshd,
                                              remote_home: Path) -> None:
    _config(team, sshd, extra="[guardrails]\nblast_radius = 1\n")
    team.runbook("restart.py", SHELL_RUNBOOK)
    marker = remote_home / "restarted"
    out = team.request("restart-app", f"marker={marker}", who="alice", code=3)
    assert out["run"]["status"] == "pending_approval", out
    assert out["decision"]["mode"] == "approval"
    [reason] = [r for r in out["decision"]["reasons"] if r.startswith("guardrail: ")]
    assert "blast radius: this run touches 2 targets (limit 1)" in reason
    assert out["plan"]["targets"] == ["web1", "web2"]
    changes = _ansible_changes(out["plan"])
    assert [(c["target"], c["command"]) for c in changes] == [
        (h, f"ansible inline playbook: {task} (check mode cannot predict it)")
        for task in ("restart", "record", "raw", "answer") for h in ("web1", "web2")]
    assert all(c["data"]["unpredictable"] for c in changes)
    assert changes[2]["text"] == f"shell: echo done >> {marker}.log"
    assert changes[4]["text"] == f"raw: echo raw >> {marker}.raw"
    assert changes[6]["text"].startswith("expect: command=true")
    assert out["plan"]["unpredictable"] == 8
    assert list(remote_home.iterdir()) == []  # nothing ran
    assert len(team.events("guardrail.tripped", out["run"]["id"])) == 1


RUNBOOK_WITH_SECRET = '''
"""Pass a secret to a playbook that then takes a while."""
from selfdrive import Context, Risk, SecretStr, runbook


@runbook(risk=Risk.LOW, timeout="5m")
def rotate_token(ctx: Context, token: SecretStr, pause: str) -> None:
    """Hand the token to the app, then wait."""
    ctx.ansible("rotate.yml", hosts="web1", extravars={"token": token, "pause": pause})


@rotate_token.verify
def rotated(ctx: Context) -> bool:
    return True
'''

ROTATE_PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: show the token
      debug: {msg: "token is {{ token }}"}
    - name: use the token
      command: echo {{ token }}
    - name: take a while
      command: sleep {{ pause }}
"""


def _files_containing(roots: list[Path], needle: str) -> list[str]:
    found = subprocess.run(["grep", "-rl", "-D", "skip", "--", needle, *map(str, roots)],
                           capture_output=True, text=True, check=False)
    return found.stdout.split()


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for path in [root, *root.glob("run-*")]:
        with contextlib.suppress(OSError):
            out[path.name] = stat.S_IMODE(path.lstat().st_mode)
    return out


def test_kill_9_mid_playbook_leaves_no_secret_after_the_next_command(
        team: Team, sshd: Sshd) -> None:
    canary = f"CANARY-{uuid.uuid4().hex}"
    pause = "63.25"
    _config(team, sshd)
    team.runbook("rotate.py", RUNBOOK_WITH_SECRET)
    (team.root / "rotate.yml").write_text(ROTATE_PLAYBOOK)
    private = team.journal.parent / "ansible"
    env = clean_env(SD_CANARY=canary)
    proc = subprocess.Popen(team.command("run", "rotate-token", "-p", "token=@env:SD_CANARY",
                                         "-p", f"pause={pause}"),
                            cwd=team.root, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        modes: list[dict[str, int]] = []

        def sleeping() -> bool:
            modes.append(_modes(private))
            return bool(remote_processes(sshd.user, f"sleep {pause}"))

        assert wait_until(sleeping, timeout=90, interval=0.2), "the playbook never got going"
        seen = [m for m in modes if len(m) > 1]  # the root and a run's directory
        assert seen and all(set(m.values()) == {0o700} for m in seen), modes
        [run_dir] = private.glob("run-*")
        marked = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                  and _environ_has(p, f"{MARK_VARIABLE}={run_dir.name}")]
        assert marked, "expected the playbook's processes to carry the run's mark"
        # ansible-playbook has read the extra variables: no file holds the token now.
        assert _files_containing([team.root], canary) == []
        proc.kill()  # SIGKILL: no finally, no clean-up
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    assert run_dir.exists()  # what the dead process left behind ...
    history = team.sd("history")
    assert history.returncode == 0, explain(history)
    assert not run_dir.exists()  # ... is gone after the next command
    assert list(private.iterdir()) == []
    assert wait_until(lambda: not remote_processes(sshd.user, f"sleep {pause}"), timeout=10)
    assert not [p for p in marked if p.exists() and _alive(p)]
    assert _files_containing([Path("/tmp"), team.journal.parent], canary) == []
    [run] = team.rows("SELECT status FROM runs")
    assert run["status"] == "interrupted"


def _environ_has(proc: Path, entry: str) -> bool:
    try:
        return entry.encode() in (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _alive(proc: Path) -> bool:
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ansible_gets_the_teams_environment_allow_list_only(team: Team, sshd: Sshd) -> None:
    _config(team, sshd, extra='[executor]\nenv_allow = ["PATH", "HOME", "SD_SHARED"]\n')
    team.runbook("env.py", '''
        from selfdrive import Context, Risk, runbook

        @runbook(risk=Risk.READ_ONLY)
        def show_env(ctx: Context) -> None:
            """Say which of two variables Ansible sees."""
            ctx.ansible([{"hosts": "all", "gather_facts": False, "tasks": [{
                "name": "look", "debug": {"msg": "shared=[{{ lookup('env', 'SD_SHARED') }}] "
                                                 "private=[{{ lookup('env', 'SD_PRIVATE') }}]"}}]}],
                hosts="web1", readonly=True)
        ''')
    env = clean_env(SD_SHARED="for-all", SD_PRIVATE="selfdrive-only")
    out = team.sd("run", "show-env", "--json", env=env)
    assert out.returncode == 0, explain(out)
    [step] = [s for s in team.rows("SELECT kind, stdout FROM steps")
              if s["kind"] == "ansible" and s["stdout"]]
    assert "shared=[for-all] private=[]" in step["stdout"], step["stdout"]
