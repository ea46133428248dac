"""One approval is enough: a run renders the same commands at request and at resume.

The journal keeps a run's parameters as JSON and ``resume`` validates that JSON again;
a value that comes back different (an int default of a float parameter, a dict whose
keys the journal sorts, an enum, a set in another process's hash order) made the plan
"change" and asked for a second approval. Each case goes through the real CLI: alice
requests a HIGH-risk run, bob approves it, carol resumes it (in a process with another
hash seed), and it runs.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from approvals_support import Team, clean_env, explain

RUNBOOK = '''
"""A HIGH-risk change whose command shows one parameter."""
import enum
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from selfdrive import Context, Risk, runbook


class Tier(enum.Enum):
    GOLD = "gold"
    SILVER = "silver"


class Action(str, enum.Enum):
    RELOAD = "reload"


@runbook(risk=Risk.HIGH)
def show_value(ctx: Context, marker: str, {signature}) -> None:
    """Write the value to the marker file."""
    ctx.run("echo {template} >> {{{{ marker }}}}", check=True)
'''

CASES = {
    # name: (signature, template, -p values, the command's argument as rendered)
    "float-with-int-default": ("pause: float = 0", "{{ pause }}", (), "0.0"),
    "bool-with-int-default": ("flag: bool = 0", "{{ flag }}", (), "false"),
    "dict-in-declared-order": ('opts: dict[str, int] = {"b": 2, "a": 1}',
                               "{% for k, v in opts.items() %}{{ k }}={{ v }},{% endfor %}",
                               (), "a=1,b=2,"),
    "enum-by-value": ("tier: Tier = Tier.GOLD", "{{ tier }}", ("tier=silver",), "silver"),
    "str-enum-by-value": ("action: Action", "{{ action }}", ("action=reload",), "reload"),
    "set-in-sorted-order": ('names: frozenset[str] = frozenset({"alpha", "beta", "gamma", '
                            '"delta"})', "{{ names }}", (), "alpha beta delta gamma"),
    "tuple": ("ports: tuple[int, ...] = (443, 80)", "{{ ports }}", (), "443 80"),
    "datetime": ("when: datetime", "{{ when }}", ("when=2026-01-02T03:04:05Z",),
                 "'2026-01-02 03:04:05+00:00'"),
    "decimal-with-float-default": ("amount: Decimal = 1.5", "{{ amount }}", (), "1.5"),
    "path": ('where: Path = "/srv/app"', "{{ where }}", (), "/srv/app"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_approved_plan_is_the_plan_that_runs(team: Team, tmp_path: Path,
                                                case: str) -> None:
    signature, template, params, rendered = CASES[case]
    team.config("L4")
    team.runbook("show.py", RUNBOOK.format(signature=signature, template=template))
    marker = tmp_path / "marker"
    flags = [f for p in (f"marker={marker}", *params) for f in ("-p", p)]

    requested = team.sd_json("run", "show-value", *flags, who="alice", code=3,
                             env=clean_env(PYTHONHASHSEED="0"))
    run_id, plan_hash = requested["run"]["id"], requested["run"]["plan_hash"]
    [change] = requested["plan"]["changes"]
    assert change["command"] == f"echo {rendered} >> {marker}"

    approved = team.sd("approve", run_id, who="bob", env=clean_env(PYTHONHASHSEED="1"))
    assert approved.returncode == 0, explain(approved)

    resumed = team.sd("resume", run_id, who="carol", env=clean_env(PYTHONHASHSEED="2"))
    assert resumed.returncode == 0, explain(resumed)
    assert team.status(run_id) == "succeeded"
    assert marker.read_text() == " ".join(shlex.split(rendered)) + "\n"
    [event] = team.events("run.resumed", run_id)
    assert event["data"]["plan_hash"] == plan_hash
