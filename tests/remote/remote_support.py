"""Helpers for the remote-target tests: the loopback sshd and polling."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from selfdrive.sdk.command import Command
from selfdrive.targets.inventory import HostSpec
from selfdrive.targets.ssh import SshTarget

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "loopback-sshd.sh"
HOSTS = 12


def cmd(text: str) -> Command:
    return Command(masked=text, raw=text)


@dataclass(frozen=True)
class Sshd:
    """What the tests need to reach the loopback sshd."""

    dir: Path
    port: int
    user: str
    known_hosts: Path
    client_key: Path
    addresses: tuple[str, ...]

    def host(self, index: int = 0, *, name: str | None = None, key: Path | None = None,
             user: str | None = None, port: int | None = None) -> HostSpec:
        """Host number ``index`` (0 → 127.0.0.2), named ``h<index+1>`` by default."""
        return HostSpec(name=name or f"h{index + 1}", address=self.addresses[index],
                        port=port or self.port, user=user or self.user,
                        key=key or self.client_key)

    def target(self, index: int = 0, *, known_hosts: Path | None = None,
               **kwargs: object) -> SshTarget:
        host_kw = {k: kwargs.pop(k) for k in ("name", "key", "user", "port") if k in kwargs}
        return SshTarget(self.host(index, **host_kw),  # type: ignore[arg-type]
                         known_hosts=known_hosts or self.known_hosts,
                         **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("sshd-*.log")))

    def accepted_logins(self) -> int:
        return len(re.findall(r"Accepted publickey for ", self.log()))

    def host_key_line(self) -> str:
        return (self.dir / "host_ed25519.pub").read_text().split()[1]


def _port_free(port: int, addresses: list[str]) -> bool:
    for addr in addresses:
        with socket.socket() as s:
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return True


def free_port(addresses: list[str]) -> int:
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(50):
        port = 2200 + rng.randrange(0, 7000)
        if _port_free(port, addresses):
            return port
    raise RuntimeError("no free port found for the loopback sshd")


def start_sshd(directory: Path, hosts: int, *, port: int | None = None) -> tuple[Sshd, str]:
    """Start the script's sshd; fail the test (with the log) if it does not come up."""
    addresses = [f"127.0.0.{k}" for k in range(2, hosts + 2)]
    port = port or free_port(addresses)
    env = {**os.environ, "SSHD_DIR": str(directory), "SSHD_PORT": str(port),
           "SSHD_HOSTS": str(hosts), "SSHD_USER": os.environ.get("SSHD_USER", "sdtest")}
    proc = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"the loopback sshd did not start (exit {proc.returncode}):\n"
                    f"{proc.stdout}\n{proc.stderr}", pytrace=False)
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    sshd = Sshd(dir=Path(values["SSHD_DIR"]), port=int(values["SSHD_PORT"]),
                user=values["SSHD_USER"], known_hosts=Path(values["SSHD_KNOWN_HOSTS"]),
                client_key=Path(values["SSHD_CLIENT_KEY"]),
                addresses=tuple(values["SSHD_ADDRESSES"].split()))
    return sshd, str(directory)


def stop_sshd(directory: str) -> None:
    subprocess.run(["bash", str(SCRIPT), "stop"], env={**os.environ, "SSHD_DIR": directory},
                   capture_output=True, timeout=60)


def remote_processes(user: str, pattern: str) -> list[str]:
    """Live (not zombie) processes of ``user`` whose command line contains ``pattern``."""
    out = subprocess.run(["ps", "-u", user, "-o", "pid=,stat=,args="], capture_output=True,
                         text=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and not parts[1].startswith("Z") and pattern in parts[2]:
            rows.append(line.strip())
    return rows


def wait_until(predicate: object, timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` passes (tests wait by polling)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
