"""`selfdrive show`: triggers read as alert selectors, and each parameter's constraints,
default and secrecy are shown as `run` would enforce them."""

from __future__ import annotations

import json

from cli_support import Project, explain

BOOK = r'''
"""A runbook with constrained parameters and two triggers."""
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr

from selfdrive import Context, Risk, alert, runbook


@runbook(risk=Risk.LOW, triggers=[
    alert("NginxDown", severity="critical", instance=re.compile("web-.*"),
          params={"host": "{{ labels.instance }}"}),
    alert("ManualPage"),
])
def restart_web(ctx: Context,
                host: Annotated[str, Field(pattern=r"^web-\d+$", min_length=5, max_length=64)],
                days: Annotated[int, Field(ge=1, le=30)] = 7,
                ratio: Annotated[float, Field(gt=0, lt=1)] = 0.5,
                mode: Literal["soft", "hard"] = "soft",
                token: SecretStr | None = None,
                keep: Annotated[int, Field(ge=0)] | None = None,
                where: Path = Path("/srv")) -> None:
    """Restart a web host."""
    ctx.run("true", check=True)
'''


def test_show_states_constraints_and_triggers(l4: Project) -> None:
    l4.runbook("book.py", BOOK)
    proc = l4.sd("show", "restart-web")
    assert proc.returncode == 0, explain(proc)
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert rows["PARAMETER"].split() == ["PARAMETER", "TYPE", "DEFAULT", "SECRET",
                                         "CONSTRAINTS"]
    expected = {
        "host": ["str", "(required)", "no", "length >= 5; length <= 64; matches /^web-\\d+$/"],
        "days": ["int", "7", "no", ">= 1; <= 30"],
        "ratio": ["float", "0.5", "no", "> 0; < 1"],
        "mode": ["Literal['soft', 'hard']", "'soft'", "no", "one of 'soft', 'hard'"],
        "token": ["SecretStr | None", "None", "yes", "-"],
        "keep": ["int | None", "None", "no", ">= 0"],
        "where": ["Path", "/srv", "no", "-"],
    }
    for name, cells in expected.items():
        line = rows[name]
        at = 0
        for cell in cells:
            found = line.find(cell, at)
            assert found >= 0, f"{cell!r} not in row {line!r}"
            at = found + len(cell)
    assert ('trigger:     alert NginxDown {severity="critical", instance=~"web-.*"} '
            '→ host={{ labels.instance }}') in proc.stdout
    assert "trigger:     alert ManualPage\n" in proc.stdout
    assert "{'alert'" not in proc.stdout and "FieldInfo" not in proc.stdout

    data = json.loads(l4.sd("show", "restart-web", "--json").stdout)
    params = {p["name"]: p for p in data["params"]}
    assert params["days"]["constraints"] == {"ge": 1, "le": 30}
    assert params["host"]["constraints"] == {"min_length": 5, "max_length": 64,
                                             "pattern": "^web-\\d+$"}
    assert params["mode"]["constraints"] == {"choices": ["soft", "hard"]}
    assert params["token"]["secret"] is True
    assert data["triggers"][0]["matchers"] == {
        "severity": {"op": "=", "value": "critical"},
        "instance": {"op": "=~", "value": "web-.*"}}

    # What show states is what run enforces.
    refused = l4.sd("plan", "restart-web", "-p", "host=web-1", "-p", "days=31")
    assert refused.returncode == 2 and "'days'" in refused.stderr, explain(refused)
