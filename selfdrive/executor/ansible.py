"""``ctx.ansible``: a playbook through ansible-runner, planned in check mode.

In dry-run the playbook runs with ``--check --diff``; each change Ansible predicts
becomes a planned change of the plan (host, task, and the diff, which the plan's hash
covers), so an approval covers exactly what Ansible said it would write. A task check
mode cannot predict (``shell``, ``command`` …) is a planned change on every host it
targets, marked as such. Live, each change it made is recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from selfdrive.executor.contexts import step_status
from selfdrive.executor.observe import StepEvent
from selfdrive.executor.redact import bound
from selfdrive.sdk.context import AnsibleChange, AnsibleResult
from selfdrive.sdk.errors import CommandFailedError, ReadOnlyViolationError, UsageError
from selfdrive.sdk.vocabulary import Mode

if TYPE_CHECKING:
    from selfdrive.executor.contexts import RunContext
    from selfdrive.targets.ansible import AnsibleEvent


def playbook_name(playbook: object) -> str:
    """How a playbook is named in plans and the journal; anything else is a usage error."""
    if isinstance(playbook, str):
        return playbook
    if isinstance(playbook, list):
        return "inline playbook"
    raise UsageError(f"ctx.ansible() takes a playbook path or a list of plays, not "
                     f"{type(playbook).__name__}")


def raise_if_failed(result: AnsibleResult, *, check: bool) -> AnsibleResult:
    """``result``, or with ``check`` a :class:`CommandFailedError` when the playbook failed
    (a host failed or was unreachable, ansible-runner erred, or the exit code was not 0).
    Its text is already redacted."""
    if not check or result.ok:
        return result
    why = (result.error or "; ".join(f"{host}: {message}" for host, message in
                                     result.failures.items())
           or f"exit code {result.rc}")
    mode = " in check mode" if result.check else ""
    raise CommandFailedError(f"ansible-playbook {result.playbook} failed{mode}: {why}")


def run_ansible(ctx: RunContext, playbook: str | list[dict[str, Any]], *,
                hosts: str | list[str], extravars: Mapping[str, Any], readonly: bool,
                timeout: float | None) -> AnsibleResult:
    from selfdrive.targets.ansible import run_playbook
    from selfdrive.targets.environ import child_environ
    from selfdrive.targets.private import private_root

    s = ctx._scope
    left = ctx._check_deadline()
    if not readonly and s.readonly:
        raise ReadOnlyViolationError(f"{s.phase} {s.hook or ''} tried to run a playbook that "
                                     f"changes things; pass readonly=True if it only reads")
    config = s.pool.config
    name = s.redact(playbook_name(playbook)) or ""
    source: Path | list[dict[str, Any]]
    if isinstance(playbook, str):
        source = (config.root / playbook).resolve()
        if not source.is_file():
            raise UsageError(f"ctx.ansible(): no playbook {source}")
    else:
        source = playbook
    specs = s.pool.hosts(hosts)
    check = s.mode is Mode.DRY_RUN and not readonly
    if not specs:
        ctx.log(f"warning: {hosts!r} matched no host; playbook {name} did not run")
        return AnsibleResult(playbook=name, rc=0, check=check)
    s.redact.learn(extravars.values())
    plain = {k: v.get_secret_value() if isinstance(v, SecretStr) else v
             for k, v in extravars.items()}
    names = [spec.name for spec in specs]
    label = f"ansible-playbook {name} on {', '.join(names)}" + (" --check --diff" if check else "")
    token = s.sink.begin(s.phase, "ansible", target=",".join(names), command=label,
                         readonly=readonly or check, planned=False)
    s.observer.step(StepEvent(s.phase, "ansible", "started", label))

    def on_event(event: AnsibleEvent) -> None:
        if event.status and event.task:
            s.observer.step(StepEvent(s.phase, "ansible", event.status,
                                      s.redact(event.task) or "", event.host,
                                      detail=s.redact(event.message) or None))

    result = run_playbook(source, specs, known_hosts=config.ssh.known_hosts_path(config.root),
                          private_root=private_root(config.state_dir),
                          environ=child_environ(config.executor.env_allow),
                          extravars=plain, check=check,
                          secrets=s.redact.secrets,
                          timeout=min(timeout or s.command_timeout, left), on_event=on_event,
                          connect_timeout=config.ssh.connect_timeout)
    stdout, truncated = bound(s.redact(result.stdout) or "", s.output_limit)
    status = step_status(result)
    failures = {host: "; ".join(s.redact(m) or "" for m in messages)
                for host, messages in result.failures.items()}
    s.sink.finish(token, status, exit_code=result.rc, stdout=stdout, truncated=truncated,
                  error=s.redact(result.error) if result.error else
                  ("; ".join(f"{h}: {m}" for h, m in failures.items()) or None),
                  data={"status": result.status, "check": check,
                        "hosts": {h: vars(summary) for h, summary in result.hosts.items()},
                        "changes": len(result.changes)})
    changes = []
    # Ansible reports a batch's hosts in whatever order they finish: order the changes by
    # task, then inventory, so that the same playbook gives the same plan (and hash).
    task_order = {t: i for i, t in reversed(list(enumerate(t.task for t in result.tasks)))}
    host_order = {name: i for i, name in enumerate(names)}
    ordered = sorted(result.changes, key=lambda c: (task_order.get(c.task, len(task_order)),
                                                    host_order.get(c.host, len(host_order))))
    for change in ordered:
        changes.append(record_change(ctx, name, AnsibleChange(
            host=change.host, task=s.redact(change.task) or "", diff=s.redact(change.diff) or "",
            unpredictable=change.unpredictable), check=check))
    return AnsibleResult(playbook=name, rc=result.rc, check=check, changes=tuple(changes),
                         failures=failures, error=s.redact(result.error))


UNPREDICTABLE = "check mode cannot predict it"


def record_change(ctx: RunContext, name: str, change: AnsibleChange, *,
                  check: bool) -> AnsibleChange:
    """Record one change of playbook ``name`` (planned in check mode, made otherwise).

    Its diff (masked) is the step's text, and its digest in the step's data is what a
    plan's hash covers: the whole diff, even where the stored text is cut.
    """
    s = ctx._scope
    command = f"ansible {name}: {change.task}"
    if change.unpredictable:
        command += f" ({UNPREDICTABLE})"
    data: dict[str, Any] = {"diff_sha256": hashlib.sha256(change.diff.encode()).hexdigest()}
    if change.unpredictable:
        data["unpredictable"] = True
    step = s.sink.begin(s.phase, "ansible-change", target=change.host, command=command,
                        readonly=False, planned=check, data=data,
                        stdout=bound(change.diff, s.output_limit)[0])
    s.sink.finish(step, "planned" if check else "changed")
    s.observer.step(StepEvent(s.phase, "ansible-change", "planned" if check else "ok",
                              change.task + (f" ({UNPREDICTABLE})" if change.unpredictable
                                             else ""), change.host))
    return change
