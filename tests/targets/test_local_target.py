"""The local shell target: exit codes, captured output, big output, timeouts that kill."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from process_support import ProcSampler, gone_soon, pid_alive
from pydantic import SecretStr

from selfdrive.sdk.command import Command, render_command
from selfdrive.sdk.vocabulary import Outcome
from selfdrive.targets import LocalTarget, Target

MB = 1024 * 1024


def cmd(text: str) -> Command:
    return Command(masked=text, raw=text)


@pytest.fixture
def target() -> LocalTarget:
    return LocalTarget()


def test_is_a_target(target):
    as_target: Target = target  # the protocol, checked statically
    assert as_target.name == "local"
    assert callable(as_target.run)
    as_target.close()
    assert as_target.run(cmd("true"), timeout=5).ok, "closing releases nothing it needs"


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_codes_come_back(target, code):
    result = target.run(cmd(f"exit {code}"), timeout=10)
    assert result.exit_code == code
    assert result.ok is (code == 0)
    assert not result.timed_out and result.error is None
    assert result.target == "local"


def test_stdout_and_stderr_are_captured_separately(target):
    result = target.run(cmd("echo out; echo err >&2; printf 'no newline'"), timeout=10)
    assert result.stdout == "out\nno newline"
    assert result.stderr == "err\n"
    assert result.duration > 0


def test_killed_by_a_signal_is_a_negative_exit_code(target):
    result = target.run(cmd("kill -9 $$"), timeout=10)
    assert result.exit_code == -9
    assert not result.ok and not result.timed_out


def test_the_command_runs_the_raw_face(target, tmp_path):
    secret_file = tmp_path / "out"
    command = render_command("printf %s {{ s }} > {{ f }}",
                             {"s": SecretStr("hunter2"),
                              "f": str(secret_file)})
    assert "hunter2" not in str(command)
    assert target.run(command, timeout=10).ok
    assert secret_file.read_text() == "hunter2"
    result = target.run(cmd("echo hi"), timeout=10)
    assert result.command.masked == "echo hi"


def test_bash_features_are_available(target):
    result = target.run(cmd("set -o pipefail; false | true; echo $?; [[ a == a ]] && echo ok"),
                        timeout=10)
    assert result.stdout == "1\nok\n"


def test_stdin_is_closed_so_readers_do_not_hang(target):
    started = time.monotonic()
    result = target.run(cmd("cat; read line; echo rc=$?"), timeout=5)
    assert time.monotonic() - started < 3
    assert result.stdout == "rc=1\n"


def test_cwd_and_env_are_used(tmp_path):
    (tmp_path / "here.txt").write_text("")
    target = LocalTarget(cwd=str(tmp_path), env={"PATH": os.environ["PATH"], "WHO": "alice"})
    result = target.run(cmd("ls; echo $WHO; echo ${HOME:-unset}"), timeout=10)
    assert result.stdout == "here.txt\nalice\nunset\n"


def test_a_shell_that_cannot_start_is_an_error_not_an_exception(tmp_path):
    target = LocalTarget(cwd=str(tmp_path / "missing"))
    result = target.run(cmd("true"), timeout=10)
    assert result.exit_code is None
    assert not result.ok and not result.timed_out
    assert "cannot start" in (result.error or "")


def test_undecodable_output_is_replaced_not_fatal(target):
    result = target.run(cmd(r"printf 'a\377b'"), timeout=10)
    assert result.stdout == "a\ufffdb"


def test_five_mb_on_each_stream_at_once_does_not_deadlock(target):
    script = (f"head -c {5 * MB} /dev/zero | tr '\\0' o & "
              f"head -c {5 * MB} /dev/zero | tr '\\0' e >&2 & wait")
    started = time.monotonic()
    result = target.run(cmd(script), timeout=30)
    assert not result.timed_out
    assert result.exit_code == 0
    assert len(result.stdout) == 5 * MB and set(result.stdout) == {"o"}
    assert len(result.stderr) == 5 * MB and set(result.stderr) == {"e"}
    assert time.monotonic() - started < 20


def test_timeout_kills_the_whole_process_group(target, tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    result = target.run(cmd(f"echo started; sleep 30 & echo $! > {pidfile}; wait"),
                        timeout=0.5)
    elapsed = time.monotonic() - started

    assert result.timed_out
    assert result.exit_code is None
    assert not result.ok
    assert "timed out after 0.5s" in (result.error or "")
    assert result.stdout == "started\n", "output before the timeout is kept"
    assert 0.5 <= elapsed < 3
    assert gone_soon(int(pidfile.read_text())), "the background child was killed too"


def test_timeout_kills_a_group_that_ignores_sigterm(target, tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    result = target.run(cmd(f"trap '' TERM; sleep 30 & echo $! > {pidfile}; wait; wait"),
                        timeout=0.3)
    elapsed = time.monotonic() - started
    assert result.timed_out and result.exit_code is None
    assert elapsed < 6, "SIGKILL follows SIGTERM after a short grace"
    assert gone_soon(int(pidfile.read_text()))


def test_a_background_child_holding_the_pipes_does_not_hang_the_run(target, tmp_path):
    """The shell exits at once but leaves a child that keeps stdout open: the result
    comes back soon after the shell's exit, not when the child ends or the timeout hits."""
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    try:
        result = target.run(cmd(f"sleep 30 & echo $! > {pidfile}; echo parent done"),
                            timeout=10)
        assert time.monotonic() - started < 5
        assert not result.timed_out
        assert result.exit_code == 0
        assert result.stdout == "parent done\n"
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


