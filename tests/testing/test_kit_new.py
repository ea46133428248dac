"""`selfdrive new`: a scaffolded runbook and its test pass pytest out of the box, and lint
once the placeholder docstring is replaced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kit_support import SELFDRIVE


def sd(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SELFDRIVE, *args], cwd=root, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL,
                          env={**os.environ, "SELFDRIVE_USER": "alice"})


def test_new_scaffolds_runbooks_whose_tests_and_lint_pass(tmp_path: Path) -> None:
    assert sd(tmp_path, "init").returncode == 0
    for args in (["restart-web", "--risk", "LOW"], ["peek", "--risk", "read_only", "--ssh"],
                 ["fix-db", "--risk", "HIGH", "--ssh", "--domain", "db"]):
        made = sd(tmp_path, "new", *args)
        assert made.returncode == 0, made.stderr
    runbooks = tmp_path / "runbooks"
    assert {p.name for p in runbooks.glob("*.py")} == {
        "clean_old_files.py", "restart_web.py", "test_restart_web.py", "peek.py",
        "test_peek.py", "fix_db.py", "test_fix_db.py"}

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "runbooks"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120, env={k: v for k, v in os.environ.items()
                                             if not k.startswith("PYTEST_")})
    assert tests.returncode == 0 and "14 passed" in tests.stdout, tests.stdout + tests.stderr

    # lint holds each scaffold to its TODO docstring until a real one is written.
    lint = sd(tmp_path, "lint", "--json")
    findings = json.loads(lint.stdout)["findings"]
    assert lint.returncode == 1, lint
    assert sorted(f["what"].split(":")[0] for f in findings) == ["fix-db", "peek", "restart-web"]
    assert all("docstring is a placeholder" in f["what"] for f in findings), findings
    for name in ("restart_web", "peek", "fix_db"):
        path = runbooks / f"{name}.py"
        text = path.read_text()
        start = text.index('    """TODO: one line')
        end = text.index("\n", start)
        path.write_text(text[:start] + f'    """Look after {name}.' + text[end:])
    lint = sd(tmp_path, "lint")
    assert lint.returncode == 0 and "4 runbook(s) checked, 0 finding(s)" in lint.stdout, lint
    listed = json.loads(sd(tmp_path, "list", "--json").stdout)
    by_name = {r["name"]: r for r in listed["runbooks"]}
    assert (by_name["fix-db"]["risk"], by_name["fix-db"]["domain"]) == ("HIGH", "db")

    folder = tmp_path / "data"
    folder.mkdir()
    plan = sd(tmp_path, "plan", "restart-web", "-p", f"path={folder}", "--json")
    assert plan.returncode == 0, plan.stderr
    assert [c["command"] for c in json.loads(plan.stdout)["plan"]["changes"]] == [
        f"touch -- {folder}/.restart_web", f"rm -f -- {folder}/.restart_web"]


def test_new_refuses_to_overwrite_bad_names_and_a_missing_project(tmp_path: Path) -> None:
    lost = sd(tmp_path, "new", "x", "--risk", "LOW")
    assert lost.returncode == 2 and "selfdrive init" in lost.stderr
    assert sd(tmp_path, "init").returncode == 0
    assert sd(tmp_path, "new", "x", "--risk", "LOW").returncode == 0
    before = (tmp_path / "runbooks" / "x.py").read_text()
    again = sd(tmp_path, "new", "x", "--risk", "MEDIUM")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (tmp_path / "runbooks" / "x.py").read_text() == before
    for bad in ("Restart", "9lives", "class", "a b", "x--y"):
        proc = sd(tmp_path, "new", bad, "--risk", "LOW")
        assert proc.returncode == 2 and "runbook name" in proc.stderr, bad
    elsewhere = sd(tmp_path, "new", "y", "--risk", "LOW", "--dir", str(tmp_path / "other"))
    assert elsewhere.returncode == 0 and (tmp_path / "other" / "test_y.py").is_file()
