"""Which command templates pass a plain str parameter as an operand with no `--` before it
(what `selfdrive lint` warns about), read from real runbook files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from selfdrive.registry import load_registry
from selfdrive.registry.operands import operand_names, unguarded_operands


@pytest.mark.parametrize(("template", "names"), [
    ("tar -cf x {{ names }}", ["names"]),
    ("rm -f {{ name }}", ["name"]),
    ("rm -f -- {{ name }}", []),                      # after --
    ("find {{ path }} -type f", ["path"]),
    ("{{ tool }} -x {{ arg }}", ["arg"]),             # the command itself is no operand
    ("PGPASSWORD={{ pw }} {{ psql }} -c {{ sql }}", ["sql"]),
    ("cat {{ a }} | grep -- {{ b }} {{ c }}; ls {{ d }}", ["a", "d"]),  # -- ends with its command
    ("gzip -c -- {{ a }} > {{ out }} 2>{{ err }} < {{ inp }}", []),     # redirections
    ('cmd --opt={{ v }} {{ w | quote }} "{{ q }}" {{ a }}{{ b }}', []),  # not a bare word
    ("if [ -f {{ f }} ]; then cp -p -- {{ f }} {{ g }}; fi", ["f"]),
    ("x {% if a %}{{ a }}{% endif %} {# {{ b }} #}", ["a"]),
    ("tail -c {{ n }} -- {{ p }} > {{ t }} && cat -- {{ t }} > {{ p }}", ["n"]),
])
def test_operand_names(template: str, names: list[str]) -> None:
    assert operand_names(template) == names


BOOKS = '''
"""Runbooks, some of which pass a plain str as an operand."""
from typing import Annotated, Literal

from pydantic import StringConstraints

from selfdrive import Context, Operand, Risk, runbook

ARCHIVE = "tar -cf {{ archive }} {{ names }}"


@runbook(risk=Risk.LOW)
def pack(ctx: Context, archive: Operand, names: list[str]) -> None:
    """Packs files (names may start with '-': flagged)."""
    ctx.run(ARCHIVE, check=True)
    ctx.run("ls -l -- {{ names }}", readonly=True)


@runbook(risk=Risk.LOW)
def careful(ctx: Context, names: list[Operand], mode: Literal["a", "b"] = "a",
            tag: Annotated[str, StringConstraints(pattern="^[a-z]+$")] = "x",
            path: str | None = None) -> None:
    """Packs files with typed parameters; path is plain but always after --."""
    ctx.run("tar -cf out.tar {{ names }} {{ mode }} {{ tag }}", check=True)
    ctx.run("rm -f -- {{ path }}", check=True)
    ctx.run("touch {{ path }}", path="/tmp/shadowed", check=True)  # the keyword wins


@careful.verify
def packed(ctx: Context, path: str | None) -> bool:
    """Docstrings are not commands: `rm {{ path }}`."""
    return ctx.run("test -e {{ path }}", readonly=True).ok
'''


@pytest.fixture
def books(tmp_path: Path) -> Path:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "books.py").write_text(textwrap.dedent(BOOKS).lstrip())
    return folder


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_plain_str_operands_are_found_where_they_are(books: Path) -> None:
    registry = load_registry([books], entry_points=False)
    assert registry.problems == ()
    path = books / "books.py"
    pack, careful = registry.get("pack"), registry.get("careful")
    siblings = [pack, careful]

    found = [(u.line, u.param) for u in unguarded_operands(pack, siblings)]
    assert found == [(_line(path, "ARCHIVE = "), "names")]
    # Only its own functions (and module-level constants) speak for a runbook: the
    # verification's `test -e {{ path }}` is careful's, where path is a plain str.
    assert [(u.line, u.param) for u in unguarded_operands(careful, siblings)] == [
        (_line(path, "test -e {{ path }}"), "path")]
    # Without its siblings, pack would answer for careful's template too.
    assert [(u.line, u.param) for u in unguarded_operands(pack)] == [
        (_line(path, "ARCHIVE = "), "names"), (_line(path, "tar -cf out.tar"), "names")]
