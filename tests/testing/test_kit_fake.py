"""FakeContext: how scripts match and answer, and that nothing goes unanswered silently."""

from __future__ import annotations

import re

import pytest

from selfdrive import Context, Risk, SecretStr, runbook
from selfdrive.executor.plan import Plan
from selfdrive.sdk.errors import CommandFailedError, ReadOnlyViolationError, UsageError
from selfdrive.sdk.vocabulary import Mode
from selfdrive.testing import FakeContext, UnscriptedCommand, plan_of, simulate


@runbook(risk=Risk.LOW)
def disk(ctx: Context, path: str = "/var") -> None:
    """Report and clean."""
    df = ctx.run("df -P -k {{ path }}", readonly=True, check=True)
    ctx.note("df", df.stdout.splitlines()[-1].split()[4])
    ctx.log("checked")
    found = ctx.run("find {{ path }} -name '*.tmp'", readonly=True)
    for name in found.stdout.splitlines():
        ctx.run("rm -f -- {{ name }}", name=name)


@runbook(risk=Risk.LOW)
def fleet(ctx: Context, group: str = "web") -> None:
    """Fan out, then one host."""
    result = ctx.hosts(group).run("uptime", readonly=True, check=False)
    ctx.note("failed", list(result.failed))
    ctx.ssh("db1").run("systemctl restart postgresql")


@runbook(risk=Risk.MEDIUM)
def deploy(ctx: Context, version: str, token: SecretStr) -> None:
    """Ansible in check mode for the plan, for real in a run."""
    r = ctx.ansible("site.yml", hosts="web", extravars={"version": version, "token": token},
                    check=False)
    if not r.ok:
        raise RuntimeError(f"ansible failed on {sorted(r.failures)}")


DF = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 100 91 9 91% /\n"


def test_exact_and_pattern_scripts_answer_and_changes_are_planned() -> None:
    fake = FakeContext()
    fake.on("df -P -k /var", stdout=DF)
    fake.on(re.compile(r"^find /var "), stdout="/var/a.tmp\n/var/b.tmp\n")
    plan = plan_of(disk, fake)
    assert [c.command for c in plan.changes] == ["rm -f -- /var/a.tmp", "rm -f -- /var/b.tmp"]
    assert fake.commands() == ["df -P -k /var", "find /var -name '*.tmp'"]
    assert [c.phase for c in fake.calls] == ["body", "body"]
    assert all(c.readonly for c in fake.calls)


def test_an_unscripted_command_is_an_error_naming_it_and_how_to_script_it() -> None:
    fake = FakeContext().on("df -P -k /var", stdout=DF)
    with pytest.raises(UnscriptedCommand) as err:
        plan_of(disk, fake)
    text = str(err.value)
    assert "\"find /var -name '*.tmp'\"" in text and "'local'" in text
    assert "fake.on(" in text and "df -P -k /var" in text  # lists this target's scripts


def test_scripts_are_per_target_and_times_makes_sequences() -> None:
    fake = FakeContext(groups={"web": ["web1", "web2"]}, live=True)
    fake.on("uptime", target="web1", stdout="up")
    fake.on("uptime", target="web2", exit_code=1, times=1)
    fake.on("uptime", target="web2", stdout="up again")
    first = fake.hosts("web").run("uptime", readonly=True, check=False)
    second = fake.hosts("web").run("uptime", readonly=True)
    assert first.failed == ("web2",) and second.ok
    assert second["web2"].stdout == "up again"
    with pytest.raises(UnscriptedCommand, match="'uptime' on 'db1'"):
        fake.ssh("db1").run("uptime", readonly=True)
    fake.unscripted.clear()


def test_changes_need_scripts_in_a_live_run_unless_default_ok_is_explicit() -> None:
    strict = FakeContext(groups={"web": ["web1"]}).on("uptime", target="web1")
    with pytest.raises(UnscriptedCommand, match="systemctl restart postgresql"):
        simulate(fleet, strict)

    lenient = FakeContext(groups={"web": ["web1"]}, default_ok=True).on("uptime", target="web1")
    sim = simulate(fleet, lenient)
    assert sim.ok and sim.changes == ["systemctl restart postgresql"]
    assert [c.scripted for c in lenient.calls if c.target == "db1"] == [False]

    reads = FakeContext(default_ok=True)  # default_ok never answers a read
    with pytest.raises(UnscriptedCommand, match="default_ok answers changes only"):
        simulate(fleet, reads)


def test_the_direct_context_plans_or_runs_and_records_logs_and_notes() -> None:
    dry = FakeContext().on("df -P -k /srv", stdout=DF).on(re.compile("^find"), stdout="/srv/x\n")
    dry.call(disk, path="/srv")
    assert dry.mode is Mode.DRY_RUN
    assert dry.planned == [("local", "rm -f -- /srv/x")]
    assert dry.notes == {"df": "91%"} and dry.logs == ["checked"]

    live = FakeContext(live=True).on("df -P -k /srv", stdout=DF)
    live.on(re.compile("^find"), stdout="/srv/x\n").on("rm -f -- /srv/x")
    live.call(disk, path="/srv")
    assert live.planned == [] and live.commands()[-1] == "rm -f -- /srv/x"


