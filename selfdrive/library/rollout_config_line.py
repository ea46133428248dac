"""Change one line of a config file across a host group with Ansible: canary first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from selfdrive import Context, Operand, Risk, runbook
from selfdrive.library._common import SCRIPT
from selfdrive.sdk import AnsibleResult

GroupName = Annotated[Operand, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
FilePath = Annotated[Operand, StringConstraints(pattern=r"^/[^\x00\n]*[^/\x00\n]$")]
Line = Annotated[str, StringConstraints(pattern=r"^[^\n\x00]*$")]
# The values arrive as extravars (data, never templated); only this play is a template.
PATH = "{{ sd_path | replace('{host}', inventory_hostname) }}"
BACKUP_TASK = "save the current file"
CHANGE_TASK = "set the line"


def _play(regexp: str | None) -> list[dict[str, Any]]:
    line: dict[str, Any] = {"path": PATH, "line": "{{ sd_line }}", "create": False}
    if regexp is not None:
        line["regexp"] = "{{ sd_regexp }}"
    return [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": BACKUP_TASK, "copy": {"src": PATH, "dest": PATH + ".selfdrive-prev",
                                       "remote_src": True, "mode": "preserve"}},
        {"name": CHANGE_TASK, "lineinfile": line},
    ]}]


def _file(path: str, host: str) -> str:
    return path.replace("{host}", host)


@runbook(risk=Risk.HIGH, domain="fleet", lock="rollout:{{ group }}:{{ path }}",
         timeout="30m", tags=["library", "ansible", "config", "fleet"])
def rollout_config_line(ctx: Context, group: GroupName, path: FilePath, line: Line,
                        regexp: str | None = None,
                        canary: Annotated[int, Field(ge=1)] = 1,
                        batch_size: Annotated[int, Field(ge=1)] = 5,
                        max_errors: Annotated[int, Field(ge=1)] = 1,
                        check_command: str | None = None) -> None:
    """Set one line in a config file on every host of a group: canary hosts first.

    Ansible's `lineinfile` puts `line` in the file at `path` (replacing the line that
    matches `regexp`, if given); the file must exist. The first `canary` hosts of the
    group go first; when Ansible succeeds there and `check_command` (shell code run
    on each canary host over SSH, `$1` being the file) passes, the rest follows in
    batches of `batch_size`. A failing canary stops the rollout: no other host is
    touched. After `max_errors` failed hosts no new batch starts; any failed host
    fails the run.

    In a plan, Ansible runs in check mode and the plan lists the changes it predicts
    on every host, with their diffs, which an approval covers (the canary check is
    skipped: nothing changed yet). `path` may hold `{host}`, replaced by each host's
    inventory name.

    Each host's file is saved to `PATH.selfdrive-prev` just before it changes (stale
    copies from earlier runs are removed first). Verification reads the line back on
    every host. Rollback copies the saved file back wherever this run saved one.
    """
    hosts = ctx.hosts(group).names
    canaries, rest = list(hosts[:canary]), list(hosts[canary:])
    for host in hosts:
        ctx.ssh(host).run("rm -f -- {{ saved }}", saved=_file(path, host) + ".selfdrive-prev",
                          check=True)
    extravars = {"sd_path": path, "sd_line": line, "sd_regexp": regexp or ""}
    play = _play(regexp)
    first = ctx.ansible(play, hosts=canaries, extravars=extravars, check=False)
    if not first.ok:
        raise RuntimeError(f"canary {', '.join(canaries)} failed: {_why(first, canaries)}; "
                           f"{len(rest)} other host(s) not touched")
    if check_command is not None and not ctx.dry_run:
        for host in canaries:
            ctx.ssh(host).run(SCRIPT, script=check_command, arg=_file(path, host),
                              readonly=True, check=True)
    failed: list[str] = []
    for start in range(0, len(rest), batch_size):
        batch = rest[start:start + batch_size]
        result = ctx.ansible(play, hosts=batch, extravars=extravars, check=False)
        failed += [h for h in batch if h in result.failures or result.error is not None]
        if len(failed) >= max_errors:
            left = rest[start + batch_size:]
            raise RuntimeError(f"{len(failed)} host(s) failed ({_why(result, failed)}); "
                               f"stopped, {len(left)} host(s) not started")
    if failed:
        raise RuntimeError(f"{len(failed)} host(s) failed: {', '.join(failed)}")


def _why(result: AnsibleResult, hosts: Sequence[str]) -> str:
    if result.error:
        return str(result.error)
    return "; ".join(f"{h}: {result.failures[h]}" for h in hosts if h in result.failures) \
        or f"ansible exit code {result.rc}"


@rollout_config_line.precondition
def the_group_has_hosts(ctx: Context, group: str) -> bool:
    """The group resolves to at least one host (an empty group would "succeed" vacuously)."""
    return bool(ctx.hosts(group).names)


@rollout_config_line.verify
def every_host_has_the_line(ctx: Context, group: str, path: str, line: str) -> bool:
    return all(ctx.ssh(host).run("grep -Fxq -- {{ line }} {{ file }}", file=_file(path, host),
                                 readonly=True, check=False).ok
               for host in ctx.hosts(group).names)


@rollout_config_line.rollback
def restore_saved_files(ctx: Context, group: str, path: str) -> None:
    """Where this run saved a file, put it back (and drop the copy)."""
    for host in ctx.hosts(group).names:
        saved = _file(path, host) + ".selfdrive-prev"
        ctx.ssh(host).run("if [ -f {{ saved }} ]; then cp -p -- {{ saved }} {{ file }} && "
                          "rm -f -- {{ saved }}; fi", saved=saved, file=_file(path, host),
                          check=True)
