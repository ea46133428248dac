"""`selfdrive lint` and docstrings: a missing one, and one that says nothing yet (a TODO
note, the scaffold's placeholder, hardly a word), are findings (exit 1)."""

from __future__ import annotations

import json
import subprocess

import pytest
from cli_support import Project, explain

BOOK = '''
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.READ_ONLY{extra})
def look(ctx: Context) -> None:
    {doc}
    ctx.run("true", readonly=True)
'''


def _lint(project: Project, doc: str, extra: str = "") -> subprocess.CompletedProcess[str]:
    project.runbook("look.py", BOOK.format(doc=doc, extra=extra))
    return project.sd("lint", "--json")


@pytest.mark.parametrize("doc", [
    '"""TODO"""', '"""TODO: say what this does."""', '"""todo - later"""',
    '"""FIXME"""', '"""XXX write me"""', '"""TBD."""', '"""..."""', '""" - """',
    '"""x"""', '"""\n\n    TODO\n    """', '"""[TODO] describe it\n\n    More text.\n    """',
])
def test_a_placeholder_docstring_is_a_finding(l4: Project, doc: str) -> None:
    proc = _lint(l4, doc)
    assert proc.returncode == 1, explain(proc)
    [finding] = json.loads(proc.stdout)["findings"]
    assert finding["level"] == "warning" and "look: the docstring is a placeholder" in \
        finding["what"]


def test_a_placeholder_description_is_a_finding_too(l4: Project) -> None:
    proc = _lint(l4, '"""Looks."""', extra=', description="TODO"')
    assert proc.returncode == 1, explain(proc)
    assert "placeholder" in json.loads(proc.stdout)["findings"][0]["what"]


def test_a_missing_docstring_is_still_named_as_missing(l4: Project) -> None:
    proc = _lint(l4, "pass")
    assert proc.returncode == 1, explain(proc)
    assert "no docstring" in json.loads(proc.stdout)["findings"][0]["what"]


@pytest.mark.parametrize("doc", [
    '"""Look at the disk."""', '"""Restart nginx; TODO-free since 2024."""',
    '"""Show who is logged in (XXX: no such thing as too much)."""', '"""Ping db1."""',
])
def test_a_real_docstring_is_clean(l4: Project, doc: str) -> None:
    proc = _lint(l4, doc)
    assert proc.returncode == 0, explain(proc)
    assert json.loads(proc.stdout)["findings"] == []