# -- the command's text travels on stdin, and dies with its runner -----------------------


def test_the_command_text_never_shows_in_any_process_list(target, tmp_path):
    """``ps -ef`` shows argv: a secret rendered into the command must not be there."""
    canary = "canary-" + os.urandom(8).hex()
    command = render_command("sleep 0.4; printf %s {{ s }} > {{ f }}",
                             {"s": SecretStr(canary), "f": str(tmp_path / "out")})
    with ProcSampler([canary.encode()]) as sampler:
        result = target.run(command, timeout=10)
    assert result.ok, result
    assert (tmp_path / "out").read_text() == canary, "the command got the secret"
    assert sampler.rounds >= 10
    assert sampler.hits == []


@pytest.mark.parametrize("script", [
    "exit 3",
    "echo a\nexit 4\necho never",
    "cat <<EOF\nline $((1 + 1))\nEOF\nexit 5",
    "f() { return 6; }; f",
])
def test_exit_codes_and_heredocs_behave_as_under_bash_c(target, script):
    expected = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
    result = target.run(cmd(script), timeout=10)
    assert (result.exit_code, result.stdout, result.stderr) == (
        expected.returncode, expected.stdout, expected.stderr)


def test_a_bare_wait_waits_for_the_commands_own_children_only(target):
    started = time.monotonic()
    result = target.run(cmd("sleep 0.2 & wait; echo waited"), timeout=10)
    assert result.stdout == "waited\n" and result.ok
    assert time.monotonic() - started < 3


def test_a_nul_in_the_command_is_refused_and_nothing_runs(target, tmp_path):
    marker = tmp_path / "ran"
    result = target.run(Command(masked="touch …", raw=f"touch {marker}\0; rm -rf /x"),
                        timeout=10)
    assert result.exit_code is None and not result.ok
    assert result.outcome is Outcome.NOT_STARTED  # a value the target sets, not its text
    assert result.error is not None and result.error.startswith("not started: ")
    assert "NUL" in result.error
    assert not marker.exists()


def test_each_result_says_what_became_of_its_command(target):
    assert target.run(cmd("exit 3"), timeout=10).outcome is Outcome.FINISHED
    timed_out = target.run(cmd("sleep 5"), timeout=0.3)
    assert timed_out.timed_out and timed_out.outcome is Outcome.UNKNOWN


