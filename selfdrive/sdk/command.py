"""Commands as values with two faces: raw for the wire, masked for everything else.

A command template is rendered by a sandboxed Jinja2 with undefined variables as
errors, and every interpolated value is shell-quoted unless the author wraps it in
:func:`safe` (or the ``| safe`` filter). The template is rendered twice: once with
secret values for the wire, once with masks for logs, plans and the journal, so the
masked face can never contain a secret, whatever filters the template applies.

A secret is known by its value, not only by its type: a runbook that unwraps a
``SecretStr`` (``token.get_secret_value()``) and passes the plain string still gets
it masked, because every value of the run's secrets is masked wherever it appears.
"""

from __future__ import annotations

import enum
import functools
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, SecretStr

from selfdrive.sdk.errors import TemplateError

if TYPE_CHECKING:
    from jinja2 import Template

MASK = "******"
MAX_TEMPLATE_CHARS = 64 * 1024
MAX_RENDERED_CHARS = 1024 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Safe(str):
    """A trusted shell fragment: interpolated as it is, never quoted."""

    __slots__ = ()


def safe(value: object) -> Safe:
    """Mark a value as a trusted shell fragment (an operator, a flag the author wrote)."""
    return Safe(value)


def _operand(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if value.startswith("-"):
        raise ValueError("must not start with '-' (a command would read it as an option)")
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte")
    return value


#: Validates an :data:`Operand`; ``selfdrive lint`` knows a parameter by it.
OPERAND_CHECK = AfterValidator(_operand)

#: A parameter a command takes as an operand (a path, a name, a pattern). Quoting stops
#: ``; rm -rf /`` but not ``--checkpoint-action=exec=…``: a value that starts with
#: ``-`` reaches the command as one argument, and the command reads it as an option.
#: An Operand refuses it (and empty values and NUL bytes) before anything runs.
Operand = Annotated[str, OPERAND_CHECK]


@dataclass(frozen=True)
class Command:
    """A rendered command. ``str()`` gives the masked face; only targets read ``raw``.

    ``env`` holds variables for this command's process alone, with secret values
    revealed (only targets read it); ``masked_env`` is the same with secrets masked.
    """

    masked: str
    raw: str = field(repr=False)
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    masked_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __str__(self) -> str:
        return self.masked


def with_env(command: Command, env: Mapping[str, Any] | None) -> Command:
    """``command`` with variables for its process: ``env={"NAME": value}``.

    A value is a string, a number, or a ``SecretStr`` (revealed to the command, masked
    everywhere else). A bad name or value is a :class:`TemplateError` naming it.
    """
    if env is None:
        return command
    where = f"command {command.masked!r}"
    if not isinstance(env, Mapping):
        raise TemplateError(f"{where}: env= takes a mapping of variable names to values, not "
                            f"{type(env).__name__}")
    raw: list[tuple[str, str]] = []
    masked: list[tuple[str, str]] = []
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise TemplateError(f"{where}: env={{{name!r}: …}}: not an environment variable "
                                f"name (letters, digits and _, not starting with a digit)")
        if isinstance(value, SecretStr):
            real, shown = value.get_secret_value(), MASK
        elif isinstance(value, str):
            real = shown = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            real = shown = str(value)
        else:
            raise TemplateError(f"{where}: env={{{name!r}: …}}: a value must be a string, a "
                                f"number or a SecretStr, not {type(value).__name__}")
        if "\0" in real:
            raise TemplateError(f"{where}: env={{{name!r}: …}}: the value contains a NUL "
                                f"character")
        raw.append((name, real))
        masked.append((name, shown))
    return replace(command, env=tuple(raw), masked_env=tuple(masked))


def _quote(value: object) -> str:
    if isinstance(value, Safe):
        return str(value)
    if isinstance(value, set | frozenset):  # in one order, whatever the hash seed
        value = sorted(value, key=str)
    if isinstance(value, list | tuple):
        return " ".join(_quote(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return shlex.quote(_plain(value))


def _make_environment() -> Any:
    from jinja2.sandbox import SandboxedEnvironment

    class _Env(SandboxedEnvironment):
        # The sandbox blocks attribute escapes but not memory bombs such as 'x' * 10**9.
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, int) and right > 64:
                raise TemplateError("exponent too large in template")
            if operator == "*":
                size, count = (left, right) if isinstance(right, int) else (right, left)
                if isinstance(count, int) and hasattr(size, "__len__") \
                        and len(size) * count > MAX_RENDERED_CHARS:
                    raise TemplateError("template expression too large")
            return super().call_binop(context, operator, left, right)

    from jinja2 import StrictUndefined

    env = _Env(undefined=StrictUndefined, autoescape=False, finalize=_quote,
               keep_trailing_newline=True)
    env.filters["safe"] = safe
    env.filters["quote"] = lambda v: Safe(_quote(v))
    return env


@functools.cache
def _environment() -> Any:
    return _make_environment()


@functools.cache
def _text_environment() -> Any:
    env = _make_environment()
    env.finalize = _plain
    return env


@functools.lru_cache(maxsize=512)
def _compile_text(template: str) -> Template:
    from jinja2 import TemplateSyntaxError

    try:
        return _text_environment().from_string(template)  # type: ignore[no-any-return]
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error in {template!r}: {exc.message}") from None


def _plain(value: object) -> str:
    """A value as text: an enum member by its value, as the journal keeps it."""
    if value is None:
        raise TemplateError("a template interpolated None; pass a value or leave it out")
    if isinstance(value, enum.Enum):
        value = value.value
    return str(value)


def render_text(template: str, variables: Mapping[str, Any]) -> str:
    """Render a non-shell template (a lock key, a label) in the same sandbox, unquoted.

    Secrets are masked: a key or label is stored and shown, so it must never hold one.
    """
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template longer than {MAX_TEMPLATE_CHARS} characters")
    compiled = _compile_text(template)
    return _render(compiled, template, {k: _unwrap(v, reveal=False)
                                        for k, v in variables.items()})


@functools.lru_cache(maxsize=512)
def _compile(template: str) -> Template:
    from jinja2 import TemplateSyntaxError

    try:
        return _environment().from_string(template)  # type: ignore[no-any-return]
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error in {template!r}: {exc.message} "
                            f"(line {exc.lineno})") from None


def render_command(template: str | Command, variables: Mapping[str, Any], *,
                   secrets: Iterable[str] = ()) -> Command:
    """Render ``template`` with ``variables`` into a :class:`Command`.

    ``SecretStr`` values are unwrapped on the raw face and replaced by a mask on the
    masked face. Their values, and ``secrets`` (every secret the run knows), are also
    masked wherever they appear on the masked face and in error messages: in a plain
    string variable, in the template text itself, in a given :class:`Command`.
    """
    known = known_secrets([*secret_values(variables.values()), *secrets])
    if isinstance(template, Command):
        masked_face = mask_secrets(template.masked, known)
        return template if masked_face == template.masked else \
            Command(masked=masked_face, raw=template.raw)
    if not isinstance(template, str):
        raise TemplateError(f"a command must be a string template, not {type(template).__name__}")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"command template longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        compiled = _compile(template)
        raw_vars = {k: _unwrap(v, reveal=True) for k, v in variables.items()}
        masked_vars = {k: _mask(v, known) for k, v in variables.items()}
        # Masked face first: an error message quotes values (e.g. a missing dict key), and
        # only the masked face may be quoted.
        masked = mask_secrets(_render(compiled, template, masked_vars), known)
    except TemplateError as exc:  # the message quotes the template, which may hold one
        raise TemplateError(mask_secrets(str(exc), known)) from None
    raw: str | None
    try:
        raw = _render(compiled, template, raw_vars)
    except TemplateError:
        if not known:
            raise
        raw = None
    if raw is None:
        raise TemplateError(f"template {mask_secrets(repr(template), known)} failed to render "
                            f"with the secret values (details withheld so that no secret "
                            f"leaks)")
    if "\0" in raw:  # a shell reads its command up to the first NUL: it would run a prefix
        raise TemplateError(f"template {mask_secrets(repr(template), known)} rendered a NUL "
                            f"character, which no shell command can hold")
    return Command(masked=masked, raw=raw)


def secret_values(values: Iterable[Any]) -> list[str]:
    """The plain values of the ``SecretStr`` among ``values`` (and inside lists of them)."""
    out: list[str] = []
    for value in values:
        if isinstance(value, SecretStr):
            out.append(value.get_secret_value())
        elif isinstance(value, list | tuple):
            out.extend(secret_values(value))
    return out


def known_secrets(values: Iterable[str]) -> tuple[str, ...]:
    """Distinct non-empty secrets, longest first, so a secret containing another is
    masked whole."""
    return tuple(sorted({v for v in values if v}, key=len, reverse=True))


def mask_secrets(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every occurrence of each of ``secrets`` (longest first) masked."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _mask(value: Any, known: Sequence[str]) -> Any:
    """A variable as the masked face sees it: secrets masked before quoting and filters,
    so that no filter (``upper``, ``reverse``) can turn a secret into unmaskable text."""
    if isinstance(value, SecretStr) or (isinstance(value, str) and value in known):
        return Safe(MASK)
    if isinstance(value, Safe):
        return Safe(mask_secrets(value, known))
    if isinstance(value, str):
        return mask_secrets(value, known)
    if isinstance(value, list | tuple):
        return [_mask(v, known) for v in value]
    if isinstance(value, Mapping):
        return {k: _mask(v, known) for k, v in value.items()}
    return value


def _unwrap(value: Any, *, reveal: bool) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value() if reveal else Safe(MASK)
    if isinstance(value, list | tuple):
        return [_unwrap(v, reveal=reveal) for v in value]
    return value


def _render(compiled: Template, source: str, variables: Mapping[str, Any]) -> str:
    from jinja2 import TemplateError as JinjaError
    from jinja2 import UndefinedError
    from jinja2.exceptions import SecurityError

    try:
        text = compiled.render(variables)
    except UndefinedError as exc:
        raise TemplateError(f"template {source!r}: {exc.message} "
                            f"(pass it as a keyword argument or a runbook parameter)") from None
    except SecurityError as exc:
        raise TemplateError(f"template {source!r}: unsafe access refused: {exc}") from None
    except TemplateError as exc:
        raise TemplateError(f"template {source!r}: {exc}") from None
    except JinjaError as exc:
        raise TemplateError(f"template {source!r}: {exc}") from None
    except Exception as exc:  # e.g. {{ 1 / 0 }}: the template, not selfdrive, is wrong
        raise TemplateError(f"template {source!r}: {type(exc).__name__}: {exc}") from None
    if len(text) > MAX_RENDERED_CHARS:
        raise TemplateError(f"template {source!r} rendered to more than {MAX_RENDERED_CHARS} chars")
    return text
