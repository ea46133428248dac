"""Webhooks, against a real HTTP server on 127.0.0.1 (and a dead port, and a slow one).

A request, a grant and a denial are POSTed as JSON (Slack-compatible by default, or
the team's template); a webhook that is down or slow never fails or delays a run,
and its failure is journaled as ``notification.failed`` with the URL's secret parts
hidden.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from approvals_support import RESTART_DB, Team, explain, low_runbook

SECRET_PATH = "/services/T000/B000/PATHSECRET"


class Hook:
    """A webhook receiver: records every POST; ``delay`` seconds before answering."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.posts: list[dict[str, Any]] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook._lock:
                    hook.posts.append({"path": self.path, "body": body,
                                       "content_type": self.headers["Content-Type"]})
                if hook.delay:
                    hook.release.wait(hook.delay)
                try:
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the client gave up waiting: that is the point
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = SECRET_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p["body"]) for p in self.posts]


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    server.thread.start()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def slow_hook() -> Iterator[Hook]:
    server = Hook(delay=5.0)
    server.thread.start()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def webhook(url: str, extra: str = "") -> str:
    return f'\n[[notify.webhooks]]\nurl = "{url}"\n{extra}'


def test_request_grant_and_deny_are_posted(team: Team, hook: Hook, tmp_path: Path) -> None:
    team.config("L4", webhook(hook.url()))
    team.runbook("db.py", RESTART_DB)

    run_id = team.request("restart-db", f"marker={tmp_path / 'a'}", who="alice",
                          code=3)["run"]["id"]
    [requested] = hook.bodies()
    assert hook.posts[0]["path"] == SECRET_PATH
    assert hook.posts[0]["content_type"] == "application/json"
    assert "restart-db" in requested["text"]
    assert requested["text"].startswith("Approval needed")
    assert "blocks" in requested  # Slack's block kit, as the default template writes it
    assert run_id in json.dumps(requested["blocks"])

    assert team.sd("approve", run_id, who="bob").returncode == 0
    granted = hook.bodies()[1]
    assert granted["text"].startswith("Approved")
    assert "restart-db" in granted["text"]
    assert "bob" in json.dumps(granted["blocks"])

    other = team.request("restart-db", f"marker={tmp_path / 'b'}", who="alice",
                         code=3)["run"]["id"]
    denied = team.sd("deny", other, "--reason", "not during the sale", who="bob")
    assert denied.returncode == 0, explain(denied)
    assert team.status(other) == "denied"
    texts = [b["text"] for b in hook.bodies()]
    assert len(texts) == 4, texts
    assert texts[2].startswith("Approval needed")
    assert texts[3].startswith("Denied")
    assert "not during the sale" in json.dumps(hook.bodies()[3])
    assert team.events("notification.failed") == []


def test_team_template_is_used(team: Team, hook: Hook, tmp_path: Path) -> None:
    team.config("L4", webhook(hook.url("/custom"), 'template = "notify.json.j2"'))
    (team.root / "notify.json.j2").write_text(
        '{"kind": {{ event|tojson }}, "runbook": {{ run.runbook|tojson }}, '
        '"by": {{ actor|tojson }}, "team": {{ team|tojson }}, "run": {{ run.id|tojson }}}\n',
        encoding="utf-8")
    team.runbook("db.py", RESTART_DB)
    # From a subfolder: the template is found next to selfdrive.toml, not the cwd.
    proc = team.sd("run", "restart-db", "-p", f"marker={tmp_path / 'a'}", "--json",
                   who="alice", cwd=team.root / "runbooks")
    assert proc.returncode == 3, explain(proc)
    run_id = json.loads(proc.stdout)["run"]["id"]
    assert team.sd("approve", run_id, who="bob").returncode == 0
    assert [p["path"] for p in hook.posts] == ["/custom", "/custom"]
    assert hook.bodies() == [
        {"kind": "approval.requested", "runbook": "restart-db", "by": "alice",
         "team": "approvals-tests", "run": run_id},
        {"kind": "approval.granted", "runbook": "restart-db", "by": "bob",
         "team": "approvals-tests", "run": run_id},
    ]


# A frozen team fires guardrail.tripped on every run; --yes then runs it at once.
FROZEN = '[[guardrails.freeze]]\nname = "always"\ncron = "* * * * *"\n'
FAST_FAIL = "timeout = 0.5\nretries = 1"


def _run_despite_webhook(team: Team, tmp_path: Path) -> tuple[dict[str, Any], float]:
    team.runbook("a.py", low_runbook("touch-a"))
    started = time.monotonic()
    proc = team.sd("run", "touch-a", "-p", f"path={tmp_path / 'out'}", "--yes", "--json",
                   who="alice")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, explain(proc)
    run = json.loads(proc.stdout)["run"]
    assert run["status"] == "succeeded"
    assert (tmp_path / "out").read_text() == "touch_a\n"
    finished = datetime.fromisoformat(run["finished_at"])
    took = (finished - datetime.fromisoformat(run["started_at"])).total_seconds()
    assert took < 1.0, took
    # From the request on, too: the webhook's two attempts alone would take over 1.2 s.
    whole = (finished - datetime.fromisoformat(run["created_at"])).total_seconds()
    assert whole < 1.0, whole
    return run, elapsed


