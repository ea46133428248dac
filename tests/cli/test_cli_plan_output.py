"""`selfdrive plan NAME > file` keeps the plan: when stdout is not a terminal, the text a
terminal shows (the steps, every change, the plan's hash) goes to stdout."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from cli_support import SELFDRIVE, Project, clean_env

BOOK = '''
"""Deletes what it finds."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def clean_cache(ctx: Context, path: str) -> None:
    """Delete cache files."""
    found = ctx.run("find {{ path }} -type f -name '*.tmp'", readonly=True, check=True)
    for name in sorted(found.stdout.split()):
        ctx.run("rm -f -- {{ name }}", name=name, check=True)
'''


def _cache(tmp_path: Path) -> list[Path]:
    cache = tmp_path / "cache"
    cache.mkdir()
    files = [cache / "a.tmp", cache / "b.tmp"]
    for f in files:
        f.write_text("x")
    return files


def test_plan_redirected_to_a_file_holds_the_plan(l4: Project, tmp_path: Path) -> None:
    l4.runbook("book.py", BOOK)
    files = _cache(tmp_path)
    args = [SELFDRIVE, "plan", "clean-cache", "-p", f"path={files[0].parent}"]
    out = tmp_path / "plan.txt"
    with out.open("w") as sink:
        proc = subprocess.run(args, cwd=l4.root, env=clean_env(), stdin=subprocess.DEVNULL,
                              stdout=sink, stderr=subprocess.PIPE, text=True, timeout=60,
                              check=False)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    plan_hash = l4.sd_json("plan", "clean-cache", "-p", f"path={files[0].parent}")["plan"]["hash"]
    for expected in (f"[body] local: find {files[0].parent} -type f -name '*.tmp'",
                     f"Plan {plan_hash[:12]} — 2 change(s) on local:",
                     f"[body] local: rm -f -- {files[0]}", f"[body] local: rm -f -- {files[1]}",
                     ": planned"):
        assert expected in text, f"{expected!r} not in the file:\n{text}"
    assert "rm -f" not in proc.stderr, "the plan went to stderr as well"
    assert all(f.exists() for f in files)


def test_at_a_terminal_stdout_keeps_only_the_result(l4: Project, tmp_path: Path) -> None:
    l4.runbook("book.py", BOOK)
    files = _cache(tmp_path)
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run([SELFDRIVE, "plan", "clean-cache", "-p",
                               f"path={files[0].parent}"], cwd=l4.root, env=clean_env(),
                              stdin=subprocess.DEVNULL, stdout=secondary,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
    assert proc.returncode == 0, proc.stderr
    terminal = shown.decode()
    assert "planned; nothing was changed" in terminal and "rm -f" not in terminal, terminal
    assert f"rm -f -- {files[0]}" in proc.stderr and "Plan " in proc.stderr