def test_the_default_environment_is_the_allow_list_not_the_runners(monkeypatch):
    monkeypatch.setenv("SELFDRIVE_RECEIVER_TOKEN", "receiver-secret")
    monkeypatch.setenv("LC_TIME", "C")
    result = LocalTarget().run(cmd("env"), timeout=10)
    assert "receiver-secret" not in result.stdout
    assert "LC_TIME=C\n" in result.stdout and "PATH=" in result.stdout


def test_variables_for_one_command_reach_it_but_not_its_shells_environ(tmp_path):
    target = LocalTarget(env={"PATH": os.environ["PATH"]})
    pid_file = tmp_path / "pid"
    command = Command(masked="…", raw=f'echo $$ > {pid_file}; sleep 0.3; echo "$K|$Q"',
                      env=(("K", "a b'c"), ("Q", "$HOME")), masked_env=(("K", "x"),))
    box: dict[str, object] = {}
    runner = threading.Thread(target=lambda: box.update(r=target.run(command, timeout=10)))
    runner.start()
    deadline = time.monotonic() + 5
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    environ = Path(f"/proc/{pid_file.read_text().strip()}/environ").read_bytes()
    runner.join(10)
    assert box["r"].stdout == "a b'c|$HOME\n"  # type: ignore[attr-defined]
    assert b"K=" not in environ, "exported in the script, never in the shell's own environ"


def test_the_intent_comes_first_with_the_process_group(target, tmp_path):
    marker = tmp_path / "ran"
    seen: list[tuple[int | None, bool, int]] = []

    def intent(pgid: int | None) -> None:
        assert pgid is not None
        seen.append((pgid, marker.exists(), os.getpgid(pgid)))

    result = target.run(cmd(f"touch {marker}; echo $$"), timeout=10, intent=intent)
    assert result.ok and marker.exists()
    [(pgid, ran_before, group)] = seen
    assert not ran_before, "the intent is recorded before anything of the command happens"
    assert group == pgid and result.stdout == f"{pgid}\n"


def test_an_intent_that_fails_runs_nothing_and_leaves_no_process(target, tmp_path):
    marker = tmp_path / "ran"
    pids: list[int] = []

    def intent(pgid: int | None) -> None:
        assert pgid is not None
        pids.append(pgid)
        raise RuntimeError("the journal refused the intent")

    with pytest.raises(RuntimeError, match="refused"):
        target.run(cmd(f"touch {marker}"), timeout=10, intent=intent)
    assert not marker.exists()
    assert gone_soon(pids[0])


RUNNER = """
import sys
from selfdrive.sdk.command import Command
from selfdrive.targets import LocalTarget
LocalTarget().run(Command(masked="x", raw=sys.argv[1]), timeout=60)
"""


@pytest.mark.parametrize("ignore_term", [False, True])
def test_a_command_dies_with_its_runner(tmp_path, ignore_term):
    """kill -9 of the process that runs a command: the command's whole process group
    goes too (TERM, then KILL two seconds later), not just its shell."""
    pids = tmp_path / "pids"
    trap = "trap '' TERM; " if ignore_term else ""
    script = f"{trap}echo $$ > {pids}; sleep 30 & echo $! >> {pids}; wait"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, script])
    try:
        deadline = time.monotonic() + 10
        while len(pids.read_text().split() if pids.exists() else []) < 2:
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.01)
        shell, sleeper = map(int, pids.read_text().split())
        runner.kill()
        runner.wait(5)
        assert gone_soon(sleeper, 5) and gone_soon(shell, 5), "the command outlived its runner"
    finally:
        for pid in map(int, pids.read_text().split() if pids.exists() else []):
            if pid_alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def test_a_killed_guard_is_replaced_at_the_next_command(target, tmp_path):
    assert target.run(cmd("true"), timeout=10).ok
    guard = target._guard._proc
    assert guard is not None and guard.poll() is None
    os.killpg(guard.pid, signal.SIGKILL)
    guard.wait(5)
    assert target.run(cmd("echo still"), timeout=10).stdout == "still\n"
    assert target._guard._proc is not None and target._guard._proc.pid != guard.pid
    target.close()
    assert target._guard._proc is None
