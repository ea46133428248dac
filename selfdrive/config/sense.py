"""The ``[receiver]`` and ``[[schedules]]`` tables of ``selfdrive.toml``: what starts runs.

```toml
[receiver]
host = "127.0.0.1"                        # anything but loopback needs token_env or basic auth
port = 9095
token_env = "SELFDRIVE_RECEIVER_TOKEN"    # bearer token, read from this environment variable
basic_user = "alertmanager"               # and/or HTTP basic auth …
basic_password_env = "SELFDRIVE_RECEIVER_PASSWORD"   # … with the password from this variable
max_body = 1048576                        # bytes; a larger request gets 413
max_alerts = 1000                         # alerts in one request
max_labels = 64                           # labels (and annotations) per alert
max_label_chars = 1024                    # per label key and value, and per annotation key
max_annotation_chars = 16384              # per annotation value
dedup_window = "10m"                      # one run per (runbook, alert fingerprint) per window
replay_window = "48h"                     # delivery ids and resolutions remembered this long
domain_label = "domain"                   # the alert label policy reads as the alert's domain
workers = 2                               # processes that run what alerts start
worker_nice = 0                           # niceness of those processes (0-19)
threads = 8                               # waitress threads answering HTTP
journal_timeout = 5                       # seconds an alert waits for a busy journal, then 503

[receiver.pagerduty]
secret_env = "SELFDRIVE_PAGERDUTY_SECRET" # the v3 webhook subscription's signing secret
name_field = "title"                      # dotted path in event.data used as the alert name

[[schedules]]
runbook = "rotate-log"
cron = "@daily"                           # five fields, or @hourly @daily @weekly @monthly @yearly
params = { path = "/var/log/app.log" }
timezone = "Europe/Berlin"
grace = "10m"                             # a fire missed by less than this still runs, once
```

Secrets never live in the file: only the names of environment variables do.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from selfdrive.sdk.vocabulary import parse_duration

#: cronsim knows five-field expressions only; these are the usual aliases, expanded.
CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SCHEDULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@ */,-]{0,199}$")


class _Strict(BaseModel):
    # TOML has inf and nan; no setting means either.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def expand_cron(expression: str) -> str:
    """``@daily`` → ``0 0 * * *``; five-field expressions come back unchanged (stripped)."""
    text = expression.strip()
    return CRON_ALIASES.get(text.lower(), text)


def check_cron(expression: str) -> str:
    """Return the expanded expression, or raise ``ValueError`` saying what is wrong."""
    from cronsim import CronSim, CronSimError

    expanded = expand_cron(expression)
    if expanded.startswith("@"):
        raise ValueError(f"unknown cron alias {expression!r}; use five fields or one of "
                         f"{', '.join(sorted(CRON_ALIASES))}")
    try:
        CronSim(expanded, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"bad cron expression {expression!r}: {exc}") from None
    return expanded


def check_timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as "
                         f"'Europe/Berlin')") from None
    return value


def duration_setting(value: object, what: str, *, positive: bool = True,
                     why: str = "") -> object:
    """A duration setting (``"5m"`` or seconds) as a timedelta, for a ``before`` validator.

    One that must be positive is checked after parsing (``0.0000001`` is 0s) and also
    when it arrives as a timedelta built in code: a zero window is never a way in.
    """
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        value = parse_duration(value)
    if positive and isinstance(value, timedelta) and value <= timedelta(0):
        raise ValueError(f"{what} must be longer than 0s" + (f": {why}" if why else ""))
    return value


def _env_name(value: str | None) -> str | None:
    if value is not None and not ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name (name the variable "
                         f"that holds the secret, not the secret itself)")
    return value


class PagerDutyConfig(_Strict):
    """PagerDuty v3 webhooks: the signing secret (by variable name) and the alert's name."""

    secret_env: str | None = None
    name_field: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")] = "title"

    @field_validator("secret_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        return _env_name(value)


class ReceiverConfig(_Strict):
    """How ``selfdrive serve`` listens, who may post, and how alerts become runs."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9095
    token_env: str | None = None
    basic_user: str | None = None
    basic_password_env: str | None = None
    max_body: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    max_alerts: Annotated[int, Field(ge=1, le=10_000)] = 1000
    max_labels: Annotated[int, Field(ge=1, le=1000)] = 64
    max_label_chars: Annotated[int, Field(ge=16, le=65536)] = 1024
    max_annotation_chars: Annotated[int, Field(ge=16, le=1024 * 1024)] = 16384
    dedup_window: timedelta = timedelta(minutes=10)
    #: PagerDuty retries a delivery for up to 48 hours: its ids are remembered that long.
    replay_window: timedelta = timedelta(hours=48)
    domain_label: str = "domain"
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    worker_nice: Annotated[int, Field(ge=0, le=19)] = 0
    threads: Annotated[int, Field(ge=1, le=256)] = 8
    journal_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    pagerduty: PagerDutyConfig = PagerDutyConfig()

    @field_validator("token_env", "basic_password_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        return _env_name(value)

    @field_validator("dedup_window", mode="before")
    @classmethod
    def _window(cls, value: object) -> object:
        return duration_setting(value, "dedup_window", positive=False)

    @field_validator("replay_window", mode="before")
    @classmethod
    def _replay_window(cls, value: object) -> object:
        return duration_setting(value, "replay_window")

    @model_validator(mode="after")
    def _basic(self) -> ReceiverConfig:
        if (self.basic_user is None) != (self.basic_password_env is None):
            raise ValueError("basic auth needs both basic_user and basic_password_env")
        return self

    @property
    def secret_envs(self) -> tuple[str, ...]:
        """The environment variables that hold the receiver's credentials."""
        names = (self.token_env, self.basic_password_env, self.pagerduty.secret_env)
        return tuple(n for n in names if n)

    @property
    def auth_configured(self) -> bool:
        """Whether requests must prove who they are (bearer token or basic auth)."""
        return self.token_env is not None or self.basic_user is not None


class ScheduleConfig(_Strict):
    """One ``[[schedules]]`` entry: run a runbook when a cron expression fires."""

    runbook: Annotated[str, Field(min_length=1)]
    cron: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    timezone: str = "UTC"
    grace: timedelta = timedelta(minutes=5)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        check_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("grace", mode="before")
    @classmethod
    def _grace(cls, value: object) -> object:
        return duration_setting(value, "grace", positive=False)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not SCHEDULE_ID.fullmatch(value):
            raise ValueError(f"schedule name {value!r}: use letters, digits and . _ : @ - "
                             f"(at most 200 characters)")
        return value
