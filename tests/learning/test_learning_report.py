"""`selfdrive report`: incident reports of runs, summaries of a window.

A report is rendered from the journal only; a SecretStr parameter leaves no trace in
it, and the HTML page is valid and self-contained (no external script, style, image).
"""

from __future__ import annotations

import re
import secrets
from html.parser import HTMLParser
from pathlib import Path

from selfdrive import RunState
from selfdrive.learning.report import render_run_report, text_bars
from selfdrive.sdk.command import MASK

DEPLOY = '''
@runbook(risk=Risk.MEDIUM)
def deploy(ctx: Context, version: str, token: SecretStr, out: str) -> None:
    """Deploy a version with a registry token."""
    ctx.log(f"pulling with {token.get_secret_value()}")
    ctx.run("echo pulled {{ version }} with {{ token }}; echo '```' fenced", readonly=True)
    ctx.run("printf '%s' {{ token }} > {{ out }}")
    ctx.note("token_used", token.get_secret_value())

@deploy.verify
def deployed(ctx: Context, token: SecretStr, out: str) -> bool:
    return ctx.run("cat {{ out }}", readonly=True).stdout == token.get_secret_value()
'''

FLIP = '''
@runbook(risk=Risk.LOW, triggers=[alert("DiskFull")])
def free_disk(ctx: Context, marker: str = "marker", broken: bool = False) -> None:
    """Free disk space."""
    ctx.run("echo {{ 'no' if broken else 'freed' }} > {{ marker }}; echo '<b>done</b>'")

@free_disk.verify
def freed(ctx: Context, marker: str) -> bool:
    return ctx.run("grep -q '^freed$' {{ marker }}", readonly=True, check=False).ok

@free_disk.rollback
def undo(ctx: Context, marker: str) -> None:
    ctx.run("rm -f -- {{ marker }}")
'''

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
        "source", "track", "wbr"}


class PageChecker(HTMLParser):
    """Collects what makes a page invalid or not self-contained."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: set[str] = set()

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "srcset", "action", "data"):
                self.problems.append(f"<{tag} {name}={value!r}>: a resource reference")
            if value and re.search(r"url\(|https?:|//", value) and name != "viewbox":
                self.problems.append(f"<{tag} {name}={value!r}>: external reference")
        if tag in ("script", "link", "iframe", "object", "embed", "img"):
            self.problems.append(f"<{tag}> in a self-contained page")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def assert_valid_page(html: str) -> PageChecker:
    assert html.lstrip().startswith("<!DOCTYPE html>")
    checker = PageChecker()
    checker.feed(html)
    checker.close()
    assert checker.problems == []
    assert checker.stack == [], f"unclosed: {checker.stack}"
    assert {"html", "head", "body", "style", "title"} <= checker.tags
    assert not re.search(r"https?://|url\(|@import", html)
    return checker


def test_a_report_never_shows_a_secret_and_the_page_is_self_contained(team, tmp_path):
    team.write(DEPLOY)
    token = f"tok-{secrets.token_hex(12)}"
    out = tmp_path / "received"
    run = team.sd_json("run", "deploy", "-p", "version=1.2", "-p", f"token={token}",
                       "-p", f"out={out}", "--yes")
    assert run["run"]["status"] == "succeeded" and run["run"]["mode"] == "approval"
    run_id = run["run"]["id"]
    assert out.read_text() == token  # the command itself did get it

    markdown = team.sd_ok("report", run_id)
    team.sd_ok("report", run_id, "-o", "incident.html")
    html = (team.root / "incident.html").read_text()
    weekly_md = team.sd_ok("report", "--since", "7d")
    team.sd_ok("report", "--since", "7d", "--format", "html", "-o", "weekly.htm")
    weekly = (team.root / "weekly.htm").read_text()
    for text in (markdown, html, weekly_md, weekly):
        assert token not in text
        assert token[4:16] not in text  # not even a part of it

    assert f"- token = `{MASK}`" in markdown
    assert "- version = `1.2`" in markdown
    assert "- Approved by **alice** (os user" in markdown
    assert f"for plan {run['run']['plan_hash'][:12]}" in markdown
    assert "Mode **approval** (rule auto), because:" in markdown
    assert "Verified: every check passed." in markdown
    # Output holding ``` sits in a longer fence, so it cannot end the block early.
    assert "````\npulled 1.2 with ******\n``` fenced\n````" in markdown

    page = assert_valid_page(html)
    assert {"table", "code", "pre"} <= page.tags
    assert f"<code>{MASK}</code>" in html
    weekly_page = assert_valid_page(weekly)
    assert {"svg", "rect"} <= weekly_page.tags
    assert "deploy" in weekly


def test_report_of_a_rolled_back_alert_run_and_of_a_resolved_one(team):
    team.write(FLIP)
    broken = team.submit("free-disk", {"marker": str(team.root / "marker"), "broken": True},
                         alert="DiskFull")
    assert broken.run.status is RunState.ROLLED_BACK
    text = render_run_report(team.journal, broken.run.id, registry=team.registry())
    assert "Fired by alert **DiskFull** (one of its own triggers)." in text
    assert "Verification FAILED." in text
    assert "Cause: verification failed: freed: returned False" in text
    assert re.search(r"\| rollback \| `rm -f -- \S+marker` on local \| ok \| 0 \|", text)
    assert "**rolled_back** — verification failed" in text
    assert "None needed: it ran autonomously." in text
    # Raw HTML in output stays text: fenced in Markdown, escaped in HTML.
    assert "```\n<b>done</b>\n```" in text
    html = render_run_report(team.journal, broken.run.id, fmt="html")
    assert "&lt;b&gt;done&lt;/b&gt;" in html and "<b>done</b>" not in html
    assert_valid_page(html)

    fired = team.sd_json("trigger", "DiskFull", "-l", "host=web1")
    (run,) = fired["runs"]
    assert run["run"]["status"] == "succeeded"
    resolved = team.sd_ok("report", run["run"]["id"])
    assert re.search(r"- Alert #\d+ DiskFull \(firing\) from cli, received ", resolved)
    assert "  - labels: host=web1" in resolved
    assert re.search(r"Time to resolve \(alert received → verified success\): \*\*\d", resolved)


def test_summary_chart_bars_and_usage_errors(team):
    assert text_bars([]) == []
    bars = text_bars([{"label": "2026-11-24", "succeeded": 8, "failed": 1, "not_run": 0},
                      {"label": "2026-11-25", "succeeded": 2, "failed": 0, "not_run": 2}],
                     width=10)
    assert bars[0].startswith("2026-11-24  " + "█" * 9 + "▒ ")
    assert bars[0].endswith("9 (8 ok, 1 failed, 0 not run)")
    assert bars[1].startswith("2026-11-25  ██··")

    team.write(FLIP)
    empty = team.sd_ok("report", "--since", "7d")
    assert "No run in this window." in empty
    for args in (("report",), ("report", "20261125-000000-abcdef", "--since", "7d")):
        proc = team.sd(*args)
        assert proc.returncode == 2
        assert "give a RUN_ID for an incident report, or --since 7d" in proc.stderr
    unknown = team.sd("report", "no-such-run")
    assert unknown.returncode == 2 and "no run 'no-such-run'" in unknown.stderr
    assert not Path(team.root / "nothing.html").exists()
