"""What people type reaches selfdrive as text or is refused: bytes that are not UTF-8,
in an argument, an option, the environment or a path, are a usage error (exit 2)
naming where they came from, and nothing is written. And ``--as`` works on either
side of the command name."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from cli_support import SELFDRIVE, Project, clean_env, explain, team_config

from selfdrive.cli.main import COMMANDS

BAD = "\udcff"  # how Python hands over the byte 0xff from argv or the environment

BOOKS = '''
"""Runbooks for the input tests."""
from pydantic import SecretStr

from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def touch_file(ctx: Context, path: str) -> None:
    """Touches a file."""
    ctx.run("touch {{ path }}", check=True)


@runbook(risk=Risk.LOW)
def use_token(ctx: Context, token: SecretStr) -> None:
    """Uses a secret."""
    ctx.run("true {{ token }}", check=True)
'''


@pytest.fixture
def proj(l4: Project) -> Project:
    l4.runbook("books.py", BOOKS)
    return l4


def _nothing_written(project: Project) -> None:
    project.assert_nothing_written()
    if project.journal.exists():
        conn = sqlite3.connect(project.journal)
        try:
            for table in ("flags", "alerts", "approvals"):
                assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
        finally:
            conn.close()


def _refused(proc: subprocess.CompletedProcess[str], *texts: str) -> None:
    assert proc.returncode == 2, explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)
    for text in texts:
        assert text in proc.stderr, f"{text!r} not in stderr" + explain(proc)


@pytest.mark.parametrize(("args", "named"), [
    (["run", "touch-file", "-p", f"path=/tmp/x{BAD}", "--yes"], "'-p' / '--param'"),
    (["plan", "touch-file", "-p", f"pa{BAD}th=/tmp"], "'-p' / '--param'"),
    (["--as", f"al{BAD}", "run", "touch-file", "-p", "path=/tmp/x", "--yes"], "'--as'"),
    (["run", "touch-file", "-p", "path=/tmp/x", "--yes", "--as", f"al{BAD}"], "'--as'"),
    (["halt", "--reason", f"disk{BAD}"], "'--reason'"),
    (["--as", f"on{BAD}call", "halt", "--reason", "drill"], "'--as'"),
    (["trigger", f"Disk{BAD}"], "'ALERTNAME'"),
    (["trigger", "Disk", "-l", f"host=web{BAD}"], "'-l' / '--label'"),
    (["trigger", "Disk", "-l", f"ho{BAD}st=web"], "'-l' / '--label'"),
    (["trigger", "Disk", "-a", f"summary={BAD}"], "'-a' / '--annotation'"),
    (["trigger", "Disk", "--fingerprint", BAD], "'--fingerprint'"),
    (["approve", f"run{BAD}"], "'RUN_ID'"),
    (["logs", f"run{BAD}"], "'RUN_ID'"),
    (["history", f"touch{BAD}"], "'[NAME]'"),
    (["show", f"touch{BAD}"], "'NAME'"),
    (["alerts", "--name", BAD], "'--name'"),
    (["audit", "verify", "--head", BAD], "'--head'"),
    (["report", "--since", "7d", "-o", f"report{BAD}.md"], "'-o' / '--output'"),
])
def test_bytes_that_are_not_utf8_are_refused_naming_the_input(proj: Project, args: list[str],
                                                               named: str) -> None:
    proc = proj.sd(*args)
    _refused(proc, named, "\\xff", "not valid UTF-8")
    _nothing_written(proj)
    assert not list(proj.root.glob("report*")), "a report was written"


def test_selfdrive_user_that_is_not_utf8(proj: Project) -> None:
    proc = proj.sd("halt", "--reason", "drill", env=clean_env(SELFDRIVE_USER=f"al{BAD}"))
    _refused(proc, "$SELFDRIVE_USER", "'al\\xff'", "--as")
    _nothing_written(proj)
    # --as takes precedence over the variable, so it is a way out.
    ok = proj.sd("--as", "alice", "halt", "--reason", "drill",
                 env=clean_env(SELFDRIVE_USER=f"al{BAD}"))
    assert ok.returncode == 0 and "halted by alice" in ok.stdout, explain(ok)


def test_an_env_secret_that_is_not_utf8_is_named_without_its_bytes(proj: Project) -> None:
    proc = proj.sd("run", "use-token", "-p", "token=@env:API_TOKEN", "--yes",
                   env=clean_env(API_TOKEN=f"s3cr{BAD}t"))
    _refused(proc, "token=@env:API_TOKEN", "'API_TOKEN'", "not valid UTF-8")
    assert "s3cr" not in proc.stderr + proc.stdout
    _nothing_written(proj)


def test_a_project_whose_path_is_not_utf8(tmp_path: Path) -> None:
    odd = Project(tmp_path / f"team{BAD}")
    odd.config(team_config("L4"))
    odd.runbook("books.py", BOOKS)
    for args in (["list"], ["run", "touch-file", "-p", "path=/tmp/x", "--yes"]):
        proc = odd.sd(*args)
        _refused(proc, "team\\xff", "selfdrive.toml", "not valid UTF-8")
    _nothing_written(odd)
    # Found through --config from elsewhere: the same.
    elsewhere = Project(tmp_path / "elsewhere")
    proc = elsewhere.sd("--config", str(odd.root / "selfdrive.toml"), "list")
    _refused(proc, "team\\xff", "selfdrive.toml")


def test_init_refuses_a_folder_whose_path_is_not_utf8(tmp_path: Path) -> None:
    parent = Project(tmp_path / f"odd{BAD}")
    for args in (["init"], ["init", "--team", "sre"], ["init", "sub"]):
        proc = parent.sd(*args)
        _refused(proc, "odd\\xff", "nothing was written")
    assert list(parent.root.iterdir()) == []


def test_a_runbook_file_whose_name_is_not_utf8_is_a_load_problem(proj: Project) -> None:
    (proj.root / "runbooks" / f"odd{BAD}.py").write_text('"""Never loaded."""\n')
    listed = proj.sd("list")
    assert listed.returncode == 2, explain(listed)
    assert "touch-file" in listed.stdout
    assert "odd\\xff.py" in listed.stderr and "rename it" in listed.stderr
    assert "Traceback" not in listed.stderr
    planned = proj.sd("plan", "touch-file", "-p", f"path={proj.root / 'x'}")
    assert planned.returncode == 0, explain(planned)


# -- --as on either side of the command ------------------------------------------------


def test_as_after_the_command_name(proj: Project, tmp_path: Path) -> None:
    halted = proj.sd("halt", "--reason", "drill", "--as", "oncall")
    assert halted.returncode == 0 and "halted by oncall" in halted.stdout, explain(halted)
    assert proj.sd("unhalt", "--as", "oncall").returncode == 0

    ran = proj.sd("run", "touch-file", "-p", f"path={tmp_path / 'a'}", "--json", "--as", "bob")
    assert ran.returncode == 0, explain(ran)
    assert json.loads(ran.stdout)["run"]["requested_by"] == "bob"

    same = proj.sd("--as", "bob", "run", "touch-file", "-p", f"path={tmp_path / 'b'}",
                   "--json", "--as", "bob")
    assert same.returncode == 0, explain(same)
    assert json.loads(same.stdout)["run"]["requested_by"] == "bob"

    before = proj.run_rows()
    differ = proj.sd("--as", "alice", "run", "touch-file", "-p", f"path={tmp_path / 'c'}",
                     "--as", "bob")
    _refused(differ, "--as 'bob'", "--as 'alice'")
    assert proj.run_rows() == before
    assert not (tmp_path / "c").exists()

    nested = proj.sd("alerts", "--as", "carol", "show", "1", "--as", "dave")
    _refused(nested, "--as 'dave'", "--as 'carol'")


def _all_commands() -> list[list[str]]:
    import click

    from selfdrive.cli.main import cli

    ctx = click.Context(cli)
    out = []
    for name in sorted(COMMANDS):
        command = cli.get_command(ctx, name)
        assert command is not None
        out.append([name])
        if isinstance(command, click.Group):
            out.extend([name, sub] for sub in command.list_commands(ctx))
    return out


def test_every_command_accepts_as(tmp_path: Path) -> None:
    for words in _all_commands():
        proc = subprocess.run([SELFDRIVE, *words, "--as", "bob", "--help"], cwd=tmp_path,
                              env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30, check=False)
        assert proc.returncode == 0, explain(proc)
        assert "--as NAME" in proc.stdout, words
