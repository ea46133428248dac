"""Ansible playbooks through ansible-runner, against hosts from the inventory.

Every run gets a fresh private data directory (mode 0700, see
:mod:`selfdrive.targets.private`) under a root the caller names (the team's journal
folder), deleted afterwards and swept by the next selfdrive process if this one dies:
ansible-runner keeps options, extra variables and event data (task results) there.
Extra variables go to a 0600 file in it, never onto the command line (where ``ps``
shows them), and that file is removed as soon as ansible-playbook has read them;
output is kept in memory only. Ansible's processes get the environment the caller
passes (the team's allow-list), never this process's own. Host keys are checked
strictly against the team's known_hosts, as for :class:`~selfdrive.targets.ssh.SshTarget`.

Dry-run is Ansible's check mode (``--check --diff``): the result's ``changes`` are then
Ansible's own predictions, with diffs (a real run passes ``--diff`` too, so its changes
carry diffs). Check mode cannot predict every task: ``command``, ``shell``, ``raw``,
``script`` and modules without check-mode support are *skipped*; each becomes a change
marked ``unpredictable`` on its host (what it would run, in place of a diff), so a plan
never reads "no change" for a task that will change things.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfdrive.sdk.command import MASK
from selfdrive.sdk.vocabulary import Outcome
from selfdrive.targets.inventory import HostSpec
from selfdrive.targets.private import MARK_VARIABLE, kill_marked, private_dir

#: How often ansible-runner polls the cancel callback (its default, 5 s, delays a stop).
POLL = 0.25
#: Where the callback plugin that reports why tasks were skipped lives.
CALLBACKS = Path(__file__).resolve().parent / "ansible_callbacks"
SKIPS_VARIABLE = "SELFDRIVE_ANSIBLE_SKIPS"
#: Tasks check mode always skips (they run anything): a possible change wherever they run.
UNPREDICTABLE_ACTIONS = frozenset({"command", "shell", "raw", "script"})

TASK_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


@dataclass(frozen=True)
class AnsibleEvent:
    """One ansible-runner event, secrets masked. ``status`` is set for task results."""

    event: str
    host: str | None = None
    task: str | None = None
    status: str | None = None  # ok | changed | failed | ignored | skipped | unreachable
    message: str = ""
    diff: str = ""
    stdout: str = ""


@dataclass(frozen=True)
class TaskResult:
    """One task on one host."""

    host: str
    task: str
    status: str  # ok | changed | failed | ignored | skipped | unreachable
    message: str = ""
    diff: str = ""

    @property
    def changed(self) -> bool:
        return self.status == "changed"


@dataclass
class HostSummary:
    """Task counts for one host (as in Ansible's play recap)."""

    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    ignored: int = 0

    @property
    def succeeded(self) -> bool:
        return not self.failed and not self.unreachable


@dataclass(frozen=True)
class Change:
    """A change Ansible made, or in check mode predicts: where, which task, and the diff.

    ``unpredictable``: check mode skipped the task, so it may change the host in ways
    no diff shows; ``diff`` then says what the task would run.
    """

    host: str
    task: str
    diff: str
    unpredictable: bool = False


@dataclass(frozen=True)
class PlaybookResult:
    """What a playbook did (or, with ``check``, would do) on each host."""

    rc: int | None
    status: str  # successful | failed | timeout | canceled | error | skipped
    check: bool
    hosts: dict[str, HostSummary] = field(default_factory=dict)
    tasks: list[TaskResult] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    failures: dict[str, list[str]] = field(default_factory=dict)
    stdout: str = ""
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: Set by :func:`run_playbook`: ``not_started`` when ansible-playbook was never
    #: launched; one that ran to its end (an ``rc``, not timed out or canceled) finished;
    #: otherwise it may have run in part (unknown).
    outcome: Outcome = Outcome.UNKNOWN

    def __post_init__(self) -> None:
        if self.status in ("timeout", "canceled"):
            object.__setattr__(self, "outcome", Outcome.UNKNOWN)
        elif self.rc is not None:
            object.__setattr__(self, "outcome", Outcome.FINISHED)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.status in ("successful", "skipped") and not self.failures

    @property
    def timed_out(self) -> bool:
        return self.status == "timeout"


def ansible_playbook_path() -> str | None:
    """Where ``ansible-playbook`` is: beside this Python first (a venv), then on PATH."""
    here = Path(sys.executable).parent
    return shutil.which("ansible-playbook", path=os.pathsep.join(
        [str(here), os.environ.get("PATH", os.defpath)]))


def inventory_for(hosts: Sequence[HostSpec], *,
                  python_interpreter: str = "/usr/bin/python3") -> dict[str, Any]:
    """The YAML/JSON-style inventory ansible-runner gets: every host in group ``all``."""
    entries: dict[str, dict[str, Any]] = {}
    for h in hosts:
        entry: dict[str, Any] = {"ansible_host": h.address, "ansible_port": h.port,
                                 "ansible_user": h.login,
                                 "ansible_python_interpreter": python_interpreter}
        if h.key is not None:
            entry["ansible_ssh_private_key_file"] = str(h.key)
        entries[h.name] = entry
    return {"all": {"hosts": entries}}


def ssh_args(known_hosts: Path) -> str:
    """The OpenSSH options Ansible uses: strict host keys from the team's file, no mux."""
    return " ".join([
        "-o ControlMaster=no", "-o StrictHostKeyChecking=yes",
        f"-o UserKnownHostsFile={shlex.quote(str(known_hosts))}",
        "-o GlobalKnownHostsFile=/dev/null", "-o BatchMode=yes"])


def run_playbook(playbook: str | Path | list[dict[str, Any]], hosts: Sequence[HostSpec], *,
                 known_hosts: Path, private_root: Path,
                 environ: Mapping[str, str] | None = None,
                 extravars: Mapping[str, Any] | None = None,
                 check: bool = False, secrets: Sequence[str] = (), timeout: float = 600,
                 on_event: Callable[[AnsibleEvent], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, forks: int = 10,
                 pipelining: bool = False, diff: bool = True, connect_timeout: float = 10,
                 python_interpreter: str = "/usr/bin/python3") -> PlaybookResult:
    """Run ``playbook`` (a file, or plays as a list of dicts) on ``hosts``; never raises
    for the playbook's failure, a timeout or a cancel: see ``status`` and ``error``.

    ``secrets`` are masked in everything returned and passed to ``on_event``; if
    ``on_event`` raises, the run is stopped and the exception re-raised after clean-up.
    ``should_stop`` is polled every 0.25 s: true cancels the run (status ``canceled``);
    past ``timeout`` seconds the run stops with status ``timeout``. Either way every
    Ansible process of the run is killed (its workers too, which ansible-runner alone
    leaves running); the task in flight may have changed its host, and with
    ``pipelining`` its remote command is not killed (no pty). ``private_root`` is where
    the private data directory is made (see :mod:`selfdrive.targets.private`);
    ``environ`` is what Ansible's processes inherit (default: the default allow-list of
    this process's environment), plus Ansible's own settings. No hosts: nothing runs,
    status ``skipped``. Only exceptions from ``on_event`` propagate.
    """
    masker = _Masker(secrets)
    if not hosts:
        return PlaybookResult(rc=0, status="skipped", check=check,
                              warnings=["no hosts: the playbook did not run"])
    binary = ansible_playbook_path()
    if binary is None:
        return PlaybookResult(rc=None, status="error", check=check,
                              outcome=Outcome.NOT_STARTED,
                              error="ansible-playbook not found beside this Python or on PATH; "
                                    "install ansible-core")
    try:
        from ansible_runner.interface import init_runner  # type: ignore[import-untyped]
    except ImportError as exc:
        return PlaybookResult(rc=None, status="error", check=check,
                              outcome=Outcome.NOT_STARTED,
                              error=f"ansible-runner cannot be imported: {exc}")
    kwargs: dict[str, Any] = {}
    if isinstance(playbook, list):
        kwargs["playbook"] = playbook
    else:
        path = Path(playbook).resolve()
        if not path.is_file():
            return PlaybookResult(rc=None, status="error", check=check,
                                  outcome=Outcome.NOT_STARTED,
                                  error=f"playbook {path} is not a file")
        kwargs["playbook"] = path.name
        kwargs["project_dir"] = str(path.parent)
    if environ is None:
        from selfdrive.config.model import DEFAULT_ENV_ALLOW
        from selfdrive.targets.environ import child_environ

        environ = child_environ(DEFAULT_ENV_ALLOW)
    collector = _Collector(masker, on_event)
    try:
        with private_dir(private_root) as pdd:
            run_mark = pdd.name  # in every Ansible process's environment, to find them all
            env_dir = pdd / "env"
            env_dir.mkdir(mode=0o700)
            # Passed as a file: ansible-runner drops a ``settings=`` argument when this file
            # is missing. Output stays in memory (the events carry it), never in a file.
            (env_dir / "settings").write_text(json.dumps({"pexpect_timeout": POLL,
                                                          "suppress_output_file": True}))
            extravars_file = env_dir / "extravars"
            if extravars:
                fd = os.open(extravars_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(dict(extravars), fh)
            local_tmp = pdd / "tmp"
            local_tmp.mkdir(mode=0o700)
            skips_file = pdd / "skips.jsonl"
            path_var = os.pathsep.join([str(Path(binary).parent),
                                        environ.get("PATH", os.defpath)])
            envvars = {
                **environ,
                "PATH": path_var,
                MARK_VARIABLE: run_mark,
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "ANSIBLE_SSH_ARGS": ssh_args(known_hosts.resolve()),
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(local_tmp / "cp"),
                "ANSIBLE_LOCAL_TEMP": str(local_tmp),
                "ANSIBLE_PIPELINING": "True" if pipelining else "False",
                "ANSIBLE_TIMEOUT": str(max(1, round(connect_timeout))),
                "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_DEPRECATION_WARNINGS": "False",
                "ANSIBLE_SYSTEM_WARNINGS": "False",
                "ANSIBLE_PYTHON_INTERPRETER": python_interpreter,
                # A skipped task's event then says what it would have run (see _would_run).
                "ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "True",
                "ANSIBLE_CALLBACK_PLUGINS": os.pathsep.join(filter(None, [
                    str(CALLBACKS), environ.get("ANSIBLE_CALLBACK_PLUGINS")])),
                SKIPS_VARIABLE: str(skips_file),
            }
            cmdline = ["--check"] if check else []
            if diff or check:
                cmdline.append("--diff")

            def forget_extravars() -> None:
                # ansible-playbook reads them once, before the playbook starts: the secrets
                # among them need not stay on disk while it runs.
                with contextlib.suppress(OSError):
                    extravars_file.unlink()

            collector.on_start = forget_extravars
            deadline = time.monotonic() + timeout
            stop = {"why": ""}
            stopped_processes = 0

            def cancel() -> bool:
                # ansible-runner's own timeout kills only ansible-playbook's process group;
                # Ansible's workers (own sessions) and their ssh would go on, holding the pty
                # open, so the run would end ~5 s late and leave the tasks in flight running.
                nonlocal stopped_processes
                if not stop["why"]:
                    if collector.error is not None:
                        stop["why"] = "error"
                    elif time.monotonic() >= deadline:
                        stop["why"] = "timeout"
                    elif should_stop is not None and should_stop():
                        stop["why"] = "canceled"
                if stop["why"]:
                    stopped_processes += kill_marked(run_mark)
                    return True
                return False

            try:
                runner = init_runner(
                    private_data_dir=str(pdd), inventory=inventory_for(
                        hosts, python_interpreter=python_interpreter),
                    envvars=envvars, cmdline=" ".join(cmdline), forks=max(1, forks),
                    suppress_env_files=True, quiet=True, fact_cache_type="memory",
                    event_handler=collector.handle, cancel_callback=cancel, **kwargs)
                runner.config.env = _runner_environ(runner.config.env, envvars, os.environ)
                runner.run()
                rc: int | None = runner.rc
                status = str(runner.status)
                if stop["why"] == "timeout":
                    status = "timeout"
                error = None
            except Exception as exc:  # a runner set-up failure: report it as a value
                rc, status = None, "error"
                error = f"ansible-runner failed: {type(exc).__name__}: {masker(str(exc))}"
            finally:
                forget_extravars()
            leftovers = kill_marked(run_mark)
            warnings = []
            if stop["why"] in ("timeout", "canceled"):
                warnings.append(f"stopped the run ({stop['why']}) and killed {stopped_processes} "
                                f"ansible process(es); a task in flight may have changed its host "
                                f"(with pipelining on, its remote command may still be running)")
            if leftovers:
                warnings.append(f"killed {leftovers} ansible process(es) left running after the "
                                f"run ended ({status})")
            if collector.error is not None:
                raise collector.error
            if check:
                collector.add_unpredictable(_read_skips(skips_file))
            stdout = collector.stdout()
            if status == "timeout":
                error = f"the playbook timed out after {timeout:g}s"
            elif status == "canceled":
                error = "the playbook was canceled"
            elif status == "failed" and not collector.failures and rc not in (None, 0):
                error = f"ansible-playbook exited {rc}: {_last_line(stdout)}"
            return PlaybookResult(
                rc=rc, status=status, check=check, hosts=collector.hosts, tasks=collector.tasks,
                changes=collector.changes, failures=collector.failures, stdout=stdout,
                error=error, warnings=warnings)
    except OSError as exc:  # the private data directory could not be made or used
        if exc is collector.error:
            raise
        return PlaybookResult(rc=None, status="error", check=check,
                              error=f"cannot make or use Ansible's private data directory "
                                    f"under {private_root}: {exc}")


#: What ansible-runner always sets for its events, even to a value this process has.
_RUNNER_OWN = ("ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_CALLBACK_PLUGINS", "AWX_ISOLATED_DATA_DIR")


def _runner_environ(prepared: Mapping[str, str], ours: Mapping[str, str],
                    inherited: Mapping[str, str]) -> dict[str, str]:
    """The environment ansible-playbook gets: ours, plus what ansible-runner itself set
    (its event callback, where artifacts go), without the rest of this process's own,
    which ansible-runner copies in whole (a receiver's token, ``@env`` secrets …)."""
    env = dict(ours)
    for key, value in prepared.items():
        if key == "ORIGINAL_STDOUT_CALLBACK":  # only ever copied from the inherited one
            continue
        if key in _RUNNER_OWN or value != ours.get(key, inherited.get(key)):
            env[key] = value
    return env


def _read_skips(path: Path) -> list[dict[str, Any]]:
    """What the selfdrive_skips callback plugin wrote: one entry per skipped task and host."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                out.append(entry)
    return out


def unpredictable(action: str, *, conditional: bool, mentions_check_mode: bool) -> bool:
    """Whether a task skipped in check mode may change its host when it runs for real:
    not when its ``when`` was false; always for ``command``/``shell``/``raw``/``script``
    (check mode never runs them); for any other module that skipped for check mode."""
    if conditional:
        return False
    bare = action.removeprefix("ansible.builtin.").removeprefix("ansible.legacy.")
    return bare in UNPREDICTABLE_ACTIONS or mentions_check_mode


class _Masker:
    def __init__(self, secrets: Sequence[str]) -> None:
        # Longest first, so a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


class _Collector:
    """Turns runner events into task results, changes, failures and output."""

    def __init__(self, mask: _Masker, on_event: Callable[[AnsibleEvent], None] | None, *,
                 on_start: Callable[[], None] | None = None) -> None:
        self.mask = mask
        self.on_event = on_event
        self.on_start = on_start
        self.hosts: dict[str, HostSummary] = {}
        self.tasks: list[TaskResult] = []
        self.changes: list[Change] = []
        self.failures: dict[str, list[str]] = {}
        self.error: BaseException | None = None
        self._stdout: list[str] = []
        #: (host, task uuid) → (task name, what it would run) for tasks skipped.
        self._skipped: dict[tuple[str, str], tuple[str, str]] = {}

    def handle(self, raw: dict[str, Any]) -> bool:
        try:
            self._handle(raw)
        except BaseException as exc:  # surfaced after the run; the run is canceled
            if self.error is None:
                self.error = exc
        return False  # nothing more to keep on disk

    def stdout(self) -> str:
        """What ansible-playbook printed (masked), rebuilt from its events."""
        return "\n".join(self._stdout) + ("\n" if self._stdout else "")

    def add_unpredictable(self, skips: Sequence[Mapping[str, Any]]) -> None:
        """Each task check mode skipped that may change its host becomes a change."""
        for skip in skips:
            key = (str(skip.get("host")), str(skip.get("task_uuid")))
            action = str(skip.get("action", ""))
            if key not in self._skipped or not unpredictable(
                    action, conditional=bool(skip.get("conditional")),
                    mentions_check_mode=bool(skip.get("check_mode"))):
                continue
            task, would_run = self._skipped.pop(key)
            self.changes.append(Change(host=key[0], task=task, unpredictable=True,
                                       diff=f"{action}: {would_run}" if would_run else action))

    def _handle(self, raw: dict[str, Any]) -> None:
        name = str(raw.get("event", ""))
        if name == "playbook_on_start" and self.on_start is not None:
            self.on_start()
        data = raw.get("event_data") or {}
        host = data.get("host")
        task = data.get("task")
        res = data.get("res") or {}
        status: str | None = None
        message = ""
        diff_text = ""
        stdout = self.mask(str(raw.get("stdout") or ""))
        if stdout:
            self._stdout.append(stdout)
        if name in TASK_EVENTS and host is not None:
            status = TASK_EVENTS[name]
            if status == "ok" and res.get("changed"):
                status = "changed"
            if status == "failed" and data.get("ignore_errors"):
                status = "ignored"
            message = self.mask(_message(res))
            diff_text = self.mask(_diff_of(res))
            task_name = str(task or data.get("task_action") or "?")
            self._record(str(host), task_name, status, message, diff_text)
            if status == "skipped":
                self._skipped[(str(host), str(data.get("task_uuid")))] = (
                    task_name, self.mask(_would_run(str(data.get("task_args") or ""))))
        elif name == "runner_on_file_diff":
            diff_text = self.mask(_diff_text(data.get("diff")))
        if self.on_event is not None:
            self.on_event(AnsibleEvent(
                event=name, host=str(host) if host is not None else None,
                task=str(task) if task is not None else None, status=status,
                message=message, diff=diff_text, stdout=stdout))

    def _record(self, host: str, task: str, status: str, message: str, diff_text: str) -> None:
        summary = self.hosts.setdefault(host, HostSummary())
        setattr(summary, status, getattr(summary, status) + 1)
        if status == "changed":
            summary.ok += 1  # as in Ansible's recap: changed tasks count as ok too
            self.changes.append(Change(host=host, task=task, diff=diff_text))
        if status in ("failed", "unreachable"):
            self.failures.setdefault(host, []).append(
                f"{task}: {status}{': ' + message if message else ''}")
        self.tasks.append(TaskResult(host=host, task=task, status=status, message=message,
                                     diff=diff_text))


def _would_run(task_args: str) -> str:
    """A skipped task's arguments as its event shows them (``k=v, …``, templated), without
    the ``_ansible_*`` settings Ansible appends (a temp path, its version …), which
    change from run to run."""
    args = task_args.split(", _ansible_", 1)[0]
    if args.startswith("_ansible_"):
        return ""
    args = args.replace(", _uses_shell=True", "")
    return args.removeprefix("_raw_params=")


def _message(res: Mapping[str, Any]) -> str:
    for key in ("msg", "reason", "stderr", "module_stderr"):
        value = res.get(key)
        if value:
            return str(value).strip().splitlines()[0][:500] if str(value).strip() else ""
    return ""


def _diff_of(res: Mapping[str, Any]) -> str:
    parts = [_diff_text(res.get("diff"))]
    for item in res.get("results") or []:
        if isinstance(item, Mapping):
            parts.append(_diff_text(item.get("diff")))
    return "".join(p for p in parts if p)


#: A path into a folder Ansible made for one task (``…/ansible-tmp-1712.5-88-1234/`` on
#: the host, ``…/ansible-local-88ab/tmpx9/`` on the controller): random every run.
_TEMP_PATH = re.compile(r"[^\s'\"]*/ansible-(?:tmp|local)-[^/\s'\"]+/(?:tmp[^/\s'\"]*/)?")
_TEMP_NAME = "<ansible temp>/"


def _header(value: Any) -> str:
    """A diff header with Ansible's temporary folders named the same every run, so the
    same change gives the same diff (and plan hash) every time."""
    return _TEMP_PATH.sub(_TEMP_NAME, str(value or ""))


def _diff_text(diff: Any) -> str:
    """Ansible's diff structures as unified diff text (what ``--diff`` prints)."""
    if not diff:
        return ""
    if isinstance(diff, list):
        return "".join(_diff_text(d) for d in diff)
    if not isinstance(diff, Mapping):
        return str(diff)
    if diff.get("prepared"):
        return _TEMP_PATH.sub(_TEMP_NAME, str(diff["prepared"])).rstrip("\n") + "\n"
    if "before" not in diff and "after" not in diff:
        return ""
    before, after = diff.get("before", ""), diff.get("after", "")
    if not isinstance(before, str) or not isinstance(after, str):
        before = json.dumps(before, indent=2, sort_keys=True) + "\n"
        after = json.dumps(after, indent=2, sort_keys=True) + "\n"
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        fromfile=f"before: {_header(diff.get('before_header'))}".rstrip(": "),
        tofile=f"after: {_header(diff.get('after_header'))}".rstrip(": "))
    text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)
    return text


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
