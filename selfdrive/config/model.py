"""The team's ``selfdrive.toml`` as a typed, validated model."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from selfdrive.sdk.vocabulary import Level, Risk


class Rule(enum.StrEnum):
    """What one cell of the policy matrix allows."""

    DRY_RUN = "dry-run"
    APPROVAL = "approval"
    AUTO = "auto"
    AUTO_OWN_TRIGGER = "auto-own-trigger"
    AUTO_IN_DOMAIN = "auto-in-domain"
    AUTO_WITH_RECORD = "auto-with-record"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackRecordRule(_Strict):
    """What a qualifying track record is (DESIGN section 5, rule 1)."""

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


class ExecutorConfig(_Strict):
    """Limits the executor applies to every run."""

    output_limit: Annotated[int, Field(ge=1024)] = 64 * 1024
    command_timeout: Annotated[float, Field(gt=0)] = 600.0


class TeamConfig(_Strict):
    """One team's configuration. Paths are resolved against the file's folder."""

    team: str
    level: Level = Level.L0
    runbooks: list[str] = Field(default_factory=lambda: ["runbooks"])
    journal: str = ".selfdrive/journal.db"
    entry_points: bool = True
    policy: PolicyConfig = PolicyConfig()
    executor: ExecutorConfig = ExecutorConfig()
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

    @property
    def journal_path(self) -> Path:
        return (self.root / self.journal).resolve()

    @property
    def runbook_dirs(self) -> list[Path]:
        return [(self.root / d).resolve() for d in self.runbooks]
