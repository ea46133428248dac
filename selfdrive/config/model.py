"""The team's ``selfdrive.toml`` as a typed, validated model."""

from __future__ import annotations

import enum
import functools
import os
import pwd
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from selfdrive.config.remote import InventoryConfig, SshConfig
from selfdrive.config.sense import (
    ReceiverConfig,
    ScheduleConfig,
    check_timezone,
    duration_setting,
)
from selfdrive.sdk.errors import ConfigError
from selfdrive.sdk.vocabulary import Level, Risk

if TYPE_CHECKING:
    from selfdrive.config.location import JournalUrl

#: The built-in runbook library: a folder of runbook files shipped inside the package.
LIBRARY_DIR = Path(__file__).resolve().parent.parent / "library"


class Rule(enum.StrEnum):
    """What one cell of the policy matrix allows."""

    DRY_RUN = "dry-run"
    APPROVAL = "approval"
    AUTO = "auto"
    AUTO_OWN_TRIGGER = "auto-own-trigger"
    AUTO_IN_DOMAIN = "auto-in-domain"
    AUTO_WITH_RECORD = "auto-with-record"


class _Strict(BaseModel):
    # TOML has inf and nan; no setting means either.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TrackRecordRule(_Strict):
    """What a qualifying track record is: autonomy at ``applies_from`` and above must be earned."""

    # 0 is a policy choice, not a guardrail off: a verification failure still demotes.
    min_verified_successes: Annotated[int, Field(ge=0)] = 3
    window: Annotated[int, Field(ge=1)] = 5
    applies_from: Risk = Risk.MEDIUM

    @field_validator("applies_from", mode="before")
    @classmethod
    def _risk(cls, value: object) -> object:
        return Risk.parse(value) if isinstance(value, str) else value


class PolicyConfig(_Strict):
    """Overrides of the default matrix and the thresholds policy uses."""

    matrix: dict[str, dict[str, Rule]] = Field(default_factory=dict)
    track_record: TrackRecordRule = TrackRecordRule()
    separation_of_duties: Risk = Risk.HIGH

    @field_validator("matrix")
    @classmethod
    def _matrix_keys(cls, value: dict[str, dict[str, Rule]]) -> dict[str, dict[str, Rule]]:
        out: dict[str, dict[str, Rule]] = {}
        for level, row in value.items():
            if level.upper() not in Level.__members__:
                raise ValueError(f"unknown level {level!r} in [policy.matrix]; use L0 … L5")
            if level.upper() in out:  # "L3" and "l3": one row would silently drop the other
                raise ValueError(f"level {level.upper()} appears twice in [policy.matrix]")
            cells: dict[str, Rule] = {}
            for risk, rule in row.items():
                name = Risk.parse(risk).name  # raises a ValueError naming the allowed classes
                if name in cells:
                    raise ValueError(f"risk {name} appears twice in [policy.matrix.{level}]")
                cells[name] = rule
            out[level.upper()] = cells
        return out

    def override(self, level: Level, risk: Risk) -> Rule | None:
        """The team's rule for this cell, if the team overrode it."""
        return self.matrix.get(level.name, {}).get(risk.name)

    @field_validator("separation_of_duties", mode="before")
    @classmethod
    def _sod(cls, value: object) -> object:
        return Risk.parse(value) if isinstance(value, str) else value


def _risk_keyed(value: object, what: str) -> object:
    if not isinstance(value, dict):
        return value
    out: dict[str, object] = {}
    for key, item in value.items():
        name = Risk.parse(key).name  # raises a ValueError naming the allowed classes
        if name in out:
            raise ValueError(f"{what}: risk {name} is given twice")
        out[name] = item
    return out


class ApprovalsConfig(_Strict):
    """Who may approve what, how many must, and for how long an approval holds."""

    expiry: timedelta = timedelta(hours=1)
    approvers: dict[str, list[str]] = Field(default_factory=dict)
    min_approvers: dict[str, Annotated[int, Field(ge=1, le=10)]] = Field(
        default_factory=lambda: {"CRITICAL": 2})

    @field_validator("expiry", mode="before")
    @classmethod
    def _expiry(cls, value: object) -> object:
        return duration_setting(value, "expiry",
                                why="an approval window of 0s closes as it opens")

    @field_validator("approvers", mode="before")
    @classmethod
    def _approvers(cls, value: object) -> object:
        return _risk_keyed(value, "approvals.approvers")

    @field_validator("min_approvers", mode="before")
    @classmethod
    def _min(cls, value: object) -> object:
        return _risk_keyed(value, "approvals.min_approvers")

    def allowed(self, risk: Risk) -> list[str] | None:
        """The people who may approve ``risk``; None means anyone."""
        return self.approvers.get(risk.name)

    def needed(self, risk: Risk) -> int:
        return self.min_approvers.get(risk.name, 1)


