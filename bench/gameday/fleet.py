"""The game day fleet: loopback hosts with their own sshd, real services, PostgreSQL.

Everything the harness makes is recorded under one fixed folder,
``/tmp/selfdrive-gameday-<uid>/`` (``STATE_ROOT``): process groups in ``state.json``,
tmpfs mounts, the sshd folders. ``reap()`` undoes all of it, and runs at every start,
so a harness killed with ``kill -9`` is cleaned up by the next one. Only loopback
addresses (127.0.77.x) are ever used.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SSHD_SCRIPT = REPO / "scripts" / "loopback-sshd.sh"
STATE_ROOT = Path(f"/tmp/selfdrive-gameday-{os.getuid()}")
LOCK_FILE = Path(f"/tmp/selfdrive-gameday-{os.getuid()}.lock")
USER = "sdtest"
NET = "127.0.77"
SERVICE_PORT = 8080
EDGE_PORT = 8443
PG_PORT = 5432
PG_MAX_CONNECTIONS = 16  # small on purpose: exhausting it must be cheap
DISK_KIB = 4096

# host -> service it runs (one service per host keeps "the wrong host" unambiguous)
ROLES: dict[str, str] = {
    **{f"front{i}": "front" for i in range(1, 5)},
    **{f"api{i}": "api" for i in range(1, 4)},
    "queue1": "queue", "cache1": "cache",
    "worker1": "worker", "worker2": "worker",
    "edge1": "edge", "db1": "postgres",
}
HOSTS = list(ROLES)
GROUPS = {role: [h for h, r in ROLES.items() if r == role] for role in sorted(set(ROLES.values()))}
ADDRESS = {host: f"{NET}.{i}" for i, host in enumerate(HOSTS, start=1)}
# upstreams first, so that what depends on them finds them answering
HTTP_SERVICES = sorted(((h, r) for h, r in ROLES.items() if r != "postgres"),
                       key=lambda hr: (hr[1] not in ("queue", "cache"), HOSTS.index(hr[0])))


class FleetError(Exception):
    """The fleet could not be built; the message says what failed."""


# ---------------------------------------------------------------- what was made, and reaping

class Ledger:
    """``state.json``: what this harness made, written before each thing is made."""

    def __init__(self) -> None:
        self.path = STATE_ROOT / "state.json"
        self.lock = threading.Lock()
        self.data: dict[str, list[object]] = {"pgids": [], "sshd_dirs": [], "pg_data": []}

    def add(self, key: str, value: object) -> None:
        with self.lock:
            self.data[key].append(value)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            tmp.replace(self.path)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def processes_under(root: Path) -> list[int]:
    """Live pids whose command line names a path under ``root`` (never this process)."""
    me, needle = os.getpid(), str(root)
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and needle in _cmdline(int(entry.name)):
            out.append(int(entry.name))
    return out


def mounts_under(root: Path) -> list[str]:
    points = []
    with open("/proc/mounts") as f:
        for line in f:
            point = line.split()[1].replace("\\040", " ")
            if point == str(root) or point.startswith(str(root) + "/"):
                points.append(point)
    return points


def reap(log: object = print) -> list[str]:
    """Undo everything a previous harness recorded (or left) under STATE_ROOT."""
    done: list[str] = []
    if not STATE_ROOT.exists():
        return done
    state: dict[str, list[object]] = {}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((STATE_ROOT / "state.json").read_text())
    for data in state.get("pg_data", []):
        ctl = _pg_bindir() / "pg_ctl" if _pg_bindir() else None
        if ctl and Path(str(data), "postmaster.pid").exists():
            subprocess.run(["runuser", "-u", "postgres", "--", str(ctl), "-D", str(data),
                            "-m", "immediate", "stop"], check=False, capture_output=True,
                           timeout=60)
            done.append(f"stopped PostgreSQL in {data}")
    for pgid in state.get("pgids", []):
        with contextlib.suppress(OSError):
            os.killpg(int(str(pgid)), signal.SIGKILL)
            done.append(f"killed process group {pgid}")
    for _ in range(3):
        pids = processes_under(STATE_ROOT)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                done.append(f"killed {pid}")
        if not pids:
            break
        time.sleep(0.2)
    for directory in state.get("sshd_dirs", []):
        subprocess.run(["bash", str(SSHD_SCRIPT), "stop"], check=False, capture_output=True,
                       timeout=60,
                       env={**os.environ, "SSHD_DIR": str(directory), "SSHD_USER": USER})
        done.append(f"stopped sshd of {directory}")
    for point in sorted(mounts_under(STATE_ROOT), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True, timeout=30)
        done.append(f"unmounted {point}")
    shutil.rmtree(STATE_ROOT, ignore_errors=True)
    if STATE_ROOT.exists():
        raise FleetError(f"could not remove {STATE_ROOT}")
    return done


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One game day at a time on this machine (the kernel drops the lock if we die)."""
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FleetError(f"another game day holds {LOCK_FILE}") from None
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the fleet

def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


