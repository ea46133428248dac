"""When one alert fires several runbooks, the better record for that alert runs first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

BIN = Path(sys.executable).parent / "selfdrive"

RUNBOOKS = '''
from selfdrive import Context, Risk, alert, runbook

@runbook(risk=Risk.LOW, triggers=[alert("Boom")])
def first_declared(ctx: Context) -> None:
    """Declared first; its verification always fails."""
    ctx.run("true")

@first_declared.verify
def never(ctx: Context) -> bool:
    return False

@runbook(risk=Risk.LOW, triggers=[alert("Boom")])
def second_declared(ctx: Context) -> None:
    """Declared second; always verifies."""
    ctx.run("true")

@second_declared.verify
def always(ctx: Context) -> bool:
    return True
'''


def _sd(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "SELFDRIVE_USER": "t"}, stdin=subprocess.DEVNULL,
                          timeout=60)


def test_declared_order_first_then_the_better_record(tmp_path: Path) -> None:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "two.py").write_text(textwrap.dedent(RUNBOOKS))
    (tmp_path / "selfdrive.toml").write_text('team = "t"\nlevel = "L4"\n')
    for n in (1, 2):  # distinct fingerprints: no dedup between the two alerts
        assert _sd(tmp_path, "trigger", "Boom", "-l", f"n={n}").returncode == 0
    runs = json.loads(_sd(tmp_path, "history", "--json").stdout)
    order = [r["runbook"] for r in sorted(runs, key=lambda r: (r["created_at"], r["id"]))]
    # No record yet: declared order. Then first-declared has a verification failure
    # against Boom and second-declared a verified success, so second goes first.
    assert order == ["first-declared", "second-declared", "second-declared", "first-declared"]
