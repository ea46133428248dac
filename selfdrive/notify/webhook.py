"""Webhook notifications: Jinja2-rendered JSON, POSTed off the run's path.

Delivery happens on background threads with a short timeout and a few retries; a
run never waits for it. Failures are reported through ``on_failure`` (the executor
journals them); ``flush`` gives deliveries a bounded moment before the process exits.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from selfdrive.config.model import Webhook

HEADLINES = {
    "approval.requested": "Approval needed",
    "approval.granted": "Approved",
    "approval.denied": "Denied",
    "approval.expired": "Approval expired",
    "guardrail.tripped": "Guardrail tripped",
}
Failure = Callable[[str, dict[str, Any]], None]


class Notifier:
    """Sends each event to every webhook subscribed to it, without blocking the caller."""

    def __init__(self, webhooks: Sequence[Webhook], *, root: Path, team: str,
                 on_failure: Failure | None = None) -> None:
        self.webhooks = list(webhooks)
        self.root = root
        self.team = team
        self.on_failure = on_failure
        self._threads: list[threading.Thread] = []

    def send(self, event: str, *, run: Mapping[str, Any], actor: str,
             reasons: Sequence[str] = (), detail: str = "") -> None:
        for hook in self.webhooks:
            if event not in hook.events:
                continue
            context = {"event": event, "headline": HEADLINES.get(event, event), "run": run,
                       "actor": actor, "reasons": list(reasons), "detail": detail,
                       "team": self.team, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime())}
            try:
                body = self.render(hook, context)
            except Exception as exc:  # a broken team template must not break the run
                self._failed(hook, event, run, f"template error: {exc}", attempts=0)
                continue
            thread = threading.Thread(target=self._deliver, args=(hook, event, run, body),
                                      name=f"notify-{event}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def render(self, hook: Webhook, context: Mapping[str, Any]) -> bytes:
        import jinja2
        from jinja2.sandbox import SandboxedEnvironment

        if hook.template:
            from selfdrive.config.load import read_limited

            source = read_limited(self.root / hook.template, what="a notification template")
        else:
            source = files("selfdrive").joinpath("templates", "notify",
                                                 "slack.json.j2").read_text(encoding="utf-8")
        env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
        text = env.from_string(source).render(**context)
        json.loads(text)  # must be JSON: a broken body would only fail at the far end
        return text.encode()

    def _deliver(self, hook: Webhook, event: str, run: Mapping[str, Any], body: bytes) -> None:
        error = ""
        for attempt in range(1, hook.retries + 2):
            # The URL is http(s) only: the config model's pattern refuses other schemes.
            request = urllib.request.Request(  # noqa: S310
                hook.url, data=body, method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "selfdrive"})
            try:
                with urllib.request.urlopen(request, timeout=hook.timeout) as response:  # noqa: S310
                    if 200 <= response.status < 300:
                        return
                    error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                error = str(getattr(exc, "reason", exc)) or type(exc).__name__
            if attempt <= hook.retries:
                time.sleep(min(0.2 * 2 ** (attempt - 1), 1.0))
        self._failed(hook, event, run, error, attempts=hook.retries + 1)

    def _failed(self, hook: Webhook, event: str, run: Mapping[str, Any], error: str, *,
                attempts: int) -> None:
        if self.on_failure is not None:
            self.on_failure(event, {"url": _redact_url(hook.url), "error": error,
                                    "attempts": attempts, "run_id": run.get("id")})

    def flush(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds, in all, for deliveries still going."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]


def _redact_url(url: str) -> str:
    """Webhook URLs often carry a token in the path or query: keep the host, hide the rest."""
    scheme, _, rest = url.partition("://")
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0] or [len(rest)])
    host = rest[:end].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/…" if end < len(rest) else f"{scheme}://{host}"
