"""simulate() takes a read from its plan as a real run does, and fake.calls says so:
a read that was taken, not asked again, is not a second call."""

from __future__ import annotations

from selfdrive import Context, Risk, runbook
from selfdrive.config.model import TeamConfig
from selfdrive.testing import FakeContext, simulate


@runbook(risk=Risk.LOW)
def look_change_look(ctx: Context) -> None:
    """Read, change, read again; and a read on a host that did not change."""
    ctx.log("before " + ctx.run("cat /etc/app.conf", readonly=True).stdout)
    ctx.ssh("web1").run("uptime", readonly=True)
    ctx.run("cp /etc/app.conf.new /etc/app.conf")
    ctx.log("after " + ctx.run("cat /etc/app.conf", readonly=True).stdout)
    ctx.ssh("web1").run("uptime", readonly=True)


@runbook(risk=Risk.LOW)
def look_playbook_look(ctx: Context) -> None:
    """An Ansible change may touch anything: every read after it runs again."""
    ctx.ssh("web1").run("uptime", readonly=True)
    ctx.ansible("site.yml", hosts="web")
    ctx.ssh("web1").run("uptime", readonly=True)


def _fake(window: str = "30s") -> FakeContext:
    config = TeamConfig.model_validate({
        "team": "fake", "ssh": {"allow_raw_addresses": True},
        "inventory": {"hosts": {"web1": {"address": "127.0.0.1"}},
                      "groups": {"web": ["web1"]}},
        "executor": {"reuse_reads": window}})
    fake = FakeContext(default_ok=True, config=config)
    fake.on("cat /etc/app.conf", stdout="old", times=2)
    fake.on("cat /etc/app.conf", stdout="new")
    fake.on("uptime", target="web1", stdout="up")
    return fake


def test_simulate_takes_reads_from_its_plan_until_their_target_changes() -> None:
    fake = _fake()
    sim = simulate(look_change_look, fake)
    assert sim.ok, sim.message
    # Plan: both cats, both uptimes. Live: the first cat and both uptimes (web1 did not
    # change) are taken from the plan; the cat after the local change is asked again.
    assert fake.commands("local") == ["cat /etc/app.conf", "cat /etc/app.conf",
                                      "cp /etc/app.conf.new /etc/app.conf",
                                      "cat /etc/app.conf"]
    assert fake.commands("web1") == ["uptime", "uptime"]
    assert sim.logs == ["before old", "after new"]
    reads = [s for s in sim.steps if s.kind == "command" and s.readonly]
    assert [(s.target, isinstance(s.data, dict) and "reused" in s.data) for s in reads] == [
        ("local", True), ("web1", True), ("local", False), ("web1", True)]


def test_simulate_with_reuse_off_asks_every_read_again() -> None:
    fake = _fake("0s")
    sim = simulate(look_change_look, fake)
    assert sim.ok, sim.message
    assert fake.commands("local").count("cat /etc/app.conf") == 4
    assert fake.commands("web1") == ["uptime"] * 4
    # The plan used up the two "old" answers: the live run's first read is the third.
    assert sim.logs == ["before new", "after new"]
    assert sim.plan is not None and sim.plan.reusable == ()


def test_an_ansible_change_makes_every_later_read_run_again() -> None:
    fake = _fake()
    fake.on_ansible("site.yml")
    sim = simulate(look_playbook_look, fake)
    assert sim.ok, sim.message
    # Plan: two uptimes; live: the first taken, the one after the playbook asked again.
    assert fake.commands("web1") == ["uptime", "uptime", "uptime"]
    assert sim.plan is not None and len(sim.plan.reusable) == 1
