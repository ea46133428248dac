"""Project scaffolding from the package's Jinja2 templates."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from selfdrive.sdk.errors import UsageError


def _read(name: str) -> str:
    return files("selfdrive").joinpath("templates", "init", name).read_text(encoding="utf-8")


def _render(name: str, **values: str) -> str:
    import jinja2

    text = _read(name)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)  # noqa: S701 - Python and TOML, not HTML
    return env.from_string(text).render(**values)


#: The journal's folder (the default ``journal`` key): local state, never committed.
STATE_IGNORE = ".selfdrive/"
_COVERS_STATE = {".selfdrive", ".selfdrive/", "/.selfdrive", "/.selfdrive/", ".selfdrive/*",
                 "/.selfdrive/*", "**/.selfdrive", "**/.selfdrive/"}


def scaffold_project(root: Path, *, team: str, level: str) -> list[tuple[str, Path]]:
    """Write selfdrive.toml and runbooks/clean_old_files.py (refusing to overwrite them)
    and make git ignore the journal's folder; returns what was done to which file."""
    config = root / "selfdrive.toml"
    example = root / "runbooks" / "clean_old_files.py"
    existing = [p for p in (config, example) if p.exists()]
    if existing:
        raise UsageError(f"{existing[0]} already exists; nothing was written")
    team_name = team.replace('"', "").replace("\\", "") or "my-team"
    config_text = _render("selfdrive.toml.j2", team=team_name, level=level)
    example_text = _read("clean_old_files.py.txt")  # a runbook: its {{ }} are its own
    example.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(config_text, encoding="utf-8")
    example.write_text(example_text, encoding="utf-8")
    return [("created", config), ("created", example), *ignore_state(root)]


def ignore_state(root: Path) -> list[tuple[str, Path]]:
    """Add ``.selfdrive/`` to ``root/.gitignore``: create it, or append the line to the
    team's own file (nothing else in it changes) when no line covers it yet."""
    gitignore = root / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(f"# selfdrive's journal and locks: local state\n{STATE_IGNORE}\n",
                             encoding="utf-8")
        return [("created", gitignore)]
    text = gitignore.read_bytes().decode("utf-8", "surrogateescape")  # whatever it holds
    if any(line.strip() in _COVERS_STATE for line in text.splitlines()):
        return []
    with gitignore.open("ab") as out:  # appended: the file's own bytes stay as they are
        out.write((("" if not text or text.endswith("\n") else "\n")
                   + f"{STATE_IGNORE}\n").encode())
    return [(f"added {STATE_IGNORE} to", gitignore)]
