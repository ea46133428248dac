"""Commands about the team's project and its runbooks: init, list, show, lint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from selfdrive.cli.render import emit_json, table
from selfdrive.cli.session import session


@click.command()
@click.argument("directory", type=click.Path(file_okay=False), default=".")
@click.option("--team", default=None, help="Team name (default: the folder's name).")
@click.option("--level", default="L1", show_default=True,
              type=click.Choice(["L0", "L1", "L2", "L3", "L4", "L5"]),
              help="Autonomy level to start at.")
def init(directory: str, team: str | None, level: str) -> None:
    """Scaffold selfdrive.toml and a runbooks/ folder with one example runbook."""
    from selfdrive.cli.scaffold import scaffold_project

    root = Path(directory).resolve()
    written = scaffold_project(root, team=team or root.name, level=level)
    for path in written:
        click.echo(f"created {path}")
    click.echo(f"\nnext: cd {root} && selfdrive list && "
               f"selfdrive plan clean-old-files -p path=/tmp")


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_(as_json: bool) -> None:
    """List the runbooks the registry finds (exit 2 if some failed to load)."""
    s = session()
    reg = s.registry
    if as_json:
        emit_json({"runbooks": [_summary(rb) for rb in reg],
                   "problems": [str(p) for p in reg.problems]})
    else:
        if len(reg):
            table(["NAME", "RISK", "DOMAIN", "TRIGGERS", "SUMMARY"],
                  [[rb.name, rb.risk.name, rb.domain or "-", _triggers(rb), rb.summary]
                   for rb in reg])
        else:
            click.echo("no runbooks found in " + ", ".join(str(d) for d in
                                                       s.config.runbook_dirs))
        for problem in reg.problems:
            click.secho(f"error: {problem}", fg="red", err=True)
    if reg.problems:
        raise SystemExit(2)


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def show(name: str, as_json: bool) -> None:
    """Show one runbook: what it does, its parameters, risk, triggers and hooks."""
    rb = session().registry.get(name)
    data = _detail(rb)
    if as_json:
        emit_json(data)
        return
    click.secho(f"{rb.name}", bold=True, nl=False)
    click.echo(f"  ({rb.risk.name} risk, domain {rb.domain or '-'})  {rb.location}")
    if rb.description:
        click.echo("\n" + rb.description + "\n")
    if rb.params:
        table(["PARAMETER", "TYPE", "DEFAULT", "NOTES"],
              [[p["name"], p["type"], "(required)" if p["required"] else repr(p["default"]),
                "secret" if p["secret"] else ""] for p in data["params"]])
    click.echo("")
    for label, key in (("triggers", "triggers"), ("schedule", "schedule"), ("lock", "lock"),
                       ("timeout", "timeout"), ("tags", "tags"), ("approval", "approval")):
        value = data[key]
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        if value:
            click.echo(f"{label + ':':12} {value}")
    for label, key in (("precondition", "preconditions"), ("verify", "verifications"),
                       ("rollback", "rollbacks")):
        for hook in data[key]:
            extra = (f" (attempts {hook['attempts']}, every {hook['interval']}s)"
                     if label == "verify" and hook["attempts"] > 1 else "")
            click.echo(f"{label + ':':12} {hook['name']}{extra}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def lint(as_json: bool) -> None:
    """Report load problems (exit 2) and risky gaps (exit 1); exit 0 when clean."""
    from selfdrive.registry.operands import unguarded_operands
    from selfdrive.sdk.vocabulary import Risk

    reg = session().registry
    findings: list[dict[str, str]] = []
    for problem in reg.problems:
        findings.append({"level": "error", "where": problem.location, "what": problem.reason})
    for rb in reg:
        if rb.risk > Risk.READ_ONLY and not rb.verifications:
            findings.append({"level": "warning", "where": rb.location,
                             "what": f"{rb.name}: {rb.risk.name} risk but no verification; "
                                     f"add @{rb.fn.__name__}.verify so success is checked, "
                                     f"not assumed"})
        if not rb.description:
            findings.append({"level": "warning", "where": rb.location,
                             "what": f"{rb.name}: no docstring; `list` has nothing to show"})
        if rb.approval == "always" and rb.risk == Risk.READ_ONLY:
            findings.append({"level": "warning", "where": rb.location,
                             "what": f"{rb.name}: approval='always' on a READ_ONLY runbook"})
        siblings = [other for other in reg if other.source_file == rb.source_file]
        for use in unguarded_operands(rb, siblings):
            where = f"{rb.source_file}:{use.line}"
            if any(f["where"] == where and f"parameter {use.param!r}" in f["what"]
                   for f in findings):
                continue  # a helper shared by runbooks of one file: said once
            findings.append({"level": "warning", "where": where,
                             "what": f"{rb.name}: parameter {use.param!r} (a plain str) is an "
                                     f"operand with no `--` before it, so a value starting "
                                     f"with '-' would be read as an option; type it "
                                     f"selfdrive.Operand, or write -- before it"})
    if as_json:
        emit_json({"findings": findings, "runbooks": len(reg)})
    else:
        for f in findings:
            colour = "red" if f["level"] == "error" else "yellow"
            click.echo(f"{click.style(f['level'], fg=colour)}: {f['where']}: {f['what']}")
        click.echo(f"{len(reg)} runbook(s) checked, {len(findings)} finding(s)")
    if any(f["level"] == "error" for f in findings):
        raise SystemExit(2)
    if findings:
        raise SystemExit(1)


def _triggers(rb: Any) -> str:
    parts = [f"alert:{t.name}" for t in rb.triggers]
    if rb.schedule:
        parts.append(f"cron:{rb.schedule}")
    return ", ".join(parts) or "-"


def _summary(rb: Any) -> dict[str, Any]:
    return {"name": rb.name, "risk": rb.risk.name, "domain": rb.domain, "summary": rb.summary,
            "triggers": [t.name for t in rb.triggers], "schedule": rb.schedule,
            "tags": list(rb.tags), "location": rb.location}


def _detail(rb: Any) -> dict[str, Any]:
    from selfdrive.sdk.command import MASK

    def hook(h: Any) -> dict[str, Any]:
        return {"name": h.name, "params": list(h.params), "attempts": h.attempts,
                "interval": h.interval.total_seconds()}

    return {
        **_summary(rb),
        "description": rb.description,
        "params": [{"name": p.name, "type": p.type_name, "required": p.required,
                    "default": MASK if p.secret and p.default is not None else p.default,
                    "secret": p.secret} for p in rb.params],
        "triggers": [{"alert": t.name, "matchers": {k: getattr(v, "pattern", v)
                                                     for k, v in t.matchers.items()},
                      "params": dict(t.params)} for t in rb.triggers],
        "lock": rb.lock, "timeout": f"{rb.timeout.total_seconds():g}s",
        "approval": rb.approval if rb.approval != "policy" else "",
        "preconditions": [hook(h) for h in rb.preconditions],
        "verifications": [hook(h) for h in rb.verifications],
        "rollbacks": [hook(h) for h in rb.rollbacks],
    }
