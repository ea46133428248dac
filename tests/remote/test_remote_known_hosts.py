"""known_hosts is parsed once per version of the file, and a new version is read again:
a host whose key changed in the file after a connect is refused on the next one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from remote_support import Sshd, cmd


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def test_a_replaced_known_hosts_is_read_again(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts.read_text())
    first = sshd.target(6, known_hosts=known)
    assert first.run(cmd("true"), timeout=10).ok
    first.close()
    # What `ssh-keygen -R` then a new key would leave: a new file in its place.
    other = keygen(tmp_path / "other_host")
    name = f"[{sshd.addresses[6]}]:{sshd.port}"
    fresh = tmp_path / "known_hosts.new"
    fresh.write_text(f"{name} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    os.replace(fresh, known)
    second = sshd.target(6, known_hosts=known)
    r = second.run(cmd("true"), timeout=10)
    second.close()
    assert r.error is not None and "has CHANGED" in r.error


def test_a_key_appended_to_known_hosts_is_trusted_next_time(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    refused = sshd.target(7, known_hosts=known)
    r = refused.run(cmd("true"), timeout=10)
    refused.close()
    assert r.error is not None and "is not in known_hosts" in r.error
    name = f"[{sshd.addresses[7]}]:{sshd.port}"
    line = next(ln for ln in sshd.known_hosts.read_text().splitlines() if ln.startswith(name))
    with known.open("a") as fh:
        fh.write(line + "\n")
    accepted = sshd.target(7, known_hosts=known)
    assert accepted.run(cmd("true"), timeout=10).ok
    accepted.close()