class FreezeWindow(_Strict):
    """A change freeze: a date range, or the minutes a cron expression matches."""

    name: Annotated[str, Field(min_length=1)]  # reasons and notifications name it
    start: datetime | None = None
    end: datetime | None = None
    cron: str | None = None
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from cronsim import CronSim, CronSimError

        try:
            CronSim(value, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"bad cron expression {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _shape(self) -> FreezeWindow:
        ranged = self.start is not None or self.end is not None
        if ranged == (self.cron is not None):
            raise ValueError(f"freeze {self.name!r}: give either start and end, or cron")
        if not ranged:
            return self
        if self.start is None or self.end is None:
            raise ValueError(f"freeze {self.name!r}: give both start and end")
        start, end = self.bounds()
        if start >= end:
            raise ValueError(f"freeze {self.name!r}: its end ({end:%Y-%m-%d %H:%M} "
                             f"{self.timezone}) is not after its start ({start:%Y-%m-%d %H:%M} "
                             f"{self.timezone}), so it would never hold")
        return self

    def bounds(self) -> tuple[datetime, datetime]:
        """Start and end as aware datetimes: a bound without an offset is in ``timezone``.

        The guardrail compares these, so the check above sees what the guardrail sees.
        """
        from zoneinfo import ZoneInfo

        assert self.start is not None and self.end is not None
        tz = ZoneInfo(self.timezone)
        start = self.start if self.start.tzinfo else self.start.replace(tzinfo=tz)
        end = self.end if self.end.tzinfo else self.end.replace(tzinfo=tz)
        return start.astimezone(tz), end.astimezone(tz)


class GuardrailsConfig(_Strict):
    """Limits that turn an autonomous run into a pending approval."""

    rate_limit_per_runbook: Annotated[int, Field(ge=0)] = 5
    rate_limit_total: Annotated[int, Field(ge=0)] = 20
    rate_window: timedelta = timedelta(hours=1)
    blast_radius: Annotated[int, Field(ge=1)] = 10
    freeze: list[FreezeWindow] = Field(default_factory=list)

    @field_validator("rate_window", mode="before")
    @classmethod
    def _window(cls, value: object) -> object:
        return duration_setting(value, "rate_window", why="an empty window counts no runs, "
                                "so the rate limits would never trip")


class Webhook(_Strict):
    """Where notifications go. The template renders the JSON body (Slack-compatible default)."""

    url: Annotated[str, Field(pattern=r"^https?://")]
    template: str | None = None
    timeout: Annotated[float, Field(gt=0, le=30)] = 3.0
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    events: list[str] = Field(default_factory=lambda: [
        "approval.requested", "approval.granted", "approval.denied", "approval.expired",
        "guardrail.tripped"])


class NotifyConfig(_Strict):
    webhooks: list[Webhook] = Field(default_factory=list)


class IdentityConfig(_Strict):
    """Whose word counts for who is acting."""

    os_user_authoritative: bool = False


def current_os_user() -> str:
    """The name of this process's uid, as the password database gives it.

    Never ``LOGNAME``/``USER`` (what :func:`getpass.getuser` reads first): anyone can set
    those, and with ``os_user_authoritative`` this name is the only identity there is.
    """
    return _user_of(os.getuid())


@functools.cache
def _user_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry (a bare container): the uid is still who it is
        return f"uid:{uid}"

_ENV_PATTERN = re.compile(r"[A-Za-z0-9_*?\[\]!]+")

#: What a shell command needs to behave as it does at a terminal, and nothing that is
#: usually a credential. Patterns such as ``LC_*`` are allowed.
DEFAULT_ENV_ALLOW: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TERM",
    "TMPDIR", "SSH_AUTH_SOCK",
)


#: The longest a planning read may be reused for: beyond it, it is the past, not state.
MAX_REUSE_READS = timedelta(minutes=10)


