"""The ``runbook`` decorator and the ``Runbook`` definition object it returns."""

from __future__ import annotations

import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar, overload

from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic.fields import FieldInfo

from selfdrive.sdk.command import MASK, OPERAND_CHECK
from selfdrive.sdk.context import Context
from selfdrive.sdk.errors import DefinitionError, ParameterError
from selfdrive.sdk.triggers import AlertTrigger
from selfdrive.sdk.vocabulary import Risk, parse_duration, short_repr

F = TypeVar("F", bound=Callable[..., Any])
#: Integer parameters are 64-bit: what commands, SQLite and JSON readers take.
MAX_INT = 2**63 - 1
HookKind = Literal["precondition", "verify", "rollback"]
DEFAULT_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Hook:
    """A precondition, verification or rollback attached to a runbook."""

    kind: HookKind
    fn: Callable[..., Any]
    params: tuple[str, ...]
    attempts: int = 1
    interval: timedelta = timedelta(0)

    @property
    def name(self) -> str:
        return self.fn.__name__


@dataclass(frozen=True)
class Param:
    """One runbook parameter as the signature declares it."""

    name: str
    annotation: Any
    required: bool
    default: Any
    secret: bool

    @property
    def type_name(self) -> str:
        """A readable type for `show`: constraints (``Annotated`` metadata, at any depth)
        left out, as `show` lists them apart; an ``Operand`` is named as such."""
        return _type_text(self.annotation)


def _type_text(ann: Any) -> str:
    if ann is Ellipsis:  # tuple[int, ...]
        return "..."
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        if any(m is OPERAND_CHECK for m in ann.__metadata__):
            return "Operand"
        return _type_text(args[0])
    if origin is typing.Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_text(a) for a in args)
    if origin is not None and args:
        name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        return f"{name}[{', '.join(_type_text(a) for a in args)}]"
    if isinstance(ann, type):
        return ann.__name__
    return (str(ann).replace("typing.", "").replace("pydantic.types.", "")
            .replace("pathlib.", ""))


