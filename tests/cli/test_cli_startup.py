"""`selfdrive --help` stays light: no heavy or optional dependency is imported for it."""

from __future__ import annotations

import json
import subprocess
import sys

from cli_support import SELFDRIVE, clean_env

HEAVY = ("paramiko", "ansible_runner", "jinja2", "pydantic", "sqlite_utils")

SNIPPET = """
import json, sys
from selfdrive.cli.main import main
try:
    code = main(["--help"])
except SystemExit as exc:
    code = exc.code
print("\\n@@MODULES@@" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_help_imports_nothing_heavy() -> None:
    proc = subprocess.run([sys.executable, "-c", SNIPPET], env=clean_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    help_text, _, tail = proc.stdout.partition("\n@@MODULES@@")
    result = json.loads(tail)
    assert result["code"] in (0, None)
    assert "Exit codes:" in help_text and "Commands:" in help_text
    loaded = set(result["modules"])
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"--help imported {heavy}"
    # Nor any layer of the library below the CLI (config, registry, journal, executor …).
    below = sorted(m for m in loaded if m.startswith("selfdrive.")
                   and not m.startswith("selfdrive.cli"))
    assert not below, f"--help imported {below}"


def test_help_of_the_real_executable() -> None:
    proc = subprocess.run([SELFDRIVE, "--help"], env=clean_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    for command in ("init", "list", "show", "lint", "plan", "run", "explain", "history",
                    "logs", "halt", "unhalt"):
        assert f"\n  {command} " in proc.stdout, command
    assert proc.stderr == ""