@dataclass
class Fleet:
    """The running fleet. ``start()`` builds it; ``reap()`` (module level) removes it."""

    ledger: Ledger = field(default_factory=Ledger)
    ssh_port: int = 0
    known_hosts: Path = STATE_ROOT / "known_hosts"
    keys: dict[str, Path] = field(default_factory=dict)
    root: Path = STATE_ROOT / "fleet"
    pg_bindir: Path | None = None
    tmpfs: bool | None = None  # None: not tried yet
    uid: int = 0
    gid: int = 0

    # paths --------------------------------------------------------------------
    def hostdir(self, host: str) -> Path:
        return self.root / "hosts" / host

    @property
    def gd(self) -> Path:
        return self.root / "bin" / "gd"

    def url(self, host: str, role: str | None = None) -> str:
        role = role or ROLES[host]
        if role == "edge":
            return f"https://{ADDRESS[host]}:{EDGE_PORT}"
        return f"http://{ADDRESS[host]}:{SERVICE_PORT}"

    def disk(self, host: str) -> Path:
        return self.hostdir(host) / "disk"

    # building -----------------------------------------------------------------
    def start(self, log: object = print) -> None:
        if os.geteuid() != 0:
            raise FleetError("the game day needs root: sshd, tmpfs mounts, PostgreSQL")
        for tool in ("/usr/sbin/sshd", shutil.which("openssl"), shutil.which("curl")):
            if not tool or not Path(tool).exists():
                raise FleetError("missing tools: apt-get install -y openssh-server "
                                 "openssh-client postgresql openssl curl")
        self.pg_bindir = _pg_bindir()
        if self.pg_bindir is None:
            raise FleetError("PostgreSQL is not installed: apt-get install -y postgresql")
        STATE_ROOT.mkdir(mode=0o755)
        self.ledger = Ledger()
        self._ensure_user()
        busy = [f"{ADDRESS[h]}:{p}" for h, r in ROLES.items()
                for p in ([PG_PORT] if r == "postgres" else
                          [EDGE_PORT] if r == "edge" else [SERVICE_PORT])
                if not _port_free(ADDRESS[h], p)]
        if busy:
            raise FleetError(f"loopback ports already taken: {', '.join(busy)}")
        self.ssh_port = next((p for p in range(2290, 2390)
                              if all(_port_free(a, p) for a in ADDRESS.values())), 0)
        if not self.ssh_port:
            raise FleetError("no free port for the fleet's sshd on 127.0.77.x")
        self._lay_out()
        self._start_sshds()
        self._start_postgres()
        for host, role in HTTP_SERVICES:
            self.service("start", host, role)
        self.wait_healthy(30)

    def _ensure_user(self) -> None:
        try:
            entry = pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", USER], check=True)
            entry = pwd.getpwnam(USER)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def _lay_out(self) -> None:
        (self.root / "bin").mkdir(parents=True)
        shutil.copy(HERE / "service.py", self.root / "bin" / "service.py")
        self.gd.write_text((HERE / "gd.sh").read_text().replace("@FLEET@", str(self.root)))
        self.gd.chmod(0o755)
        (self.root / "hosts.map").write_text(
            "".join(f"{h} {a}\n" for h, a in ADDRESS.items()))
        urls = {h: self.url(h) for h, _ in HTTP_SERVICES}
        for host, role in ROLES.items():
            d = self.hostdir(host)
            for sub in ("etc", "run", "log", "data", "lib", "tls", "disk"):
                (d / sub).mkdir(parents=True)
            self._make_disk(host)
            (d / "disk" / "live.db").write_bytes(b"\0" * 64 * 1024)
            if role == "postgres":
                continue
            config: dict[str, object] = {"address": ADDRESS[host], "threads": 4,
                                         "port": EDGE_PORT if role == "edge" else SERVICE_PORT}
            if role == "front":
                config["upstreams"] = {"api": {"urls": [urls[h] for h in GROUPS["api"]],
                                               "host": "api"}}
            elif role == "api":
                config["upstreams"] = {"cache": {"url": urls["cache1"], "host": "cache1"},
                                       "queue": {"url": urls["queue1"], "host": "queue1"}}
            elif role == "worker":
                config["upstreams"] = {"queue": {"url": urls["queue1"], "host": "queue1"}}
            (d / "etc" / f"{role}.json").write_text(json.dumps(config, indent=1))
            (d / "etc" / f"{role}.url").write_text(self.url(host) + "\n")
            if role == "edge":
                self.new_cert(host, days=90)
        subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(self.root)], check=True)

    def _make_disk(self, host: str) -> None:
        """A small tmpfs; where mounting is not allowed (a container without
        CAP_SYS_ADMIN), a folder whose capacity ``etc/disk.cap`` states instead."""
        d = self.hostdir(host)
        if self.tmpfs is not False:
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_KIB}k,mode=0755",
                                      "gameday", str(d / "disk")], check=False,
                                     capture_output=True).returncode == 0
            self.tmpfs = mounted
        if not self.tmpfs:
            (d / "etc" / "disk.cap").write_text(f"{DISK_KIB}\n")

    def disk_used(self, host: str) -> float:
        """Percent used of ``host``'s disk, as ``gd disk-used`` (and the runbooks) see it."""
        disk = self.disk(host)
        if self.tmpfs:
            st = os.statvfs(disk)
            return 100.0 * (1 - st.f_bavail / st.f_blocks) if st.f_blocks else 0.0
        used = 0
        for entry in os.scandir(disk):
            with contextlib.suppress(OSError):
                used += entry.stat(follow_symlinks=False).st_blocks * 512
        return 100.0 * used / (DISK_KIB * 1024)

    def new_cert(self, host: str, days: int) -> None:
        tls = self.hostdir(host) / "tls"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={host}",
                        "-days", str(days), "-keyout", str(tls / "key.pem"),
                        "-out", str(tls / "cert.pem")], check=True, capture_output=True)
        for f in ("key.pem", "cert.pem"):
            os.chown(tls / f, self.uid, self.gid)

    def _start_sshds(self) -> None:
        errors: list[str] = []
        lines: dict[str, str] = {}

        def one(host: str) -> None:
            d = STATE_ROOT / "sshd" / host
            self.ledger.add("sshd_dirs", str(d))
            env = {**os.environ, "SSHD_DIR": str(d), "SSHD_PORT": str(self.ssh_port),
                   "SSHD_USER": USER, "SSHD_ADDRESSES": ADDRESS[host]}
            proc = subprocess.run(["bash", str(SSHD_SCRIPT), "start"], env=env, check=False,
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                errors.append(f"{host}: {proc.stderr.strip()[-400:]}")
                return
            lines[host] = (d / "known_hosts").read_text()
            self.keys[host] = d / "client_ed25519"

        threads = [threading.Thread(target=one, args=(h,)) for h in HOSTS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise FleetError("sshd did not start: " + "; ".join(errors))
        self.known_hosts.write_text("".join(lines[h] for h in HOSTS))

    def _start_postgres(self) -> None:
        assert self.pg_bindir is not None
        folder = STATE_ROOT / "pg"
        folder.mkdir()
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_pg = ["runuser", "-u", "postgres", "--"]
        data = folder / "data"
        self.ledger.add("pg_data", str(data))
        subprocess.run([*as_pg, str(self.pg_bindir / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "-E", "UTF8", "--no-sync"], check=True,
                       capture_output=True, timeout=120)
        options = (f"-p {PG_PORT} -k {folder} -c listen_addresses={ADDRESS['db1']} "
                   f"-c fsync=off -c full_page_writes=off "
                   f"-c max_connections={PG_MAX_CONNECTIONS} "
                   f"-c superuser_reserved_connections=3")
        started = subprocess.run([*as_pg, str(self.pg_bindir / "pg_ctl"), "-D", str(data),
                                  "-l", str(folder / "log"), "-o", options, "-w", "-t", "60",
                                  "start"], check=False, capture_output=True, text=True,
                                 timeout=120)
        if started.returncode != 0:
            raise FleetError(f"PostgreSQL did not start: {started.stderr.strip()}")
        self.psql("CREATE ROLE app LOGIN")

    def psql(self, sql: str, user: str = "postgres",
             timeout: float = 10) -> subprocess.CompletedProcess[str]:
        assert self.pg_bindir is not None
        return subprocess.run([str(self.pg_bindir / "psql"), "-X", "-A", "-t", "-q", "-h",
                               ADDRESS["db1"], "-p", str(PG_PORT), "-U", user, "-d",
                               "postgres", "-c", sql], check=False, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "PGCONNECT_TIMEOUT": "2"})

    # acting on hosts as the hosts' user (what a person or a runbook does) -----------
    def service(self, action: str, host: str, role: str | None = None) -> bool:
        """``gd ACTION ROLE`` on ``host`` as the fleet's user; True when it exited 0."""
        role = role or ROLES[host]
        proc = self.popen_as_user([str(self.gd), action, role], host)
        try:
            return proc.wait(timeout=30) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            return False

    def popen_as_user(self, argv: list[str], host: str) -> subprocess.Popen[bytes]:
        """A process of the fleet's user ``on`` host (its own session, recorded)."""
        proc = subprocess.Popen(argv, user=self.uid, group=self.gid, extra_groups=[],
                                env={"PATH": "/usr/bin:/bin", "GD_HOST": host,
                                     "HOME": "/tmp"},
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.ledger.add("pgids", proc.pid)
        return proc

    def healthy(self, host: str, role: str | None = None) -> bool:
        import ssl
        import urllib.request
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        try:
            with urllib.request.urlopen(self.url(host, role) + "/health", timeout=1,
                                        context=ctx) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            sick = [h for h, r in HTTP_SERVICES if not self.healthy(h, r)]
            db = self.psql("SELECT 1", user="app", timeout=5).returncode == 0
            if not sick and db:
                return
            if time.monotonic() > deadline:
                raise FleetError(f"the fleet is not healthy after {timeout:.0f}s: "
                                 f"{', '.join(sick) or ''}{'' if db else ' db1 (PostgreSQL)'}")
            time.sleep(0.3)
