"""Command templates that pass a plain ``str`` parameter as an operand with no ``--``.

Every interpolated value is shell-quoted, so ``x; rm -rf /`` arrives as one literal
argument; but an argument that starts with ``-`` is still read as an option
(``tar -cf x {{ names }}`` with ``--checkpoint-action=exec=…``). ``selfdrive lint``
reports a ``{{ param }}`` that stands alone as a word of a command, where the
parameter is a plain ``str`` (or a list or optional of one), unless ``--`` came
before it in that command. Not reported: the command's own name (the first word),
the target of a redirection, ``--opt={{ p }}`` and other words with more in them, an
expression with filters, and parameters typed :data:`selfdrive.Operand` or
constrained otherwise (``Annotated``, ``Literal``, paths, numbers).

The templates are the string literals of the runbook's file that hold ``{{``,
read with :mod:`ast` (a docstring is never a command), except those inside the
functions of other runbooks of that file (``siblings``) and their hooks; in a call
such as ``ctx.run("rm {{ name }}", name=n)`` the keyword arguments shadow parameters.
"""

from __future__ import annotations

import ast
import re
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from selfdrive.sdk.runbook import Runbook

_EXPRESSION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_BLOCK = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.S)
_NAME = re.compile(r"[A-Za-z_]\w*")
#: Words that end one command and start the next.
_SEPARATORS = frozenset({";", "|", "||", "&", "&&", "(", ")", "{", "}", "!", "then", "do",
                         "else", "elif", "if", "while", "until", "$(", "`"})
_TOKEN = re.compile(r"\|\||&&|\$\(|[;|&()`\n]|[^\s;|&()`]+")
_REDIRECT = re.compile(r"^\d*(?:>>?|<|>&|<&|&>)$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
_SLOT = "\x00{}\x00"


@dataclass(frozen=True)
class OperandUse:
    """One ``{{ param }}`` passed as an operand with nothing to stop it being an option."""

    line: int
    param: str
    template: str


def unguarded_operands(rb: Runbook, siblings: Iterable[Runbook] = ()) -> list[OperandUse]:
    """Each (line, parameter) of ``rb``'s file where a plain ``str`` parameter is an
    operand of a command template with no ``--`` before it. ``siblings``: the other
    runbooks defined in the same file, whose own functions are theirs to answer for."""
    plain = {p.name for p in rb.params if _plain_str(p.annotation)}
    if not plain:
        return []
    try:
        tree = ast.parse(Path(rb.source_file).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return []  # a file that loaded but cannot be read again: nothing to say
    theirs = {line for other in siblings if other is not rb for line in _first_lines(other)}
    foreign = [(node.lineno, node.end_lineno or node.lineno) for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
               and min([node.lineno, *(d.lineno for d in node.decorator_list)]) in theirs]
    found: dict[tuple[int, str], OperandUse] = {}
    for line, template, shadowed in _templates(tree):
        if any(start <= line <= end for start, end in foreign):
            continue
        for name in operand_names(template):
            if name in plain and name not in shadowed:
                found.setdefault((line, name), OperandUse(line, name, template))
    return sorted(found.values(), key=lambda use: (use.line, use.param))


def operand_names(template: str) -> list[str]:
    """The bare ``{{ name }}`` expressions that stand alone as a word in a command of
    ``template``, not after ``--``, not as the command itself or a redirection target."""
    expressions: list[str] = []

    def slot(match: re.Match[str]) -> str:
        expressions.append(match.group(1))
        return _SLOT.format(len(expressions) - 1)

    text = _EXPRESSION.sub(slot, _BLOCK.sub(" ", template))
    names: list[str] = []
    start, guarded, redirect = True, False, False
    for word in _TOKEN.findall(text):
        if word in _SEPARATORS or word == "\n":
            start, guarded, redirect = True, False, False
            continue
        if _REDIRECT.match(word):
            redirect = True
            continue
        if start and _ASSIGNMENT.match(word):  # VAR=value before the command
            continue
        if word == "--":
            guarded = True
        elif not (start or guarded or redirect):
            whole = re.fullmatch("\x00(\\d+)\x00", word)
            if whole is not None:
                expression = expressions[int(whole.group(1))]
                if _NAME.fullmatch(expression):
                    names.append(expression)
        start, redirect = False, False
    return names


def _first_lines(rb: Runbook) -> set[int]:
    """Where ``rb``'s function and hooks start (their first decorator's line)."""
    fns = [rb.fn, *(h.fn for h in (*rb.preconditions, *rb.verifications, *rb.rollbacks))]
    return {code.co_firstlineno for fn in fns if (code := getattr(fn, "__code__", None))}


def _templates(tree: ast.AST) -> Iterator[tuple[int, str, frozenset[str]]]:
    """Every string literal holding ``{{`` (docstrings and bare strings aside), with the
    keyword names of the call it is the first argument of."""
    statements = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    calls: dict[int, frozenset[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            calls[id(node.args[0])] = frozenset(k.arg for k in node.keywords if k.arg)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and "{{" in node.value and id(node) not in statements):
            yield node.lineno, node.value, calls.get(id(node), frozenset())


def _plain_str(annotation: object) -> bool:
    """``str``, or an optional or a list, tuple or set of it: nothing that constrains it."""
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args: Iterable[object] = [a for a in typing.get_args(annotation) if a is not type(None)]
    elif origin in (list, tuple, set, frozenset):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
    else:
        return False
    args = list(args)
    return bool(args) and all(_plain_str(a) for a in args)
