"""SshTarget against a real loopback sshd: output, reuse, host keys, auth, timeouts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from process_support import ProcSampler
from remote_support import Sshd, cmd, remote_processes, wait_until

from selfdrive.sdk.command import Command, render_command
from selfdrive.sdk.vocabulary import Outcome
from selfdrive.targets.inventory import HostSpec
from selfdrive.targets.ssh import (
    NOT_STARTED,
    OUTCOME_UNKNOWN,
    SshTarget,
    never_started,
    outcome_unknown,
)

MB = 1_000_000


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def host_fingerprint(sshd: Sshd) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(sshd.dir / "host_ed25519.pub")],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]  # SHA256:...


def test_runs_a_command_with_exit_code_stdout_and_stderr(sshd: Sshd,
                                                         targets: list[SshTarget]) -> None:
    t = sshd.target(0)
    targets.append(t)
    r = t.run(cmd("echo out; echo err >&2; printf 'no newline'; exit 3"), timeout=10)
    assert (r.exit_code, r.stdout, r.stderr, r.error) == (3, "out\nno newline", "err\n", None)
    assert r.target == "h1" and not r.ok and not r.timed_out
    ok = t.run(cmd("whoami; hostname -I >/dev/null 2>&1; echo \"$0\""), timeout=10)
    assert ok.ok and ok.stdout.splitlines()[0] == sshd.user
    assert ok.stdout.splitlines()[1] == "bash"


def test_quoting_reaches_the_remote_shell_intact(sshd: Sshd, targets: list[SshTarget]) -> None:
    t = sshd.target(1)
    targets.append(t)
    r = t.run(cmd("""printf '%s|' 'a b' "it's" '$HOME' "\\$x" ';' && echo"""), timeout=10)
    assert r.stdout == "a b|it's|$HOME|$x|;|\n"
    # stdin is closed: a command reading it gets EOF instead of hanging.
    assert t.run(cmd("cat; echo done"), timeout=5).stdout == "done\n"


def test_connection_is_made_lazily_and_reused(sshd: Sshd, targets: list[SshTarget]) -> None:
    t = sshd.target(2)
    targets.append(t)
    before = sshd.accepted_logins()
    assert t.connects == 0 and not t.connected
    assert t.run(cmd("true"), timeout=10).ok
    assert t.run(cmd("echo again"), timeout=10).stdout == "again\n"
    assert t.connects == 1
    assert wait_until(lambda: sshd.accepted_logins() - before == 1)
    time.sleep(0.2)
    assert sshd.accepted_logins() - before == 1
    t.close()
    assert t.run(cmd("true"), timeout=10).ok  # a closed target connects again
    assert t.connects == 2


def test_unknown_host_key_is_refused_with_fingerprint_and_keyscan_hint(
        sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    t = sshd.target(3, known_hosts=known)
    r = t.run(cmd("touch /tmp/should-not-exist"), timeout=10)
    assert r.exit_code is None and not r.ok and never_started(r) and not outcome_unknown(r)
    assert r.error is not None and r.error.startswith(NOT_STARTED)
    assert "\n" not in r.error
    addr = sshd.addresses[3]
    assert f"host key of h4 ({addr}:{sshd.port}) is not in known_hosts {known}" in r.error
    assert f"the server offered ssh-ed25519 {host_fingerprint(sshd)}" in r.error
    assert r.error.endswith(f"ssh-keyscan -p {sshd.port} {addr} >> {known}")
    assert known.read_text() == ""  # nothing trusted
    # The hint works as written: after it, the same target connects.
    subprocess.run(r.error.split("trust it with: ")[1], shell=True, check=True,
                   capture_output=True)
    assert t.run(cmd("true"), timeout=10).ok
    t.close()


def test_missing_known_hosts_file_is_strict_too(sshd: Sshd, tmp_path: Path) -> None:
    t = sshd.target(3, known_hosts=tmp_path / "nope" / "known_hosts")
    r = t.run(cmd("true"), timeout=10)
    assert r.error is not None and "is not in known_hosts" in r.error
    assert not (tmp_path / "nope").exists()


def test_changed_host_key_is_refused_even_with_trust_on_first_use(
        sshd: Sshd, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host")
    known = tmp_path / "known_hosts"
    name = f"[{sshd.addresses[4]}]:{sshd.port}"
    known.write_text(f"{name} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    before = known.read_text()
    for tofu in (False, True):
        t = sshd.target(4, known_hosts=known, trust_on_first_use=tofu)
        r = t.run(cmd("true"), timeout=10)
        assert r.exit_code is None and never_started(r)
        assert r.error is not None
        assert f"host key of h5 ({sshd.addresses[4]}:{sshd.port}) has CHANGED" in r.error
        assert f"the server offered ssh-ed25519 {host_fingerprint(sshd)}" in r.error
        assert "refusing to connect" in r.error
        assert f"ssh-keygen -R '{name}' -f {known}" in r.error
        assert known.read_text() == before
        t.close()


def test_trust_on_first_use_appends_the_unknown_key(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "tofu" / "known_hosts"
    t = sshd.target(5, known_hosts=known, trust_on_first_use=True)
    assert t.run(cmd("true"), timeout=10).ok
    t.close()
    line = known.read_text().strip()
    assert line == f"[{sshd.addresses[5]}]:{sshd.port} ssh-ed25519 {sshd.host_key_line()}"
    strict = sshd.target(5, known_hosts=known)  # now known: strict mode accepts it
    assert strict.run(cmd("true"), timeout=10).ok
    strict.close()
    # OpenSSH reads the line paramiko wrote.
    ssh = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                          "-o", f"UserKnownHostsFile={known}", "-i", str(sshd.client_key),
                          "-p", str(sshd.port), f"{sshd.user}@{sshd.addresses[5]}", "true"],
                         capture_output=True, text=True, timeout=20)
    assert ssh.returncode == 0, ssh.stderr


def test_wrong_key_is_an_authentication_failure(sshd: Sshd, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    t = sshd.target(0, key=stranger)
    r = t.run(cmd("true"), timeout=10)
    assert never_started(r)
    assert r.error == (f"{NOT_STARTED}authentication failed for {sshd.user}@h1 "
                       f"({sshd.addresses[0]}:{sshd.port}) with key {stranger}")
    missing = sshd.target(0, key=tmp_path / "no-such-key")
    r = missing.run(cmd("true"), timeout=10)
    assert r.error == f"{NOT_STARTED}cannot read the key {tmp_path / 'no-such-key'} for h1: " \
                      f"No such file or directory"


def test_no_key_anywhere_is_an_authentication_failure(
        sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* keys
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no agent
    t = SshTarget(HostSpec("h1", sshd.addresses[0], sshd.port, sshd.user),
                  known_hosts=sshd.known_hosts)
    r = t.run(cmd("true"), timeout=10)
    assert never_started(r)
    assert r.error == (f"{NOT_STARTED}authentication failed for {sshd.user}@h1 "
                       f"({sshd.addresses[0]}:{sshd.port}): no key in the inventory, no SSH "
                       f"agent and no default key")


def test_closed_port_is_refused(sshd: Sshd) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = SshTarget(HostSpec("gone", "127.0.0.1", port, "nobody"), known_hosts=sshd.known_hosts)
    started = time.monotonic()
    r = t.run(cmd("true"), timeout=10)
    assert time.monotonic() - started < 2
    assert never_started(r) and r.exit_code is None and not r.timed_out
    assert r.error == (f"{NOT_STARTED}connection refused by gone (127.0.0.1:{port}): "
                       f"is sshd running there, on that port?")


def test_unresolvable_name_is_reported(sshd: Sshd) -> None:
    t = SshTarget(HostSpec("ghost", "no-such-host.invalid", 22), known_hosts=sshd.known_hosts)
    r = t.run(cmd("true"), timeout=10)
    assert never_started(r)
    assert r.error is not None
    assert r.error.startswith(f"{NOT_STARTED}cannot resolve 'no-such-host.invalid' for ghost")


DROPPER = """
import socket, sys, threading
from pathlib import Path
from selfdrive.sdk.command import Command
from selfdrive.targets.inventory import HostSpec
from selfdrive.targets.ssh import SshTarget

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(8)
accepted = []

