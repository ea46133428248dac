"""Helpers for the alert and schedule tests: tmp projects, a real `selfdrive serve`, HTTP.

Library tests build the real parts in-process (config parsed from TOML text, the
registry from runbook files, a SQLite journal, an Executor); end-to-end tests run the
installed ``selfdrive`` console script as subprocesses on 127.0.0.1, a free port
chosen by the server itself (``--port 0``) and read back from its log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from selfdrive.config import parse_config
from selfdrive.config.model import TeamConfig
from selfdrive.executor import Executor
from selfdrive.journal import SqliteJournal, open_journal
from selfdrive.registry import Registry, load_registry

SELFDRIVE = str(Path(sys.executable).parent / "selfdrive")
TIMEOUT = 30

PRELUDE = """\
from __future__ import annotations

import re

from selfdrive import Context, Risk, alert, runbook
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFDRIVE_")}
    env.update({"SELFDRIVE_USER": "alice", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra)
    return env


class Project:
    """A tmp team folder: selfdrive.toml, runbooks/, and the journal under .selfdrive/."""

    def __init__(self, root: Path, *, level: str = "L4", extra: str = "") -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (root / "runbooks").mkdir(exist_ok=True)
        self.set_config(level=level, extra=extra)
        self._journals: list[SqliteJournal] = []

    def set_config(self, *, level: str = "L4", extra: str = "") -> None:
        text = (f'team = "sense-tests"\nlevel = "{level}"\nentry_points = false\n'
                + textwrap.dedent(extra))
        (self.root / "selfdrive.toml").write_text(text, encoding="utf-8")

    def runbook(self, source: str, name: str = "book.py") -> Path:
        path = self.root / "runbooks" / name
        path.write_text(PRELUDE + "\n" + textwrap.dedent(source), encoding="utf-8")
        return path

    # -- in-process parts ----------------------------------------------------------

    def config(self) -> TeamConfig:
        path = self.root / "selfdrive.toml"
        return parse_config(tomllib.loads(path.read_text()), path)

    def registry(self) -> Registry:
        registry = load_registry([self.root / "runbooks"], entry_points=False)
        assert registry.problems == (), registry.problems
        return registry

    def journal(self, **kwargs: Any) -> SqliteJournal:
        journal = open_journal(self.journal_path, **kwargs)
        self._journals.append(journal)
        return journal

    def executor(self, journal: SqliteJournal | None = None, **kwargs: Any) -> Executor:
        return Executor(self.config(), self.registry(), journal or self.journal(), **kwargs)

    def close(self) -> None:
        for journal in self._journals:
            journal.close()

    # -- reading back --------------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        return self.root / ".selfdrive" / "journal.db"

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.journal_path, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()

    def refusals(self, since_id: int = 0) -> tuple[int, int]:
        """(journal rows, requests they stand for) of refused requests after ``since_id``."""
        columns = {c["name"] for c in self.rows("PRAGMA table_info(alerts)")}
        each = "COALESCE(requests, 1)" if "requests" in columns else "1"  # before sampling
        [row] = self.rows(f"SELECT COUNT(*) AS n, COALESCE(SUM({each}), 0) AS r "
                          f"FROM alerts WHERE status = 'refused' AND id > ?", (since_id,))
        return int(row["n"]), int(row["r"])

    def wait_refusals(self, requests: int, *, since_id: int = 0,
                      timeout: float = 10) -> tuple[int, int]:
        """Until the journal counts ``requests`` refusals after ``since_id`` (the receiver
        journals its counts about once a second); returns (rows, requests)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.refusals(since_id)
            if found[1] >= requests or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def last_alert_id(self) -> int:
        return int(self.rows("SELECT COALESCE(MAX(id), 0) AS n FROM alerts")[0]["n"])

    # -- the CLI -------------------------------------------------------------------

    def sd(self, *args: str, env: dict[str, str] | None = None,
           timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SELFDRIVE, *args], cwd=self.root, env=env or clean_env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return (f"\n$ {' '.join(map(str, proc.args))}\nexit {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")


class Server:
    """A real ``selfdrive serve`` subprocess on 127.0.0.1 and a free port."""

    def __init__(self, project: Project, *args: str, env: dict[str, str] | None = None) -> None:
        self.project = project
        self.log_path = project.root / f"serve-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen([SELFDRIVE, "serve", "--port", "0", *args],
                                     cwd=project.root, env=env or clean_env(),
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.port = self._wait_for_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            marker = "listening on http://127.0.0.1:"
            if marker in text:
                return int(text.split(marker, 1)[1].split()[0])
            if self.proc.poll() is not None:
                raise AssertionError(f"selfdrive serve exited {self.proc.returncode}:\n{text}")
            time.sleep(0.02)
        raise AssertionError(f"selfdrive serve did not start:\n{self.log_path.read_text()}")

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_idle(self, timeout: float = 20) -> None:
        """Until the receiver's queue is empty and no run is in flight."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = request(f"{self.base}/healthz", method="GET")
            if status == 200 and body["queued"] == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"the receiver did not become idle:\n{self.log}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def request(url: str, payload: Any = None, *, method: str = "POST", raw: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, Any]:
    """One HTTP request with urllib; returns (status, parsed JSON body or text)."""
    data = raw if raw is not None else (None if payload is None
                                        else json.dumps(payload).encode())
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def raw_http(base: str, data: bytes, *, shut_write: bool = False, timeout: float = 10,
             source: str | None = None) -> tuple[int, Any]:
    """Bytes straight onto a socket (what urllib will not send: lies, odd bytes, half a
    body), from the loopback address ``source`` if given; returns (status, parsed JSON
    body or text) of the answer, (0, "") for none."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout,
                                  source_address=(source, 0) if source else None) as sock:
        try:
            sock.sendall(data)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused early: the answer may still be there to read
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
    answer = b"".join(chunks)
    if not answer:
        return 0, ""
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def alertmanager(alertname: str, labels: dict[str, str] | None = None, *,
                 status: str = "firing", fingerprint: str | None = None,
                 annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """An Alertmanager webhook body (payload version "4") with one alert."""
    all_labels = {"alertname": alertname, **(labels or {})}
    alert: dict[str, Any] = {
        "status": status, "labels": all_labels, "annotations": annotations or {},
        "startsAt": "2026-11-25T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph",
    }
    if fingerprint:
        alert["fingerprint"] = fingerprint
    return {"version": "4", "groupKey": f'{{}}:{{alertname="{alertname}"}}',
            "truncatedAlerts": 0, "status": status, "receiver": "selfdrive",
            "groupLabels": {"alertname": alertname}, "commonLabels": all_labels,
            "commonAnnotations": annotations or {}, "externalURL": "http://am.example",
            "alerts": [alert]}


def project_intake(root: str) -> tuple[Any, Any]:
    """A worker factory for ``WorkerPool`` tests: the project's own intake, built in the
    worker process (module level, so a spawned process can import it by name)."""
    from selfdrive.triggers.intake import AlertIntake

    project = Project.__new__(Project)
    project.root, project._journals = Path(root), []
    journal = project.journal()
    take = AlertIntake(project.config(), project.registry(), journal,
                       project.executor(journal), log=lambda text: print(text, flush=True))
    return take, project.close


def broken_intake(root: str) -> tuple[Any, Any]:
    """A worker factory that cannot start, as when a worker cannot open the journal."""
    raise OSError(f"cannot open {root}/.selfdrive/journal.db: Permission denied")
