"""Commands about the team's project and its runbooks: init, list, show, lint."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from selfdrive.cli.command import Command, utf8_folder
from selfdrive.cli.render import emit_json, table
from selfdrive.cli.session import session


@click.command(cls=Command)
@click.argument("directory", type=click.Path(file_okay=False), default=".")
@click.option("--team", default=None, help="Team name (default: the folder's name).")
@click.option("--level", default="L1", show_default=True,
              type=click.Choice(["L0", "L1", "L2", "L3", "L4", "L5"]),
              help="Autonomy level to start at.")
def init(directory: str, team: str | None, level: str) -> None:
    """Scaffold selfdrive.toml and a runbooks/ folder with one example runbook.

    Also makes git ignore .selfdrive/ (the journal): a .gitignore is created, or the
    line appended to yours.
    """
    from selfdrive.cli.scaffold import scaffold_project

    root = utf8_folder(Path(directory), "project folder")
    for done, path in scaffold_project(root, team=team or root.name, level=level):
        click.echo(f"{done} {path}")
    click.echo(f"\nnext: cd {root} && selfdrive list && "
               f"selfdrive plan clean-old-files -p path=/tmp")


@click.command("list", cls=Command)
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


@click.command(cls=Command)
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
        table(["PARAMETER", "TYPE", "DEFAULT", "SECRET", "CONSTRAINTS"],
              [[p["name"], p["type"], "(required)" if p["required"] else _value(p["default"]),
                "yes" if p["secret"] else "no", _constraints_text(p["constraints"]) or "-"]
               for p in data["params"]])
    click.echo("")
    for trigger in data["triggers"]:
        click.echo(f"{'trigger:':12} {_trigger_text(trigger)}")
    for label, key in (("schedule", "schedule"), ("lock", "lock"),
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


@click.command(cls=Command)
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
        elif _placeholder(rb.description):
            findings.append({"level": "warning", "where": rb.location,
                             "what": f"{rb.name}: the docstring is a placeholder "
                                     f"({rb.summary[:60]!r}); say what it does: `list` "
                                     f"shows its first line"})
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


#: A first line that starts like this is a note to self, not a summary (the runbook
#: `selfdrive new` scaffolds starts with TODO).
PLACEHOLDER = re.compile(r"^\W*(TODO|FIXME|XXX|TBD)\b", re.IGNORECASE)


def _placeholder(description: str) -> bool:
    """A docstring that says nothing yet: a TODO-style note, or hardly a word."""
    letters = sum(c.isalpha() for c in description)
    return letters < 3 or PLACEHOLDER.match(description.splitlines()[0]) is not None


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

    constraints = _param_constraints(rb)
    return {
        **_summary(rb),
        "description": rb.description,
        "params": [{"name": p.name, "type": p.type_name, "required": p.required,
                    "default": MASK if p.secret and p.default is not None else p.default,
                    "secret": p.secret, "constraints": constraints.get(p.name, {})}
                   for p in rb.params],
        "triggers": [{"alert": t.name,
                      "matchers": {k: ({"op": "=~", "value": v.pattern}
                                       if isinstance(v, re.Pattern) else {"op": "=", "value": v})
                                   for k, v in t.matchers.items()},
                      "params": dict(t.params)} for t in rb.triggers],
        "lock": rb.lock, "timeout": f"{rb.timeout.total_seconds():g}s",
        "approval": rb.approval if rb.approval != "policy" else "",
        "preconditions": [hook(h) for h in rb.preconditions],
        "verifications": [hook(h) for h in rb.verifications],
        "rollbacks": [hook(h) for h in rb.rollbacks],
    }


#: JSON-schema keywords pydantic writes for a field's constraints, by the names an
#: author gives them (``Field(ge=1)``, ``min_length=…``) …
SCHEMA_NAMES = {"minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt",
                "exclusiveMaximum": "lt", "multipleOf": "multiple_of",
                "minLength": "min_length", "maxLength": "max_length",
                "minItems": "min_length", "maxItems": "max_length", "pattern": "pattern"}
#: … and how `show` words them.
WORDS = {"ge": ">= {}", "le": "<= {}", "gt": "> {}", "lt": "< {}",
         "multiple_of": "multiple of {}", "min_length": "length >= {}",
         "max_length": "length <= {}", "pattern": "matches /{}/"}


def _param_constraints(rb: Any) -> dict[str, dict[str, Any]]:
    """Each parameter's constraints, read from the schema pydantic validates against, so
    `show` states exactly what `run` would refuse."""
    try:
        props = rb.params_model.model_json_schema()["properties"]
    except Exception:  # a type with no JSON schema: its constraints cannot be shown
        return {}
    return {name: _schema_constraints(schema) for name, schema in props.items()}


def _schema_constraints(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in [schema, *schema.get("anyOf", ())]:  # `X | None`: X's constraints
        for key, name in SCHEMA_NAMES.items():
            if key in part:
                out[name] = part[key]
        if "enum" in part:
            out["choices"] = list(part["enum"])
        elif "const" in part:
            out["choices"] = [part["const"]]
        if isinstance(part.get("items"), dict) and (inner := _schema_constraints(part["items"])):
            out["each"] = inner
    return out


def _constraints_text(constraints: dict[str, Any]) -> str:
    parts = []
    for name, value in constraints.items():
        if name == "choices":
            parts.append("one of " + ", ".join(map(repr, value)))
        elif name == "each":
            parts.append(f"each: {_constraints_text(value)}")
        else:
            parts.append(WORDS[name].format(value))
    return "; ".join(parts)


def _value(value: Any) -> str:
    """A default as an author would write it: ``'soft'``, ``7``, ``/tmp`` (not PosixPath)."""
    plain = (str, int, float, bool, list, tuple, dict, type(None))
    return repr(value) if isinstance(value, plain) else str(value)


def _trigger_text(trigger: dict[str, Any]) -> str:
    """``alert NginxDown {severity="critical", instance=~"web-.*"} → host={{ labels.instance }}``:
    Alertmanager's own selector notation; ``=~`` is a full regular-expression match."""
    matchers = ", ".join(f"{label}{m['op']}{json.dumps(m['value'], ensure_ascii=False)}"
                         for label, m in trigger["matchers"].items())
    text = f"alert {trigger['alert']}" + (f" {{{matchers}}}" if matchers else "")
    if trigger["params"]:
        text += " → " + ", ".join(f"{k}={v}" for k, v in trigger["params"].items())
    return text
