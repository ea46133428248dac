"""docs/authoring.md, followed literally: its marked shell blocks run in order in a
scratch folder, its marked files are written where it says, and each marked output
block must appear (line by line, in order) in what the block before it printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "authoring.md"
BLOCK = re.compile(r"<!-- guide:(?P<kind>run|output|file (?P<path>\S+)) -->\n"
                   r"```[a-z]*\n(?P<body>.*?)\n```", re.S)


def _script(text: str) -> tuple[str, list[tuple[int, list[str]]]]:
    """One bash script for the whole guide, and the expected outputs per run block."""
    lines = ["set -euo pipefail", "exec 2>&1"]
    expected: list[tuple[int, list[str]]] = []
    run = -1
    for match in BLOCK.finditer(text):
        kind, body = match["kind"], match["body"]
        if kind == "run":
            run += 1
            lines += [f"echo '@@GUIDE {run}@@'", body]
        elif kind == "output":
            assert run >= 0, "an output block before any run block"
            expected.append((run, [ln.rstrip() for ln in body.splitlines() if ln.strip()]))
        else:
            assert "GUIDE_EOF" not in body
            lines += [f"mkdir -p \"$(dirname {match['path']})\"",
                      f"cat > {match['path']} <<'GUIDE_EOF'", body, "GUIDE_EOF"]
    return "\n".join(lines) + "\n", expected


def test_the_authoring_guide_works_as_written(tmp_path: Path) -> None:
    script, expected = _script(GUIDE.read_text(encoding="utf-8"))
    assert script.count("@@GUIDE") >= 6 and len(expected) >= 6
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SELFDRIVE_", "PYTEST_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"the guide failed:\n{proc.stdout}"
    outputs = re.split(r"^@@GUIDE \d+@@\n", proc.stdout, flags=re.M)[1:]
    for block, lines in expected:
        got = outputs[block].splitlines()
        at = 0
        for line in lines:
            found = next((i for i in range(at, len(got)) if line in got[i]), None)
            assert found is not None, (f"guide block {block}: {line!r} not printed (in this "
                                       f"order); it printed:\n{outputs[block]}")
            at = found + 1