def _journal_bytes(team: Team) -> bytes:
    return b"".join(p.read_bytes() for p in team.journal.parent.glob("journal.db*"))


def test_dead_webhook_neither_fails_nor_delays_the_run(team: Team, tmp_path: Path) -> None:
    port = closed_port()
    team.config("L4", FROZEN
                + webhook(f"http://127.0.0.1:{port}{SECRET_PATH}", FAST_FAIL)
                + webhook(f"http://127.0.0.1:{port}?token=QUERYSECRET", FAST_FAIL))
    run, elapsed = _run_despite_webhook(team, tmp_path)
    assert elapsed < 4.0, elapsed
    failed = team.events("notification.failed")
    assert len(failed) == 2, failed
    for event in failed:
        assert event["actor"] == "selfdrive"
        assert event["run_id"] == run["id"]
        assert event["data"]["event"] == "guardrail.tripped"
        assert event["data"]["attempts"] == 2
        assert event["data"]["error"]
    # Path and query both hidden (a query token used to be journaled verbatim).
    assert [e["data"]["url"] for e in failed] == [f"http://127.0.0.1:{port}/…"] * 2
    stored = _journal_bytes(team)
    assert b"PATHSECRET" not in stored
    assert b"QUERYSECRET" not in stored


def test_slow_webhook_neither_fails_nor_delays_the_run(team: Team, slow_hook: Hook,
                                                        tmp_path: Path) -> None:
    team.config("L4", FROZEN + webhook(slow_hook.url(), FAST_FAIL))
    run, elapsed = _run_despite_webhook(team, tmp_path)
    # Two attempts of 0.5 s and a pause: far less than the 5 s the server would hold it.
    assert elapsed < 4.0, elapsed
    assert len(slow_hook.posts) == 2  # it was reached, twice: slow, not down
    [failed] = team.events("notification.failed")
    assert failed["run_id"] == run["id"]
    assert failed["data"]["event"] == "guardrail.tripped"
    assert failed["data"]["attempts"] == 2
    assert "timed out" in failed["data"]["error"]
    assert failed["data"]["url"] == f"http://127.0.0.1:{slow_hook.port}/…"
    assert b"PATHSECRET" not in _journal_bytes(team)


def test_guardrail_trip_is_posted_as_valid_json(team: Team, hook: Hook, tmp_path: Path
                                                ) -> None:
    team.config("L4", webhook(hook.url()))
    team.runbook("a.py", low_runbook("touch-a"))
    reason = 'failover of "db-1" \\ <ticket> & more\nsecond line'
    assert team.sd("halt", "--reason", reason, who="oncall").returncode == 0
    run_id = team.request("touch-a", f"path={tmp_path / 'a'}", who="alice",
                          code=3)["run"]["id"]
    # Both parsed as JSON: the reason was escaped, not pasted. Delivery order may vary.
    bodies = sorted(hook.bodies(), key=lambda b: b["text"])
    assert [b["text"] for b in bodies] == ["Approval needed — touch-a (LOW)",
                                           "Guardrail tripped — touch-a (LOW)"]
    body = bodies[1]
    texts = " ".join(b.get("text", {}).get("text", "") for b in body["blocks"])
    assert run_id in texts
    assert "halt switch is on" in texts
    assert 'failover of "db-1"' in texts
    assert "<ticket> & more" in texts


def test_broken_team_template_never_breaks_the_request(team: Team, hook: Hook,
                                                        tmp_path: Path) -> None:
    team.config("L4", webhook(hook.url(), 'template = "missing.json.j2"'))
    team.runbook("db.py", RESTART_DB)
    run_id = team.request("restart-db", f"marker={tmp_path / 'm'}", who="alice",
                          code=3)["run"]["id"]
    assert team.status(run_id) == "pending_approval"
    assert hook.posts == []
    [failed] = team.events("notification.failed", run_id)
    assert failed["data"]["event"] == "approval.requested"
    assert failed["data"]["attempts"] == 0
    assert "template error" in failed["data"]["error"]


def test_an_endless_team_template_is_read_only_up_to_its_limit(team: Team, hook: Hook,
                                                               tmp_path: Path) -> None:
    team.config("L4", webhook(hook.url(), 'template = "/dev/zero"'))
    team.runbook("db.py", RESTART_DB)
    run_id = team.request("restart-db", f"marker={tmp_path / 'm'}", who="alice",
                          code=3)["run"]["id"]
    assert team.status(run_id) == "pending_approval"
    [failed] = team.events("notification.failed", run_id)
    assert failed["data"]["error"] == ("template error: /dev/zero: larger than 1 MiB; a "
                                       "notification template is a few KiB (is this the "
                                       "right file?)")