class Runbook:
    """A runbook definition: its spec, its parameter schema and the plain function.

    Calling it validates the parameters and calls the function with ``ctx``; nothing
    else happens (no policy, journal or targets), so authors can unit-test it.
    """

    def __init__(self, fn: Callable[..., Any], *, risk: Risk, name: str | None = None,
                 domain: str | None = None, triggers: Sequence[AlertTrigger] = (),
                 schedule: str | None = None, lock: str | None = None,
                 timeout: str | float | timedelta | None = None, tags: Iterable[str] = (),
                 approval: Literal["policy", "always"] = "policy",
                 description: str | None = None) -> None:
        where = _where(fn)
        if not isinstance(risk, Risk):
            raise DefinitionError(f"{where}: risk= must be a selfdrive.Risk, not {risk!r}")
        if approval not in ("policy", "always"):
            raise DefinitionError(f"{where}: approval= must be 'policy' or 'always', "
                                  f"not {approval!r}")
        for trigger in triggers:
            if not isinstance(trigger, AlertTrigger):
                raise DefinitionError(f"{where}: triggers= takes alert(...) specs, "
                                      f"not {trigger!r}")
        try:
            self.timeout = DEFAULT_TIMEOUT if timeout is None else parse_duration(timeout)
        except ValueError as exc:
            raise DefinitionError(f"{where}: timeout=: {exc}") from None
        if self.timeout <= timedelta(0):
            raise DefinitionError(f"{where}: timeout= must be positive")
        self.fn = fn
        functools.update_wrapper(self, fn)
        self.name = name or fn.__name__.replace("_", "-")
        self.risk = risk
        self.domain = domain
        self.triggers: tuple[AlertTrigger, ...] = tuple(triggers)
        self.schedule = schedule
        self.lock = lock
        self.tags: tuple[str, ...] = tuple(tags)
        self.approval = approval
        self.description = inspect.cleandoc(description or fn.__doc__ or "").strip()
        self.params: tuple[Param, ...] = _signature_params(fn, where)
        self.params_model = _params_model(self.name, self.params, where)
        self.preconditions: list[Hook] = []
        self.verifications: list[Hook] = []
        self.rollbacks: list[Hook] = []
        code = getattr(fn, "__code__", None)
        self.source_file: str = code.co_filename if code else "<unknown>"
        self.source_line: int = code.co_firstlineno if code else 0
        self._frozen = False
        for trigger in self.triggers:
            for param in trigger.params:
                if param not in self.param_names:
                    raise DefinitionError(f"{where}: alert({trigger.name!r}) maps unknown "
                                          f"parameter {param!r}")

    # -- the spec ----------------------------------------------------------------

    @property
    def summary(self) -> str:
        """The docstring's first line: what ``selfdrive list`` shows."""
        return self.description.splitlines()[0] if self.description else ""

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def secret_params(self) -> frozenset[str]:
        return frozenset(p.name for p in self.params if p.secret)

    @property
    def location(self) -> str:
        return f"{self.source_file}:{self.source_line}"

    def __repr__(self) -> str:
        return f"<Runbook {self.name} risk={self.risk.name} at {self.location}>"

    # -- parameters --------------------------------------------------------------

    def validate_params(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``raw`` against the signature; every bad field is reported at once.

        The values come back as the journal will give them back: the journal keeps a
        run's parameters as JSON and a resume validates that JSON again, so the JSON is
        validated here too. A run then renders the same commands (and plan hash) when it
        is requested and when it is resumed, whatever the types.
        """
        try:
            first = self.params_model.model_validate(dict(raw))
            secrets = {n: getattr(first, n) for n in self.secret_params}
            public = [p.name for p in self.params if not p.secret]
            kept = json.loads(json.dumps(self._as_json(first, public), sort_keys=True))
            model = self.params_model.model_validate({**kept, **secrets})
        except ValidationError as exc:
            raise ParameterError(self._explain(exc)) from None
        except ValueError as exc:  # a value pydantic cannot write as JSON
            raise ParameterError(f"runbook {self.name!r}: parameters cannot be kept in the "
                                 f"journal as JSON: {exc}") from None
        values = {p.name: getattr(model, p.name) for p in self.params}
        huge = [name for name, value in values.items() if _has_huge_int(value)]
        if huge:
            raise ParameterError(f"runbook {self.name!r}: " + "; ".join(
                f"parameter {name!r}: integer out of the 64-bit range "
                f"({-MAX_INT - 1} … {MAX_INT})" for name in huge))
        return values

    def masked_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` as JSON-safe data with every secret replaced by a mask.

        Declared parameters are written as their types write JSON (an enum as its
        value, a set sorted), which is what :meth:`validate_params` reads back.
        """
        declared = {k: v for k, v in values.items()
                    if k in self.params_model.model_fields and k not in self.secret_params
                    and not isinstance(v, SecretStr)}
        written = self._as_json(self.params_model.model_construct(**declared), declared)
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key in self.secret_params or isinstance(value, SecretStr):
                out[key] = MASK
            elif key in declared:
                out[key] = written[key]
            else:
                out[key] = _jsonable(value)
        return out

    def _as_json(self, model: BaseModel, fields: Iterable[str]) -> dict[str, Any]:
        """``fields`` of the model as JSON data; sets sorted, so that no process's hash
        order shows in a plan."""
        fields = set(fields)
        data = model.model_dump(mode="json", include=fields, warnings=False)
        for name in fields:
            if isinstance(getattr(model, name), set | frozenset):
                data[name] = sorted(data[name], key=lambda item: json.dumps(item,
                                                                           sort_keys=True))
        return data

    def _explain(self, exc: ValidationError) -> str:
        lines = []
        names = ", ".join(self.param_names) or "none"
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "?"
            msg = err["msg"].removeprefix("Value error, ")
            top = str(err["loc"][0]) if err["loc"] else "?"
            if err["type"] == "extra_forbidden":
                lines.append(f"parameter {loc!r}: not a parameter of this runbook "
                             f"(parameters: {names})")
            elif err["type"] == "missing":
                lines.append(f"parameter {loc!r}: required")
            elif top in self.secret_params:
                lines.append(f"parameter {loc!r}: {msg}")
            else:
                lines.append(f"parameter {loc!r}: {msg} "
                             f"(got {short_repr(err.get('input'), 80)})")
        return f"runbook {self.name!r}: " + "; ".join(lines)

    # -- calling -----------------------------------------------------------------

    def __call__(self, ctx: Context, **params: Any) -> Any:
        if not isinstance(ctx, Context):
            raise TypeError(f"{self.name}: first argument must be a selfdrive Context, "
                            f"not {type(ctx).__name__}")
        return self.fn(ctx, **self.validate_params(params))

    def call_hook(self, hook: Hook, ctx: Context, values: Mapping[str, Any]) -> Any:
        """Call ``hook`` with the parameters it names, taken from validated ``values``."""
        return hook.fn(ctx, **{name: values[name] for name in hook.params})

    # -- hooks -------------------------------------------------------------------

    def precondition(self, fn: F) -> F:
        """Attach a check that must return true before the body runs (read-only)."""
        self._attach("precondition", fn, self.preconditions)
        return fn

    @overload
    def verify(self, fn: F, /) -> F: ...
    @overload
    def verify(self, *, attempts: int = 1,
               interval: str | float | timedelta = 0) -> Callable[[F], F]: ...

    def verify(self, fn: F | None = None, /, *, attempts: int = 1,  # type: ignore[misc]
               interval: str | float | timedelta = 0) -> F | Callable[[F], F]:
        """Attach a verification (read-only), tried up to ``attempts`` times ``interval`` apart."""
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise DefinitionError(f"{self.name}: verify(attempts=) must be a positive integer")
        try:
            pause = parse_duration(interval)
        except ValueError as exc:
            raise DefinitionError(f"{self.name}: verify(interval=): {exc}") from None

        def attach(f: F) -> F:
            self._attach("verify", f, self.verifications, attempts=attempts, interval=pause)
            return f

        return attach(fn) if fn is not None else attach

    def rollback(self, fn: F) -> F:
        """Attach what to do when the body fails or verification fails."""
        if self.rollbacks:
            raise DefinitionError(f"{_where(fn)}: runbook {self.name!r} already has a rollback "
                                  f"({self.rollbacks[0].name})")
        self._attach("rollback", fn, self.rollbacks)
        return fn

    def _attach(self, kind: HookKind, fn: Callable[..., Any], into: list[Hook],
                **options: Any) -> None:
        if self._frozen:
            raise DefinitionError(f"{_where(fn)}: runbook {self.name!r} is frozen; attach hooks "
                                  f"in the runbook's own file")
        if not callable(fn):
            raise DefinitionError(f"{self.name}: .{kind} decorates functions, not {fn!r}")
        into.append(Hook(kind=kind, fn=fn, params=_hook_params(self, kind, fn), **options))

    def freeze(self) -> Runbook:
        """Refuse further hooks; the registry freezes every runbook it loads."""
        self._frozen = True
        return self


@overload
def runbook(fn: F, /) -> Runbook: ...
@overload
def runbook(*, risk: Risk, name: str | None = None, domain: str | None = None,
            triggers: Sequence[AlertTrigger] = (), schedule: str | None = None,
            lock: str | None = None, timeout: str | float | timedelta | None = None,
            tags: Iterable[str] = (), approval: Literal["policy", "always"] = "policy",
            description: str | None = None) -> Callable[[Callable[..., Any]], Runbook]: ...


def runbook(fn: Callable[..., Any] | None = None, /,
            **options: Any) -> Runbook | Callable[[Callable[..., Any]], Runbook]:
    """Declare a runbook. ``risk=`` is required; the README's "Writing a runbook" lists the options.

    Returns a :class:`Runbook`; decorating registers nothing (the registry collects).
    """
    if fn is not None:
        raise DefinitionError(f"{_where(fn)}: @runbook needs risk=, e.g. "
                              f"@runbook(risk=Risk.LOW)")
    if "risk" not in options:
        raise DefinitionError("@runbook needs risk=, e.g. @runbook(risk=Risk.LOW)")
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise DefinitionError(f"@runbook got unknown option(s) {', '.join(unknown)}; "
                              f"options: {', '.join(sorted(_OPTIONS))}")

    def decorate(f: Callable[..., Any]) -> Runbook:
        return Runbook(f, **options)

    return decorate


_OPTIONS = frozenset(inspect.signature(Runbook.__init__).parameters) - {"self", "fn"}


def _where(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return getattr(fn, "__qualname__", repr(fn))
    return f"{code.co_filename}:{code.co_firstlineno} ({fn.__name__})"


def _signature_params(fn: Callable[..., Any], where: str) -> tuple[Param, ...]:
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY,
                                            params[0].POSITIONAL_OR_KEYWORD):
        raise DefinitionError(f"{where}: a runbook's first parameter must be the context (ctx)")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # unresolved forward references name the culprit
        raise DefinitionError(f"{where}: cannot resolve annotations: {exc}") from None
    ctx_type = hints.get(params[0].name, Context)
    if typing.get_origin(ctx_type) is typing.Annotated:
        ctx_type = typing.get_args(ctx_type)[0]
    if ctx_type is not Any and not (isinstance(ctx_type, type) and issubclass(ctx_type, Context)):
        raise DefinitionError(f"{where}: a runbook's first parameter must be the context (ctx), "
                              f"not {params[0].name!r} annotated {ctx_type!r}")
    out = []
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise DefinitionError(f"{where}: *args/**kwargs are not allowed; declare each "
                                  f"parameter")
        if p.name not in hints:
            raise DefinitionError(f"{where}: parameter {p.name!r} needs a type annotation")
        ann = hints[p.name]
        out.append(Param(name=p.name, annotation=ann, required=p.default is p.empty,
                         default=None if p.default is p.empty else p.default,
                         secret=_is_secret(ann)))
    return tuple(out)


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


def _params_model(name: str, params: tuple[Param, ...], where: str) -> type[BaseModel]:
    fields: dict[str, Any] = {
        p.name: (p.annotation, ... if p.required else p.default) for p in params
    }
    model_name = "Params_" + "".join(c if c.isalnum() else "_" for c in name)
    try:
        # Defaults are validated like given values: ``x: float = 0`` is 0.0 either way;
        # inf and nan are never a sane count, size or threshold, and JSON cannot hold them.
        config = ConfigDict(extra="forbid", arbitrary_types_allowed=False,
                            validate_default=True, allow_inf_nan=False)
        model: type[BaseModel] = create_model(model_name, __config__=config, **fields)
    except Exception as exc:
        first_line = str(exc).splitlines()[0]
        raise DefinitionError(f"{where}: parameter types not usable: {first_line}") from None
    for p in params:
        if p.required or isinstance(p.default, FieldInfo):
            continue
        try:  # a default that does not fit its type is the author's mistake: say so now
            TypeAdapter(p.annotation).validate_python(p.default)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise DefinitionError(f"{where}: parameter {p.name!r}: its default {p.default!r} "
                                  f"does not fit its type {p.type_name}: {reason}") from None
    return model


def _hook_params(rb: Runbook, kind: str, fn: Callable[..., Any]) -> tuple[str, ...]:
    where = _where(fn)
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise DefinitionError(f"{where}: a {kind} hook's first parameter must be the context")
    names = []
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise DefinitionError(f"{where}: {kind} hooks take named runbook parameters, "
                                  f"not *args/**kwargs")
        if p.name not in rb.param_names:
            known = ", ".join(rb.param_names) or "none"
            raise DefinitionError(f"{where}: {kind} hook parameter {p.name!r} is not a "
                                  f"parameter of runbook {rb.name!r} (parameters: {known})")
        names.append(p.name)
    return tuple(names)


def _has_huge_int(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return not -MAX_INT - 1 <= value <= MAX_INT
    if isinstance(value, list | tuple | set | frozenset):
        return any(_has_huge_int(v) for v in value)
    if isinstance(value, Mapping):
        return any(_has_huge_int(v) for v in value.values())
    return False


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, list | tuple | set | frozenset):
            return [_jsonable(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        return str(value)