def drop():
    while True:
        conn, _ = server.accept()
        accepted.append(1)
        conn.close()

threading.Thread(target=drop, daemon=True).start()
t = SshTarget(HostSpec("flaky", "127.0.0.1", server.getsockname()[1], "x"),
              known_hosts=Path(sys.argv[1]), connect_retries=3, connect_timeout=3)
r = t.run(Command("true", "true"), 10)
print(len(accepted))
print(r.error)
"""


def test_a_server_that_drops_the_handshake_is_retried_quietly(sshd: Sshd) -> None:
    """sshd's MaxStartups drops connections before the banner: they are retried, and
    paramiko's transport thread prints no traceback (run in a plain interpreter, where
    an unconfigured logger would print one)."""
    proc = subprocess.run([sys.executable, "-c", DROPPER, str(sshd.known_hosts)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    count, error = proc.stdout.splitlines()
    assert count == "3"
    assert error.startswith(f"{NOT_STARTED}flaky (127.0.0.1:")
    assert "dropped the connection during the handshake 3 times" in error
    assert proc.stderr == ""


def test_hung_command_times_out_and_the_remote_process_group_is_killed(
        sshd: Sshd, targets: list[SshTarget]) -> None:
    t = sshd.target(6)
    targets.append(t)
    started = time.monotonic()
    r = t.run(cmd("echo begun; sleep 61 & sleep 62; echo never"), timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 3, elapsed
    assert r.timed_out and r.exit_code is None and outcome_unknown(r) and not never_started(r)
    assert r.stdout == "begun\n"
    assert r.error is not None and r.error.startswith(f"{OUTCOME_UNKNOWN}timed out after 1s")
    assert "process group" in r.error and "was killed" in r.error
    assert wait_until(lambda: not remote_processes(sshd.user, "sleep 6"), timeout=3), \
        remote_processes(sshd.user, "sleep 6")
    # The connection is still good for the next command.
    assert t.run(cmd("echo next"), timeout=5).stdout == "next\n"
    assert t.connects == 1


def test_big_interleaved_output_is_captured_whole(sshd: Sshd,
                                                  targets: list[SshTarget]) -> None:
    t = sshd.target(7)
    targets.append(t)
    # 5 MB of stderr first: a reader that drained stdout first would deadlock here.
    started = time.monotonic()
    r = t.run(cmd("head -c 5000000 /dev/zero | tr '\\0' e >&2; "
                  "head -c 20000000 /dev/zero | tr '\\0' o"), timeout=60)
    assert r.ok, r.error
    assert len(r.stdout) == 20 * MB and len(r.stderr) == 5 * MB
    assert set(r.stdout) == {"o"} and set(r.stderr) == {"e"}
    # Interleaved in 100 kB / 25 kB slices.
    r = t.run(cmd("for i in $(seq 200); do head -c 100000 /dev/zero | tr '\\0' o; "
                  "head -c 25000 /dev/zero | tr '\\0' e >&2; done"), timeout=60)
    assert r.ok, r.error
    assert len(r.stdout) == 20 * MB and len(r.stderr) == 5 * MB
    assert set(r.stdout) == {"o"} and set(r.stderr) == {"e"}
    assert time.monotonic() - started < 30


def _sshd_session_of(pid: int) -> int | None:
    """The sshd process serving the session that ``pid`` runs in."""
    for _ in range(10):
        stat = Path(f"/proc/{pid}/stat").read_text()
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if comm == "sshd":
            return pid
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    return None


def test_connection_dropped_mid_command_is_outcome_unknown(
        sshd: Sshd, targets: list[SshTarget]) -> None:
    t = sshd.target(8)
    targets.append(t)
    box: dict[str, object] = {}
    runner = threading.Thread(target=lambda: box.update(r=t.run(cmd("sleep 37.5"), timeout=20)))
    runner.start()
    assert wait_until(lambda: remote_processes(sshd.user, "sleep 37.5"), timeout=5)
    pid = int(remote_processes(sshd.user, "sleep 37.5")[0].split()[0])
    session = _sshd_session_of(pid)
    assert session is not None
    os.kill(session, signal.SIGKILL)
    runner.join(10)
    r = box["r"]
    assert r.exit_code is None and not r.timed_out and outcome_unknown(r)  # type: ignore[attr-defined]
    assert r.error == f"{OUTCOME_UNKNOWN}the connection dropped while the command ran on h9"  # type: ignore[attr-defined]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    assert t.run(cmd("echo back"), timeout=10).stdout == "back\n"  # reconnects
    assert t.connects == 2


def test_outcome_rules_for_any_result() -> None:
    from selfdrive.sdk.context import CommandResult

    c = cmd("x")
    assert not outcome_unknown(CommandResult(command=c, target="t", exit_code=0))
    assert not outcome_unknown(CommandResult(command=c, target="t", exit_code=None, planned=True))
    assert outcome_unknown(CommandResult(command=c, target="t", exit_code=None, timed_out=True))
    assert outcome_unknown(CommandResult(command=c, target="t", exit_code=None, error="boom"))
    # The target says a command never started; its error text decides nothing.
    assert outcome_unknown(CommandResult(command=c, target="t", exit_code=None,
                                         error=NOT_STARTED + "refused"))
    refused = CommandResult(command=c, target="t", exit_code=None, error="refused",
                            outcome=Outcome.NOT_STARTED)
    assert never_started(refused) and not outcome_unknown(refused)
    with pytest.raises(ValueError, match="a finished command has an exit code"):
        CommandResult(command=c, target="t", exit_code=None, outcome=Outcome.FINISHED)


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize("leader", [True, False])
def test_the_wrapper_leads_its_own_process_group(shell: str, leader: bool) -> None:
    """Whatever the login shell and whether sshd made it a session leader, the wrapper
    reports the process group the command runs in, and keeps the exit status."""
    from selfdrive.targets.ssh import PGID_MARKER, wrap_command

    raw = "set -- $(cat /proc/$$/stat); echo \"$5\"; echo err >&2; exit 7"
    proc = subprocess.Popen([shell, "-c", wrap_command()], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=leader)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(raw.encode() + b"\0")
    proc.stdin.flush()
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    code = proc.wait(timeout=10)
    proc.stdin.close()  # after the exit, as sshd closes it: the watcher leaves quietly
    marker, pgid = out.splitlines()
    assert marker == f"{PGID_MARKER.decode()}{pgid}"
    assert (code, err) == (7, "err\n")
    if not leader:
        assert int(pgid) != os.getpgid(0)  # a new group, not the test's own


def test_the_command_text_never_shows_in_a_process_list_on_the_host(
        sshd: Sshd, targets: list[SshTarget]) -> None:
    """sshd runs the login shell with the command string in its argv: that string is a
    fixed wrapper now, and the command (with its secret) follows on stdin."""
    from pydantic import SecretStr

    t = sshd.target(9)
    targets.append(t)
    canary = "canary-" + os.urandom(8).hex()
    command = render_command('sleep 0.5; test {{ s }} = "$(printf %s {{ s }})" && echo same',
                             {"s": SecretStr(canary)})
    with ProcSampler([canary.encode()]) as sampler:
        r = t.run(command, timeout=20)
    assert r.ok and r.stdout == "same\n", r
    assert sampler.rounds >= 10
    assert sampler.hits == []


def test_variables_for_one_command_are_exported_on_the_host(
        sshd: Sshd, targets: list[SshTarget]) -> None:
    t = sshd.target(10)
    targets.append(t)
    command = Command(masked="…", raw='printf "%s|%s|" "$K" "$Q"; env | grep -c "^K="',
                      env=(("K", "a b'c\nd"), ("Q", "$(id)")))
    r = t.run(command, timeout=10)
    assert (r.exit_code, r.stdout) == (0, "a b'c\nd|$(id)|1\n")


RUNNER = """
import sys
from pathlib import Path
from selfdrive.sdk.command import Command
from selfdrive.targets.inventory import HostSpec
from selfdrive.targets.ssh import SshTarget
address, port, user, key, known = sys.argv[1:6]
t = SshTarget(HostSpec(name="h", address=address, port=int(port), user=user, key=Path(key)),
              known_hosts=Path(known))
t.run(Command(masked="x", raw=sys.argv[6]), timeout=60)
"""


def test_a_remote_command_dies_with_its_runners_connection(sshd: Sshd) -> None:
    """kill -9 of the runner mid-command: sshd sees the connection close, the command's
    stdin ends while its shell still runs, and its whole process group is killed."""
    mark = f"{37 + int.from_bytes(os.urandom(2), 'big') / 100000:.5f}"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, sshd.addresses[11],
                               str(sshd.port), sshd.user, str(sshd.client_key),
                               str(sshd.known_hosts), f"sleep {mark} & sleep {mark}; wait"])

    def sleeps() -> list[str]:
        return [r for r in remote_processes(sshd.user, f"sleep {mark}")
                if r.split(None, 2)[2] == f"sleep {mark}"]

    try:
        assert wait_until(lambda: len(sleeps()) == 2, timeout=15), "it never started"
        runner.kill()
        runner.wait(5)
        assert wait_until(lambda: not sleeps(), timeout=6), sleeps()
    finally:
        subprocess.run(["pkill", "-KILL", "-u", sshd.user, "-f", f"sleep {mark}"],
                       check=False)
