"""``selfdrive new``: scaffold a runbook and its test from the package's templates."""

from __future__ import annotations

import keyword
import re
from importlib.resources import files
from pathlib import Path

import click

from selfdrive.cli.command import Command, utf8_folder
from selfdrive.cli.session import session

NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
RISKS = ["READ_ONLY", "LOW", "MEDIUM", "HIGH", "CRITICAL"]


def render_new(template: str, **values: object) -> str:
    """Render ``templates/new/<template>``. Its own delimiters are ``[[ ]]`` and ``[% %]``,
    so the ``{{ }}`` of the runbook's command templates pass through untouched."""
    import jinja2

    text = files("selfdrive").joinpath("templates", "new", template).read_text(encoding="utf-8")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - Python source, not HTML
        variable_start_string="[[", variable_end_string="]]",
        block_start_string="[%", block_end_string="%]",
        comment_start_string="[#", comment_end_string="#]")
    return env.from_string(text).render(**values)


@click.command("new", cls=Command)
@click.argument("name")
@click.option("--risk", required=True, type=click.Choice(RISKS, case_sensitive=False),
              help="The runbook's risk class (policy reads it).")
@click.option("--ssh", is_flag=True,
              help="It works on one inventory host over SSH (a `host` parameter).")
@click.option("--domain", default="host", show_default=True,
              help="The domain it belongs to (L3 autonomy is per domain).")
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Write here instead of the team's first runbooks folder.")
def new(name: str, risk: str, ssh: bool, domain: str, directory: str | None) -> None:
    """Scaffold runbook NAME and its test (test_NAME.py, which the registry skips).

    The test passes out of the box (`pytest`); `selfdrive lint` flags the placeholder
    docstring until you write one. Edit the body, then the test's scripted answers.
    """
    from selfdrive.sdk.errors import UsageError

    if not NAME.fullmatch(name) or keyword.iskeyword(name.replace("-", "_")):
        raise UsageError(f"runbook name {name!r}: use lower-case letters, digits and '-', "
                         f"starting with a letter (e.g. restart-web)")
    if not re.fullmatch(r"[a-z][a-z0-9-]*", domain):
        raise UsageError(f"--domain {domain!r}: lower-case letters, digits and '-'")
    folder = Path(directory) if directory else _runbooks_folder()
    utf8_folder(folder, "runbooks folder")
    func = name.replace("-", "_")
    runbook_file, test_file = folder / f"{func}.py", folder / f"test_{func}.py"
    for path in (runbook_file, test_file):
        if path.exists():
            raise UsageError(f"{path} already exists; nothing was written")
    values = {"name": func.replace("_", "-"), "func": func, "risk": risk.upper(), "ssh": ssh,
              "domain": domain, "changes": risk.upper() != "READ_ONLY",
              "on": "ctx.ssh(host)" if ssh else "ctx"}
    texts = (render_new("runbook.py.j2", **values), render_new("test_runbook.py.j2", **values))
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in zip((runbook_file, test_file), texts, strict=True):
        path.write_text(text, encoding="utf-8")
        click.echo(f"created {_shown(path)}")
    click.echo(f"\nnext: edit {_shown(runbook_file)}, then\n  pytest {_shown(test_file)}\n"
               f"  selfdrive lint\n  selfdrive plan {values['name']} "
               + ("-p host=HOST " if ssh else "") + "-p path=/some/folder")


def _shown(path: Path) -> str:
    """Relative to the working folder when inside it: what the user would type."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _runbooks_folder() -> Path:
    from selfdrive.sdk.errors import UsageError

    config = session().config
    folders = [(config.root / d).resolve() for d in config.runbooks]
    if not folders:
        raise UsageError("selfdrive.toml lists no runbooks folder; pass --dir")
    return folders[0]