def test_a_read_only_phase_refuses_changes_as_the_executor_does() -> None:
    fake = FakeContext(live=True)
    with pytest.raises(ReadOnlyViolationError, match="verify"):
        fake.phase("verify", readonly=True).run("rm -rf /tmp/x")
    assert fake.calls == []


def test_ansible_is_scripted_per_mode_and_host_and_secrets_stay_masked() -> None:
    fake = FakeContext(groups={"web": ["web1", "web2"]})
    fake.on_ansible("site.yml", check=True, changed=["install app"], diff="+1.2")
    fake.on_ansible("site.yml", check=False, changed=["install app"],
                    failed={"web2": "unreachable"})
    plan = plan_of(deploy, fake, version="1.2", token="t0ps3cret")
    assert [(c.target, c.command) for c in plan.changes] == [
        ("web1", "ansible site.yml: install app"), ("web2", "ansible site.yml: install app")]
    sim = simulate(deploy, fake, version="1.2", token="t0ps3cret")
    assert sim.status.value == "failed" and "['web2']" in sim.message
    assert [c.check for c in fake.ansible_calls] == [True, True, False]
    assert all(c.extravars["token"] == "******" for c in fake.ansible_calls)
    assert "t0ps3cret" not in repr(fake.ansible_calls)


def test_ansible_diffs_are_in_the_plan_and_its_hash_and_unpredictable_tasks_marked() -> None:
    def planned(diff: dict[str | tuple[str, str], str]) -> Plan:
        fake = FakeContext(groups={"web": ["web1", "web2"]})
        fake.on_ansible("site.yml", changed=["render", "migrate"], unpredictable=["migrate"],
                        diff=diff)
        return plan_of(deploy, fake, version="1.2", token="t0ps3cret")

    plan = planned({"render": "+version=t0ps3cret", ("migrate", "web2"): "shell: ./migrate"})
    assert [(c.target, c.command, c.text, c.unpredictable) for c in plan.changes] == [
        ("web1", "ansible site.yml: render", "+version=******", False),
        ("web2", "ansible site.yml: render", "+version=******", False),
        ("web1", "ansible site.yml: migrate (check mode cannot predict it)", "", True),
        ("web2", "ansible site.yml: migrate (check mode cannot predict it)",
         "shell: ./migrate", True)]
    assert plan.targets == ("web1", "web2") and len(plan.unpredictable) == 2
    # The hash covers what each change would write: another diff, another plan.
    same = planned({"render": "+version=t0ps3cret", ("migrate", "web2"): "shell: ./migrate"})
    other = planned({"render": "+version=1.3", ("migrate", "web2"): "shell: ./migrate"})
    assert plan.hash == same.hash != other.hash
    with pytest.raises(UsageError, match="'reboot' not among the changed tasks"):
        FakeContext().on_ansible(changed=["render"], unpredictable=["reboot"])


def test_unknown_hosts_and_bad_templates_fail_as_they_would_for_real() -> None:
    from selfdrive.config.model import TeamConfig

    strict = TeamConfig.model_validate({"team": "t", "inventory": {
        "hosts": {"web1": {"address": "10.0.0.1"}}, "groups": {"web": ["web1"]}}})
    fake = FakeContext(config=strict).on("uptime", target="web1")
    with pytest.raises(UsageError, match="db1"):
        plan_of(fleet, fake)
    with pytest.raises(UsageError, match="undefined"):
        FakeContext().run("echo {{ nope }}", readonly=True)


def test_check_scripted_catches_an_error_the_runbook_swallowed() -> None:
    fake = FakeContext()
    try:
        fake.run("uptime", readonly=True)
    except UnscriptedCommand:
        pass
    with pytest.raises(UnscriptedCommand, match="uptime"):
        fake.check_scripted()
    assert fake.unused() == []


def test_a_failed_answer_raises_by_default_as_the_executor_does() -> None:
    fake = FakeContext(live=True, groups={"web": ["web1", "web2"]})
    fake.on("false", exit_code=1, target=None)
    fake.on("ssh-only", error="not started: host key unknown", exit_code=None, target="web1")
    with pytest.raises(CommandFailedError, match=r"^false failed on local: exit code 1$"):
        fake.run("false", readonly=True)
    assert fake.run("false", readonly=True, check=False).exit_code == 1
    with pytest.raises(CommandFailedError,
                       match=r"^ssh-only failed on web1: not started: host key unknown$"):
        fake.ssh("web1").run("ssh-only", readonly=True)
    with pytest.raises(CommandFailedError,
                       match=r"^false failed on 2 of 2 host\(s\): web1 \(exit code 1\), web2 "):
        fake.hosts("web", max_errors=2).run("false", readonly=True)
    tolerated = fake.hosts("web", max_concurrency=1).run("false", readonly=True, check=False)
    assert tolerated.failed == ("web1",) and tolerated.skipped == ("web2",)
    fake.on_ansible("site.yml", failed={"web2": "unreachable"})
    with pytest.raises(CommandFailedError,
                       match=r"^ansible-playbook site.yml failed: web2: unreachable$"):
        fake.ansible("site.yml", hosts="web")
    assert not fake.ansible("site.yml", hosts="web", check=False).ok
