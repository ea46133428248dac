"""Find, read and validate ``selfdrive.toml`` with errors that name file, key and reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from selfdrive.config.model import TeamConfig
from selfdrive.sdk.errors import ConfigError
from selfdrive.sdk.text import not_utf8, printable

CONFIG_NAME = "selfdrive.toml"


def find_config(start: Path) -> Path | None:
    """Walk up from ``start`` to the first folder holding ``selfdrive.toml``."""
    here = start.resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None = None, *, start: Path | None = None) -> TeamConfig:
    """Load the team config from ``path``, or the one found walking up from ``start``."""
    if path is None:
        found = find_config(start or Path.cwd())
        if found is None:
            raise ConfigError(f"no {CONFIG_NAME} in {(start or Path.cwd()).resolve()} or any "
                              f"folder above it; create one with `selfdrive init`")
        path = found
    path = path.resolve()
    why = not_utf8(str(path))
    if why is not None:  # every runbook's file path would fail to reach the journal
        raise ConfigError(f"{printable(str(path))}: {why}; selfdrive records the paths of a "
                          f"project's files in its journal, which holds text: move the "
                          f"project to a folder whose path is UTF-8")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path)


def parse_config(data: dict[str, object], path: Path) -> TeamConfig:
    """Validate parsed TOML; every problem is listed with its dotted key."""
    try:
        config = TeamConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see the README's configuration section)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            problems.append(f"{path}: {key}: {msg}")
        raise ConfigError("\n".join(problems)) from None
    return config.located(path)
