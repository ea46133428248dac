"""Bad input: exit 2, a message that says what and where, and nothing in the journal.

Also: parameter values are data, never shell; a value full of shell syntax reaches the
command as one literal argument.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import Project, explain, team_config

GOOD = '''
"""Well-formed runbooks."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def clean_cache(ctx: Context, path: str, days: int = 7) -> None:
    """Delete old cache files."""
    ctx.run("find {{ path }} -mtime +{{ days }} -delete")


@runbook(risk=Risk.LOW)
def undefined_var(ctx: Context) -> None:
    """Its template names a variable nobody passes."""
    ctx.run("echo {{ no_such_variable }}")


@runbook(risk=Risk.LOW)
def echo_value(ctx: Context, value: str, out: str) -> None:
    """Writes its parameter to a file, through the shell."""
    ctx.run("printf '%s' {{ value }} > {{ out }}")
'''

BROKEN = '''
"""A runbook file with a syntax error on line 6."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def broken_thing(ctx: Context) -> None
    """Missing colon above."""
    ctx.run("true")
'''
BROKEN_LINE = 6


def _stderr_says(proc, *texts: str) -> None:
    assert proc.returncode == 2, explain(proc)
    for text in texts:
        assert text in proc.stderr, f"{text!r} not in stderr" + explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)


@pytest.fixture
def proj(l4: Project) -> Project:
    l4.runbook("good.py", GOOD)
    return l4


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_unknown_runbook_suggests_a_near_name(proj: Project, verb: str) -> None:
    proc = proj.sd(verb, "clean-cahce", "-p", "path=/tmp", *(["--yes"] if verb == "run" else []))
    _stderr_says(proc, "'clean-cahce'", "did you mean clean-cache?")
    proj.assert_nothing_written()


def test_unknown_parameter_is_named(proj: Project, tmp_path: Path) -> None:
    proc = proj.sd("run", "clean-cache", "-p", f"path={tmp_path}", "-p", "dayz=3", "--yes")
    _stderr_says(proc, "'dayz'", "not a parameter", "path, days")
    proj.assert_nothing_written()


def test_mistyped_parameter_is_named(proj: Project, tmp_path: Path) -> None:
    proc = proj.sd("run", "clean-cache", "-p", f"path={tmp_path}", "-p", "days=abc", "--yes")
    _stderr_says(proc, "'days'", "integer", "'abc'")
    # With --json the error is still on stderr, and stdout has nothing to parse.
    as_json = proj.sd("run", "clean-cache", "-p", f"path={tmp_path}", "-p", "days=abc",
                      "--json")
    _stderr_says(as_json, "'days'")
    assert as_json.stdout == ""
    proj.assert_nothing_written()


def test_missing_required_parameter_is_named(proj: Project) -> None:
    proc = proj.sd("plan", "clean-cache")
    _stderr_says(proc, "'path'", "required")
    proj.assert_nothing_written()


def test_parameter_without_a_value(proj: Project) -> None:
    proc = proj.sd("run", "clean-cache", "-p", "novalue", "--yes")
    _stderr_says(proc, "'novalue'", "key=value")
    proj.assert_nothing_written()


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_template_with_an_undefined_variable(proj: Project, verb: str) -> None:
    proc = proj.sd(verb, "undefined-var")
    _stderr_says(proc, "no_such_variable", "undefined")
    proj.assert_nothing_written()


def test_malformed_config_names_file_and_line(proj: Project) -> None:
    path = proj.config('team = "t"\nlevel = L4\n')
    for args in (["list"], ["run", "clean-cache", "-p", "path=/tmp", "--yes"], ["history"]):
        proc = proj.sd(*args)
        _stderr_says(proc, str(path), "line 2")
    proj.assert_nothing_written()


def test_unknown_config_key_is_named(proj: Project) -> None:
    path = proj.config(team_config("L4", extra="levle = 3\n"))
    proc = proj.sd("run", "clean-cache", "-p", "path=/tmp", "--yes")
    _stderr_says(proc, str(path), "levle", "unknown key")
    proj.assert_nothing_written()


def test_bad_config_value_is_named(proj: Project) -> None:
    path = proj.config('team = "t"\nlevel = "L9"\nentry_points = false\n')
    proc = proj.sd("list")
    _stderr_says(proc, str(path), "level", "L9")
    proj.assert_nothing_written()


def test_an_endless_config_file_is_refused_quickly(proj: Project) -> None:
    proc = proj.sd("--config", "/dev/zero", "list", timeout=20)
    _stderr_says(proc, "/dev/zero: larger than 1 MiB")
    proj.assert_nothing_written()


def test_an_absurd_config_duration_is_named(proj: Project) -> None:
    path = proj.config(team_config("L4", extra='[approvals]\nexpiry = "999999999999d"\n'))
    proc = proj.sd("run", "clean-cache", "-p", "path=/tmp", "--yes")
    _stderr_says(proc, f"{path}: approvals.expiry: ", "'999999999999d' is too long")
    proj.assert_nothing_written()


@pytest.mark.parametrize("days", ["9" * 30, "9" * 5000])
def test_an_absurd_integer_parameter_is_named(proj: Project, tmp_path: Path, days: str) -> None:
    proc = proj.sd("run", "clean-cache", "-p", f"path={tmp_path}", "-p", f"days={days}", "--yes")
    _stderr_says(proc, "parameter 'days'")
    assert len(proc.stderr) < 500, explain(proc)  # the value is not echoed whole
    proj.assert_nothing_written()


def test_no_config_anywhere(tmp_path: Path) -> None:
    bare = Project(tmp_path / "bare")
    if any((d / "selfdrive.toml").exists() for d in bare.root.parents):
        pytest.skip("a selfdrive.toml above the tmp folder would be found")
    proc = bare.sd("list")
    _stderr_says(proc, "selfdrive.toml", "selfdrive init")
    assert not bare.journal.exists()


def test_runbook_file_with_a_syntax_error(proj: Project) -> None:
    broken = proj.runbook("broken.py", BROKEN)
    where = f"{broken}:{BROKEN_LINE}"
    assert BROKEN.lstrip().splitlines()[BROKEN_LINE - 1].startswith("def broken_thing")

    run = proj.sd("run", "broken-thing", "--yes")
    _stderr_says(run, where, "syntax error")

    listed = proj.sd("list")
    assert listed.returncode == 2, explain(listed)
    assert "clean-cache" in listed.stdout and "echo-value" in listed.stdout
    assert where in listed.stderr

    linted = proj.sd("lint")
    assert linted.returncode == 2, explain(linted)
    assert where in linted.stdout + linted.stderr

    proj.assert_nothing_written()

    # The good runbooks in the other file still work, with a warning about the broken one.
    planned = proj.sd("plan", "clean-cache", "-p", "path=/tmp")
    assert planned.returncode == 0, explain(planned)
    assert where in planned.stderr


@pytest.mark.parametrize("payload", [
    "x; touch {owned}",
    "$(touch {owned})",
    "`touch {owned}`",
    "x && touch {owned}",
    "x\ntouch {owned}",
    "' ; touch {owned} ; '",
])
def test_parameter_values_are_never_shell(project: Project, tmp_path: Path,
                                          payload: str) -> None:
    # At L1 a LOW runbook asked for by hand needs approval; --yes gives it, so it runs.
    project.config(team_config("L1"))
    project.runbook("good.py", GOOD)
    owned = tmp_path / "owned"
    out = tmp_path / "received"
    value = payload.format(owned=owned)
    proc = project.sd("run", "echo-value", "-p", f"value={value}", "-p", f"out={out}", "--yes",
                      "--json")
    assert proc.returncode == 0, explain(proc)
    assert '"status": "succeeded"' in proc.stdout and '"mode": "approval"' in proc.stdout
    assert out.read_text() == value, "the command did not receive the value verbatim"
    assert not owned.exists(), f"{payload!r} ran as shell"


TAR = '''
"""Archives files: quoting stops shell syntax, not options."""
from selfdrive import Context, Operand, Risk, runbook


@runbook(risk=Risk.LOW)
def pack(ctx: Context, archive: Operand, names: list[Operand]) -> None:
    """Packs files into an archive."""
    ctx.run("tar -cf {{ archive }} {{ names }}", check=True)
'''


@pytest.mark.parametrize("names", [
    ["--checkpoint=1", "--checkpoint-action=exec=touch {owned}"],
    ["ok.txt", "-P"],
])
def test_an_operand_that_looks_like_an_option_is_refused(project: Project, tmp_path: Path,
                                                         names: list[str]) -> None:
    project.config(team_config("L4"))
    project.runbook("tar.py", TAR)
    owned = tmp_path / "owned"
    (project.root / "ok.txt").write_text("data")
    flags = [f for n in names for f in ("-p", f"names={n.format(owned=owned)}")]
    proc = project.sd("run", "pack", "-p", f"archive={tmp_path / 'out.tar'}", *flags)
    _stderr_says(proc, "parameter 'names.1'", "must not start with '-'")
    assert not owned.exists() and not (tmp_path / "out.tar").exists()
    project.assert_nothing_written()


LINTED = '''
"""Runbooks that pass a parameter as an operand: typed, after --, or neither."""
from selfdrive import Context, Operand, Risk, runbook


@runbook(risk=Risk.LOW)
def pack(ctx: Context, archive: Operand, names: list[str]) -> None:
    """Packs files into an archive."""
    ctx.run("tar -cf {{ archive }} {{ names }}", check=True)


@pack.verify
def packed(ctx: Context, archive: str) -> bool:
    return ctx.run("tar -tf {{ archive }}", readonly=True).ok
'''


def test_lint_warns_of_a_plain_str_operand_and_how_to_fix_it(project: Project) -> None:
    project.config(team_config("L4"))
    path = project.runbook("pack.py", LINTED)
    line = path.read_text().splitlines().index(
        '    ctx.run("tar -cf {{ archive }} {{ names }}", check=True)') + 1

    linted = project.sd("lint", "--json")

    assert linted.returncode == 1, explain(linted)
    assert json.loads(linted.stdout)["findings"] == [{
        "level": "warning", "where": f"{path}:{line}",
        "what": "pack: parameter 'names' (a plain str) is an operand with no `--` before it, "
                "so a value starting with '-' would be read as an option; type it "
                "selfdrive.Operand, or write -- before it"}]
    # `archive` is an Operand in the runbook; the hook's plain annotation does not matter.
    for old, new in (("names: list[str]", "names: list[Operand]"),
                     ("{{ archive }} {{ names }}", "{{ archive }} -- {{ names }}")):
        project.runbook("pack.py", LINTED.replace(old, new))
        clean = project.sd("lint")
        assert clean.returncode == 0 and "0 finding(s)" in clean.stdout, explain(clean)