class ExecutorConfig(_Strict):
    """Limits the executor applies to every run."""

    output_limit: Annotated[int, Field(ge=1024)] = 64 * 1024
    command_timeout: Annotated[float, Field(gt=0)] = 600.0
    #: Variables of selfdrive's own environment a command's process may see (``LC_*``
    #: patterns allowed); everything else, the receiver's token and ``@env`` secrets
    #: included, stays out.
    env_allow: list[str] = Field(default_factory=lambda: list(DEFAULT_ENV_ALLOW))
    #: How long after planning a live run may take a read the plan already ran (same
    #: target, same command) instead of running it again; ``0s`` always runs reads again.
    reuse_reads: timedelta = timedelta(seconds=30)

    @field_validator("reuse_reads", mode="before")
    @classmethod
    def _reuse(cls, value: object) -> object:
        value = duration_setting(value, "reuse_reads", positive=False)
        if isinstance(value, timedelta) and value > MAX_REUSE_READS:
            raise ValueError(f"reuse_reads must be at most {MAX_REUSE_READS.seconds // 60}m: "
                             f"a live run would act on what a read saw that long ago")
        return value

    @field_validator("env_allow")
    @classmethod
    def _allow(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _ENV_PATTERN.fullmatch(item):
                raise ValueError(f"{item!r} is neither an environment variable name nor a "
                                 f"pattern of one (such as LC_*)")
        return value


class TeamConfig(_Strict):
    """One team's configuration. Paths are resolved against the file's folder."""

    team: str
    level: Level = Level.L0
    runbooks: list[str] = Field(default_factory=lambda: ["runbooks"])
    journal: str = ".selfdrive/journal.db"
    entry_points: bool = True
    library: bool = False  # also load the built-in runbook library (selfdrive/library/)
    policy: PolicyConfig = PolicyConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    guardrails: GuardrailsConfig = GuardrailsConfig()
    notify: NotifyConfig = NotifyConfig()
    identity: IdentityConfig = IdentityConfig()
    executor: ExecutorConfig = ExecutorConfig()
    ssh: SshConfig = SshConfig()
    inventory: InventoryConfig = InventoryConfig()
    receiver: ReceiverConfig = ReceiverConfig()
    schedules: list[ScheduleConfig] = Field(default_factory=list)
    _path: Path | None = PrivateAttr(default=None)

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        if isinstance(value, str):
            key = value.strip().upper()
            if key not in Level.__members__:
                raise ValueError(f"unknown level {value!r}; expected one of L0 … L5")
            return Level[key]
        return value

    @property
    def path(self) -> Path | None:
        """The file this configuration was read from."""
        return self._path

    def located(self, path: Path) -> TeamConfig:
        """A copy that knows which file it came from (paths resolve against its folder)."""
        copy = self.model_copy()
        copy._path = path
        return copy

    @property
    def root(self) -> Path:
        return self._path.parent if self._path else Path.cwd()

    @field_validator("journal")
    @classmethod
    def _journal(cls, value: str) -> str:
        from selfdrive.config.location import JournalUrl, is_url

        if is_url(value):
            found = JournalUrl.check(value)
            if isinstance(found, str):
                raise ValueError(found)
        elif not value.strip():
            raise ValueError("empty; give a SQLite file path or a postgresql:// address")
        return value

    @property
    def journal_location(self) -> Path | JournalUrl:
        """The team's journal: a SQLite file, or a PostgreSQL database shared by several
        machines (``journal = "postgresql://user@host/db"``)."""
        from selfdrive.config.location import JournalUrl, is_url

        if is_url(self.journal):
            return JournalUrl.parse(self.journal)
        return (self.root / self.journal).resolve()

    @property
    def journal_path(self) -> Path:
        """The SQLite journal's file (a PostgreSQL journal has none: see
        :attr:`journal_location`)."""
        location = self.journal_location
        if not isinstance(location, Path):
            raise ConfigError(f"journal {location} is a PostgreSQL database, not a file")
        return location

    @property
    def state_dir(self) -> Path:
        """This machine's working files (Ansible's private folders): beside a SQLite
        journal, or in ``.selfdrive/`` of the project for a PostgreSQL one."""
        location = self.journal_location
        return location.parent if isinstance(location, Path) else self.root / ".selfdrive"

    @property
    def runbook_dirs(self) -> list[Path]:
        """The team's runbook folders, then the built-in library's when ``library = true``."""
        dirs = [(self.root / d).resolve() for d in self.runbooks]
        return [*dirs, LIBRARY_DIR] if self.library else dirs
