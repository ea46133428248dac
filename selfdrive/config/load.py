"""Find, read and validate ``selfdrive.toml`` with errors that name file, key and reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from selfdrive.config.model import TeamConfig
from selfdrive.sdk.errors import ConfigError
from selfdrive.sdk.text import not_utf8, printable

CONFIG_NAME = "selfdrive.toml"
#: A team's configuration is a few KiB; past this it is the wrong file (or /dev/zero).
MAX_CONFIG_BYTES = 1024 * 1024
#: Tables and arrays nest this deep at most: real configs use three or four levels, and
#: the TOML parser (a recursive descent) would exhaust the stack a few hundred down.
MAX_DEPTH = 32


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
    text = read_limited(path, what=f"a {CONFIG_NAME}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        key, line = _too_deep_in_text(text)
        raise ConfigError(f"{path}: {key}: nested more than {MAX_DEPTH} levels deep "
                          f"(line {line})") from None
    too_deep = _too_deep(data)
    if too_deep is not None:
        raise ConfigError(f"{path}: {too_deep}: nested more than {MAX_DEPTH} levels deep")
    return parse_config(data, path)


def read_limited(path: Path, *, what: str, limit: int = MAX_CONFIG_BYTES) -> str:
    """A configuration file's text (``what`` it should be, for the error), reading at
    most one byte past ``limit`` whatever the file is: a device or a pipe never ends,
    and its size says nothing."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if len(data) > limit:
        size = f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit} bytes"
        raise ConfigError(f"{path}: larger than {size}; {what} is a few KiB "
                          f"(is this the right file?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def _too_deep(value: object, key: str = "", depth: int = 0) -> str | None:
    """The dotted key of the first value nested past :data:`MAX_DEPTH`, else None."""
    if depth > MAX_DEPTH:
        return key or "(top level)"
    items: list[tuple[str, object]] = []
    if depth >= 4:  # where it starts is what the reader needs, not thirty more levels
        cut = key if key.endswith("…") else f"{key}…"
        items = [(cut, v) for v in (value.values() if isinstance(value, dict)
                                    else value if isinstance(value, list) else ())]
    elif isinstance(value, dict):
        items = [(f"{key}.{k}" if key else str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    for sub_key, item in items:
        found = _too_deep(item, sub_key, depth + 1)
        if found is not None:
            return found
    return None


def _too_deep_in_text(text: str) -> tuple[str, int]:
    """Where brackets first nest past :data:`MAX_DEPTH`: the key being set and its line.

    Only called when the parser gave up, so it need not be a TOML parser: it skips
    comments and strings and counts ``[`` and ``{``.
    """
    depth, line, table, key = 0, 1, "", ""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "\"'":
            quote = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else c
            j = i + len(quote)
            while j < n and text[j:j + len(quote)] != quote:
                j += 2 if c == '"' and text[j] == "\\" else 1
            line += text.count("\n", i, j)
            i = j + len(quote)
            continue
        elif c in "[{":
            if depth == 0 and c == "[" and not text[text.rfind("\n", 0, i) + 1:i].strip():
                end = text.find("]", i)
                table = text[i:end].strip("[] ") if end > 0 else table
                i = n if end < 0 else end + 1
                if text[i:i + 1] == "]":
                    i += 1
                continue
            depth += 1
            if depth > MAX_DEPTH:
                dotted = f"{table}.{key}" if table and key else (table or key or "(top level)")
                return dotted, line
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c == "=" and depth == 0:
            start = text.rfind("\n", 0, i) + 1
            key = text[start:i].strip()
        i += 1
    return "(top level)", line


def parse_config(data: dict[str, object], path: Path) -> TeamConfig:
    """Validate parsed TOML; every problem is listed with its dotted key."""
    try:
        config = TeamConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see the README's configuration section)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            problems.append(f"{path}: {key}: {msg}")
        raise ConfigError("\n".join(problems)) from None
    return config.located(path)
