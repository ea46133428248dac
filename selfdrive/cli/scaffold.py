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


def scaffold_project(root: Path, *, team: str, level: str) -> list[Path]:
    """Write selfdrive.toml and runbooks/clean_old_files.py; refuse to overwrite."""
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
    return [config, example]
