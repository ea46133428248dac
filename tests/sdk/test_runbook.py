"""The @runbook decorator, its Runbook object and the shared vocabulary."""

from __future__ import annotations

import enum
import itertools
import json
import re
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Optional

import pytest
from pydantic import Field, SecretStr

from selfdrive import (
    AlertTrigger,
    Command,
    CommandResult,
    Context,
    Level,
    Mode,
    Operand,
    Risk,
    Runbook,
    RunState,
    alert,
    runbook,
)
from selfdrive.sdk import Operand as SdkOperand
from selfdrive.sdk.command import MASK
from selfdrive.sdk.errors import DefinitionError, ParameterError, UsageError
from selfdrive.sdk.runbook import DEFAULT_TIMEOUT, Hook
from selfdrive.sdk.vocabulary import TRANSITIONS, parse_duration

THIS_FILE = str(Path(__file__).resolve())


class StubContext(Context):
    """The smallest concrete context: records what it is asked, runs nothing."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self._params = dict(params or {})
        self.logged: list[str] = []
        self.notes: dict[str, Any] = {}

    @property
    def run_id(self) -> str:
        return "run-1"

    @property
    def mode(self) -> Mode:
        return Mode.APPROVAL

    @property
    def params(self) -> Mapping[str, Any]:
        return self._params

    def run(self, cmd: str | Command, *, readonly: bool = False, timeout: float | None = None,
            check: bool = False, **variables: Any) -> CommandResult:
        command = cmd if isinstance(cmd, Command) else Command(masked=cmd, raw=cmd)
        return CommandResult(command=command, target="local", exit_code=0)

    def ssh(self, host: str, *, user: str | None = None, port: int | None = None) -> Any:
        raise AssertionError("StubContext reaches no host")

    def hosts(self, names_or_group: Any, *, max_concurrency: int = 10,
              max_errors: int = 1) -> Any:
        raise AssertionError("StubContext reaches no host")

    def ansible(self, playbook: Any, *, hosts: Any, extravars: Any = None,
                readonly: bool = False, timeout: float | None = None) -> Any:
        raise AssertionError("StubContext runs no playbook")

    def log(self, message: str) -> None:
        self.logged.append(message)

    def note(self, key: str, value: Any) -> None:
        self.notes[key] = value


def where(fn: Callable[..., Any]) -> str:
    code = fn.__code__
    return f"{code.co_filename}:{code.co_firstlineno} ({fn.__name__})"


def make_restart(**options: Any) -> Runbook:
    options.setdefault("risk", Risk.LOW)

    @runbook(**options)
    def restart_web_server(ctx: Context, host: str, port: int = 80,
                           token: SecretStr | None = None) -> dict[str, Any]:
        """Restart the web server on a host.

        It stops answering after log rotation.
        """
        ctx.log(f"restarting {host}:{port}")
        return {"host": host, "port": port, "token": token}

    return restart_web_server


# -- the decorator -----------------------------------------------------------------


def test_bare_decorator_is_refused_naming_the_function() -> None:
    def fix(ctx: Context) -> None: ...

    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"{where(fix)}: @runbook needs risk=, e.g. @runbook(risk=Risk.LOW)") + "$"):
        runbook(fix)


def test_missing_risk_is_refused() -> None:
    with pytest.raises(DefinitionError, match="^" + re.escape(
            "@runbook needs risk=, e.g. @runbook(risk=Risk.LOW)") + "$"):
        runbook(domain="web")  # type: ignore[call-overload]


@pytest.mark.parametrize("risk", ["low", 1, None])
def test_risk_must_be_a_risk(risk: object) -> None:
    def fix(ctx: Context) -> None: ...

    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"{where(fix)}: risk= must be a selfdrive.Risk, not {risk!r}") + "$"):
        runbook(risk=risk)(fix)  # type: ignore[call-overload]


def test_unknown_option_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match=r"^@runbook got unknown option\(s\) domian; "
                                              r"options: approval, description, domain, "):
        runbook(risk=Risk.LOW, domian="web")  # type: ignore[call-overload]


def test_definition_error_is_a_usage_error() -> None:
    assert issubclass(DefinitionError, UsageError)
    assert DefinitionError("x").exit_code == 2


def test_name_comes_from_the_function() -> None:
    rb = make_restart()

    assert isinstance(rb, Runbook)
    assert rb.name == "restart-web-server"


def test_name_can_be_given() -> None:
    assert make_restart(name="web.restart").name == "web.restart"


def test_description_and_summary_come_from_the_docstring() -> None:
    rb = make_restart()

    assert rb.description == ("Restart the web server on a host.\n\n"
                              "It stops answering after log rotation.")
    assert rb.summary == "Restart the web server on a host."


def test_description_option_wins_over_the_docstring() -> None:
    rb = make_restart(description="  Bounce it.\n  Twice.  ")

    assert rb.summary == "Bounce it."
    assert rb.description == "Bounce it.\nTwice."


def test_no_docstring_gives_empty_summary() -> None:
    @runbook(risk=Risk.READ_ONLY)
    def look(ctx: Context) -> None:
        pass

    assert look.description == ""
    assert look.summary == ""


def test_options_are_kept_on_the_spec() -> None:
    trig = alert("NginxDown", severity="critical", params={"host": "{{ labels.instance }}"})
    rb = make_restart(risk=Risk.MEDIUM, domain="web", triggers=[trig], schedule="*/10 * * * *",
                      lock="{{ host }}", timeout="5m", tags=["nginx", "web"], approval="always")

    assert rb.risk is Risk.MEDIUM
    assert rb.domain == "web"
    assert rb.triggers == (trig,)
    assert rb.schedule == "*/10 * * * *"
    assert rb.lock == "{{ host }}"
    assert rb.timeout == timedelta(minutes=5)
    assert rb.tags == ("nginx", "web")
    assert rb.approval == "always"


def test_defaults() -> None:
    rb = make_restart()

    assert rb.timeout == DEFAULT_TIMEOUT == timedelta(minutes=30)
    assert (rb.domain, rb.schedule, rb.lock, rb.approval) == (None, None, None, "policy")
    assert rb.triggers == ()
    assert rb.tags == ()


def test_wrapper_keeps_the_function_identity() -> None:
    rb = make_restart()

    assert rb.__name__ == "restart_web_server"  # type: ignore[attr-defined]
    assert rb.__doc__ is not None
    assert rb.__doc__.startswith("Restart the web server")
    assert rb.fn.__name__ == "restart_web_server"
    assert rb.source_file == THIS_FILE
    assert rb.location == f"{THIS_FILE}:{rb.fn.__code__.co_firstlineno}"
    assert repr(rb) == f"<Runbook restart-web-server risk=LOW at {rb.location}>"


def test_function_stays_plainly_callable_without_validation() -> None:
    rb = make_restart()
    ctx = StubContext()

    out = rb.fn(ctx, "web1", port="8080")  # no validation: the string goes through

    assert out == {"host": "web1", "port": "8080", "token": None}
    assert ctx.logged == ["restarting web1:8080"]


def test_calling_the_runbook_validates_and_coerces() -> None:
    rb = make_restart()
    ctx = StubContext()

    out = rb(ctx, host="web1", port="8080", token="hunter2")

    assert out["port"] == 8080
    assert isinstance(out["token"], SecretStr)
    assert out["token"].get_secret_value() == "hunter2"
    assert ctx.logged == ["restarting web1:8080"]


def test_calling_fills_defaults() -> None:
    assert make_restart()(StubContext(), host="web1") == {"host": "web1", "port": 80,
                                                          "token": None}


def test_calling_with_bad_params_never_reaches_the_function() -> None:
    rb = make_restart()
    ctx = StubContext()

    with pytest.raises(ParameterError):
        rb(ctx, host="web1", port="eighty")

    assert ctx.logged == []


def test_calling_without_a_context_is_a_type_error() -> None:
    rb = make_restart()

    with pytest.raises(TypeError, match="^" + re.escape(
            "restart-web-server: first argument must be a selfdrive Context, not dict") + "$"):
        rb({}, host="web1")  # type: ignore[arg-type]


# -- parameters --------------------------------------------------------------------


def test_every_bad_field_is_reported_at_once() -> None:
    rb = make_restart()

    with pytest.raises(ParameterError) as info:
        rb.validate_params({"port": "eighty", "hots": "web1"})

    message = str(info.value)
    assert message.startswith("runbook 'restart-web-server': ")
    assert "parameter 'host': required" in message
    assert "parameter 'port': Input should be a valid integer" in message
    assert "(got 'eighty')" in message
    assert ("parameter 'hots': not a parameter of this runbook "
            "(parameters: host, port, token)") in message
    assert message.count("; parameter ") == 2


def test_missing_parameter_exact_message() -> None:
    with pytest.raises(ParameterError, match="^" + re.escape(
            "runbook 'restart-web-server': parameter 'host': required") + "$"):
        make_restart().validate_params({})


def test_unknown_parameter_exact_message() -> None:
    with pytest.raises(ParameterError, match="^" + re.escape(
            "runbook 'restart-web-server': parameter 'colour': not a parameter of this "
            "runbook (parameters: host, port, token)") + "$"):
        make_restart().validate_params({"host": "a", "colour": "red"})


@pytest.mark.parametrize(("params", "message"), [
    ({"port": "9" * 30}, "parameter 'port': integer out of the 64-bit range "
                         "(-9223372036854775808 … 9223372036854775807)"),
    ({"port": -(2**63) - 1}, "parameter 'port': integer out of the 64-bit range "
                             "(-9223372036854775808 … 9223372036854775807)"),
    ({"port": "9" * 5000}, "parameter 'port': Unable to parse input string as an integer, "
                           "exceeded maximum size (got '" + "9" * 78 + "…)"),
])
def test_an_absurd_integer_is_refused_without_echoing_all_of_it(params: dict[str, Any],
                                                                message: str) -> None:
    with pytest.raises(ParameterError, match="^" + re.escape(
            f"runbook 'restart-web-server': {message}") + "$"):
        make_restart().validate_params({"host": "web1", **params})


def test_the_64_bit_range_is_accepted() -> None:
    values = make_restart().validate_params({"host": "web1", "port": str(2**63 - 1)})

    assert values["port"] == 2**63 - 1


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", float("nan")])
def test_a_float_parameter_must_be_finite(value: Any) -> None:
    @runbook(risk=Risk.LOW)
    def throttle(ctx: Context, share: float, steps: list[float] | None = None) -> None: ...

    for params in ({"share": value}, {"share": 0.5, "steps": [1.0, value]}):
        with pytest.raises(ParameterError, match="Input should be a finite number"):
            throttle.validate_params(params)


def test_parameter_error_is_a_usage_error() -> None:
    assert issubclass(ParameterError, UsageError)


def test_a_bad_secret_value_is_not_echoed() -> None:
    @runbook(risk=Risk.LOW)
    def rotate(ctx: Context, token: SecretStr, pin: Annotated[SecretStr, Field(min_length=8)]
               ) -> None: ...

    with pytest.raises(ParameterError) as info:
        rotate.validate_params({"token": 987654321, "pin": "hunter2"})

    message = str(info.value)
    assert "parameter 'token'" in message
    assert "parameter 'pin'" in message
    assert "987654321" not in message
    assert "hunter2" not in message


@pytest.mark.parametrize(("annotation", "raw", "expected"), [
    (int, "3", 3),
    (float, "2.5", 2.5),
    (bool, "true", True),
    (bool, "no", False),
    (list[int], ["1", "2"], [1, 2]),
    (timedelta, "PT5M", timedelta(minutes=5)),
])
def test_strings_are_coerced_to_the_annotated_type(annotation: Any, raw: Any,
                                                   expected: Any) -> None:
    def fn(ctx: Context, value: Any) -> None: ...
    fn.__annotations__["value"] = annotation

    rb = runbook(risk=Risk.LOW)(fn)

    assert rb.validate_params({"value": raw}) == {"value": expected}


def test_validate_returns_every_parameter_in_order() -> None:
    values = make_restart().validate_params({"host": "web1"})

    assert list(values) == ["host", "port", "token"]


def test_param_metadata() -> None:
    host, port, token = make_restart().params

    assert (host.name, host.required, host.default, host.secret) == ("host", True, None, False)
    assert (port.name, port.required, port.default, port.secret) == ("port", False, 80, False)
    assert host.type_name == "str"
    assert port.type_name == "int"
    assert token.secret
    assert token.type_name.endswith("SecretStr | None")


def test_secret_parameters_are_detected_from_the_schema() -> None:
    @runbook(risk=Risk.LOW)
    def many(ctx: Context, a: SecretStr, b: SecretStr | None = None,
             c: Optional[SecretStr] = None, d: list[SecretStr] | None = None,  # noqa: UP045
             e: Annotated[SecretStr, Field(min_length=1)] | None = None,
             password: str = "", token_name: str = "") -> None: ...

    assert many.secret_params == frozenset({"a", "b", "c", "d", "e"})


def test_masked_params_hides_secrets_by_schema_and_by_type() -> None:
    rb = make_restart()
    values = rb.validate_params({"host": "web1", "token": "hunter2"})

    masked = rb.masked_params(values)

    assert masked == {"host": "web1", "port": 80, "token": MASK}
    assert rb.masked_params({"token": "plain-but-declared-secret"}) == {"token": MASK}
    assert rb.masked_params({"extra": SecretStr("x")}) == {"extra": MASK}
    assert "hunter2" not in json.dumps(masked)


def test_masked_params_is_json_safe() -> None:
    rb = make_restart()
    when = datetime(2024, 5, 6, 7, 8, 9)

    masked = rb.masked_params({"host": "web1", "when": when, "where": Path("/srv"),
                               "items": {1, 2} - {2}, "nested": {"t": (Path("/a"),)}})

    assert json.loads(json.dumps(masked)) == {"host": "web1", "when": str(when),
                                              "where": "/srv", "items": [1],
                                              "nested": {"t": ["/a"]}}


def test_a_default_is_validated_like_a_given_value() -> None:
    @runbook(risk=Risk.LOW)
    def pause(ctx: Context, seconds: float = 0, fast: bool = 0,  # type: ignore[assignment]
              ports: tuple[int, ...] = ("80",)) -> None: ...  # type: ignore[assignment]

    values = pause.validate_params({})

    assert values == {"seconds": 0.0, "fast": False, "ports": (80,)}
    assert type(values["seconds"]) is float


def test_a_default_that_does_not_fit_its_type_names_file_line_and_parameter() -> None:
    def fix(ctx: Context, port: int = None) -> None: ...  # type: ignore[assignment]  # noqa: RUF013

    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"{where(fix)}: parameter 'port': its default None does not fit its type int: "
            f"Input should be a valid integer") + "$"):
        runbook(risk=Risk.LOW)(fix)


class Tier(enum.Enum):
    GOLD = "gold"


def test_values_are_what_the_journal_gives_back() -> None:
    @runbook(risk=Risk.LOW)
    def many(ctx: Context, tier: Tier, opts: dict[str, int], names: frozenset[str],
             token: SecretStr) -> None: ...

    values = many.validate_params({"tier": "gold", "opts": {"b": 2, "a": 1},
                                   "names": ["y", "x"], "token": "hunter2"})
    kept = json.loads(json.dumps(many.masked_params(values)))

    assert kept == {"tier": "gold", "opts": {"a": 1, "b": 2}, "names": ["x", "y"],
                    "token": MASK}
    assert list(values["opts"]) == ["a", "b"]  # the journal sorts keys: so do the values
    assert values["token"].get_secret_value() == "hunter2"
    again = many.validate_params({**kept, "token": values["token"]})
    assert again == values


def test_missing_annotation_names_file_and_line() -> None:
    def fix(ctx: Context, host) -> None: ...  # type: ignore[no-untyped-def]

    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"{where(fix)}: parameter 'host' needs a type annotation") + "$"):
        runbook(risk=Risk.LOW)(fix)
    assert where(fix).startswith(f"{THIS_FILE}:")


@pytest.mark.parametrize("kind", ["args", "kwargs"])
def test_star_args_are_refused(kind: str) -> None:
    def with_args(ctx: Context, *hosts: str) -> None: ...

    def with_kwargs(ctx: Context, **extra: str) -> None: ...

    fn = with_args if kind == "args" else with_kwargs
    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"{where(fn)}: *args/**kwargs are not allowed; declare each parameter") + "$"):
        runbook(risk=Risk.LOW)(fn)


def test_no_context_parameter_is_refused() -> None:
    def nothing() -> None: ...

    def keyword_only(*, ctx: Context) -> None: ...

    def star_first(*args: Any) -> None: ...

    for fn in (nothing, keyword_only, star_first):
        with pytest.raises(DefinitionError, match="^" + re.escape(
                f"{where(fn)}: a runbook's first parameter must be the context (ctx)") + "$"):
            runbook(risk=Risk.LOW)(fn)


def test_first_parameter_that_is_not_a_context_is_refused() -> None:
    def swapped(host: str, ctx: Context) -> None: ...

    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"{where(swapped)}: a runbook's first parameter must be the context (ctx), "
            f"not 'host' annotated <class 'str'>")):
        runbook(risk=Risk.LOW)(swapped)


def test_context_subclasses_and_unannotated_contexts_are_accepted() -> None:
    def sub(ctx: StubContext) -> None: ...

    def bare(ctx) -> None: ...  # type: ignore[no-untyped-def]

    def anything(ctx: Any) -> None: ...

    for fn in (sub, bare, anything):
        assert runbook(risk=Risk.LOW)(fn).params == ()


def test_unresolvable_annotation_names_file_and_line() -> None:
    def fix(ctx: Context, host: NoSuchType) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"{where(fix)}: cannot resolve annotations: name 'NoSuchType' is not defined")):
        runbook(risk=Risk.LOW)(fix)


def test_unusable_parameter_type_names_file_and_line() -> None:
    def fix(ctx: Context, other: Context) -> None: ...

    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"{where(fix)}: parameter types not usable: ")) as info:
        runbook(risk=Risk.LOW)(fix)
    assert "\n" not in str(info.value)


# -- options -----------------------------------------------------------------------


@pytest.mark.parametrize(("timeout", "expected"), [
    ("5m", timedelta(minutes=5)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    (90, timedelta(seconds=90)),
    (0.5, timedelta(seconds=0.5)),
    (timedelta(seconds=7), timedelta(seconds=7)),
])
def test_timeout_is_parsed(timeout: Any, expected: timedelta) -> None:
    assert make_restart(timeout=timeout).timeout == expected


@pytest.mark.parametrize(("timeout", "message"), [
    ("soon", "timeout=: not a duration: 'soon' (use e.g. '30s', '5m', '1h30m')"),
    (-1, "timeout=: duration must not be negative: -1"),
    (True, "timeout=: not a duration: True"),
    (0, "timeout= must be positive"),
    ("0s", "timeout= must be positive"),
    (timedelta(seconds=-3), "timeout=: duration must not be negative: -3s"),
    ("999999999999d", "timeout=: duration '999999999999d' is too long (at most 3650d, "
                      "ten years)"),
    (float("inf"), "timeout=: duration inf is too long (at most 3650d, ten years)"),
    (float("nan"), "timeout=: not a duration: nan"),
    (10**400, "timeout=: duration 1" + "0" * 38 + "… is too long (at most 3650d, ten years)"),
    (timedelta(days=999_999), "timeout=: duration 999999d is too long (at most 3650d, "
                              "ten years)"),
])
def test_bad_timeout_is_a_definition_error(timeout: Any, message: str) -> None:
    with pytest.raises(DefinitionError, match=re.escape(f"(restart_web_server): {message}")
                       + "$"):
        make_restart(timeout=timeout)


def test_bad_approval_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match=re.escape(
            "approval= must be 'policy' or 'always', not 'never'")):
        make_restart(approval="never")


def test_triggers_must_be_alert_specs() -> None:
    with pytest.raises(DefinitionError, match=re.escape(
            "triggers= takes alert(...) specs, not 'NginxDown'")):
        make_restart(triggers=["NginxDown"])


def test_alert_mapping_an_unknown_parameter_is_a_definition_error() -> None:
    trig = alert("NginxDown", params={"hots": "{{ labels.instance }}"})

    with pytest.raises(DefinitionError, match=re.escape(
            "(restart_web_server): alert('NginxDown') maps unknown parameter 'hots'") + "$"):
        make_restart(triggers=[trig])


def test_alert_spec() -> None:
    pattern = re.compile("web-.*")
    trig = alert("NginxDown", severity="critical", instance=pattern,
                 params={"host": "{{ labels.instance }}"})

    assert isinstance(trig, AlertTrigger)
    assert trig.name == "NginxDown"
    assert dict(trig.matchers) == {"severity": "critical", "instance": pattern}
    assert dict(trig.params) == {"host": "{{ labels.instance }}"}
    with pytest.raises(TypeError):
        trig.params["port"] = "1"  # type: ignore[index]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: alert(""), "alert(): the alert name must be a non-empty string"),
    (lambda: alert("  "), "alert(): the alert name must be a non-empty string"),
    (lambda: alert("A", severity=3),  # type: ignore[arg-type]
     "alert('A'): matcher severity= must be a string or a compiled pattern, not int"),
    (lambda: alert("A", params={"host": 1}),  # type: ignore[dict-item]
     "alert('A'): params['host'] must be a template string"),
])
def test_bad_alert_specs(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(DefinitionError, match="^" + re.escape(message) + "$"):
        call()


# -- hooks -------------------------------------------------------------------------


def test_precondition_returns_the_function_unchanged() -> None:
    rb = make_restart()

    def reachable(ctx: Context, host: str) -> bool:
        return host == "web1"

    assert rb.precondition(reachable) is reachable
    assert rb.preconditions == [Hook(kind="precondition", fn=reachable, params=("host",))]
    assert rb.preconditions[0].name == "reachable"
    assert reachable(StubContext(), "web1") is True


def test_several_preconditions_keep_their_order() -> None:
    rb = make_restart()

    @rb.precondition
    def first(ctx: Context) -> bool:
        return True

    @rb.precondition
    def second(ctx: Context, port: int, host: str) -> bool:
        return True

    assert [h.name for h in rb.preconditions] == ["first", "second"]
    assert rb.preconditions[1].params == ("port", "host")


def test_verify_bare() -> None:
    rb = make_restart()

    def answers(ctx: Context, host: str) -> bool:
        return True

    assert rb.verify(answers) is answers
    (hook,) = rb.verifications
    assert (hook.kind, hook.fn, hook.attempts, hook.interval) == ("verify", answers, 1,
                                                                  timedelta(0))


def test_verify_with_options() -> None:
    rb = make_restart()

    @rb.verify(attempts=5, interval="3s")
    def answers(ctx: Context, host: str, port: int) -> bool:
        return True

    assert callable(answers)
    assert answers.__name__ == "answers"
    (hook,) = rb.verifications
    assert (hook.fn, hook.attempts, hook.interval, hook.params) == (
        answers, 5, timedelta(seconds=3), ("host", "port"))


@pytest.mark.parametrize("attempts", [0, -1, True, 1.5, "3"])
def test_verify_bad_attempts(attempts: Any) -> None:
    with pytest.raises(DefinitionError, match="^" + re.escape(
            "restart-web-server: verify(attempts=) must be a positive integer") + "$"):
        make_restart().verify(attempts=attempts)


@pytest.mark.parametrize(("interval", "message"), [
    ("soon", "not a duration: 'soon' (use e.g. '30s', '5m', '1h30m')"),
    (-2, "duration must not be negative: -2"),
    ("9" * 400 + "s", "duration '" + "9" * 38 + "… is too long (at most 3650d, ten years)"),
    (float("nan"), "not a duration: nan"),
])
def test_verify_bad_interval(interval: Any, message: str) -> None:
    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"restart-web-server: verify(interval=): {message}") + "$"):
        make_restart().verify(interval=interval)


def test_rollback_returns_the_function_unchanged() -> None:
    rb = make_restart()

    def page(ctx: Context) -> None: ...

    assert rb.rollback(page) is page
    assert [h.kind for h in rb.rollbacks] == ["rollback"]


def test_second_rollback_is_refused_naming_the_first() -> None:
    rb = make_restart()

    @rb.rollback
    def page(ctx: Context) -> None: ...

    def undo(ctx: Context, host: str) -> None: ...

    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"{where(undo)}: runbook 'restart-web-server' already has a rollback (page)") + "$"):
        rb.rollback(undo)
    assert [h.fn for h in rb.rollbacks] == [page]


@pytest.mark.parametrize("kind", ["precondition", "verify", "rollback"])
def test_hook_parameter_that_is_not_the_runbooks_is_refused(kind: str) -> None:
    rb = make_restart()

    def check(ctx: Context, hots: str) -> bool:
        return True

    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"{where(check)}: {kind} hook parameter 'hots' is not a parameter of runbook "
            f"'restart-web-server' (parameters: host, port, token)") + "$"):
        getattr(rb, kind)(check)
    assert rb.preconditions == rb.verifications == rb.rollbacks == []


def test_hook_without_a_context_is_refused() -> None:
    rb = make_restart()

    def check() -> bool:
        return True

    with pytest.raises(DefinitionError, match="^" + re.escape(
            f"{where(check)}: a precondition hook's first parameter must be the context") + "$"):
        rb.precondition(check)


def test_hook_with_star_args_is_refused() -> None:
    rb = make_restart()

    def check(ctx: Context, **params: Any) -> bool:
        return True

    with pytest.raises(DefinitionError, match=re.escape(
            "verify hooks take named runbook parameters, not *args/**kwargs")):
        rb.verify(check)


def test_hook_on_non_callable_is_refused() -> None:
    with pytest.raises(DefinitionError, match=re.escape(
            "restart-web-server: .precondition decorates functions, not 42")):
        make_restart().precondition(42)  # type: ignore[type-var]


def test_call_hook_passes_only_the_parameters_it_names() -> None:
    rb = make_restart()
    seen: list[dict[str, Any]] = []

    @rb.precondition
    def check(ctx: Context, port: int) -> bool:
        seen.append({"port": port})
        return True

    values = rb.validate_params({"host": "web1", "port": "81"})

    assert rb.call_hook(rb.preconditions[0], StubContext(), values) is True
    assert seen == [{"port": 81}]


def test_freeze_refuses_new_hooks() -> None:
    rb = make_restart()

    @rb.precondition
    def before(ctx: Context) -> bool:
        return True

    assert rb.freeze() is rb

    def late(ctx: Context) -> bool:
        return True

    message = "^" + re.escape(f"{where(late)}: runbook 'restart-web-server' is frozen; "
                              f"attach hooks in the runbook's own file") + "$"
    with pytest.raises(DefinitionError, match=message):
        rb.precondition(late)
    with pytest.raises(DefinitionError, match=message):
        rb.verify(late)
    with pytest.raises(DefinitionError, match=message):
        rb.verify(attempts=3)(late)
    with pytest.raises(DefinitionError, match=message):
        rb.rollback(late)
    assert [h.fn for h in rb.preconditions] == [before]
    assert rb.verifications == rb.rollbacks == []


# -- vocabulary --------------------------------------------------------------------


def test_risk_is_ordered() -> None:
    assert Risk.READ_ONLY < Risk.LOW < Risk.MEDIUM < Risk.HIGH < Risk.CRITICAL
    assert sorted([Risk.CRITICAL, Risk.READ_ONLY, Risk.HIGH, Risk.LOW, Risk.MEDIUM]) == list(Risk)
    assert max(Risk) is Risk.CRITICAL


@pytest.mark.parametrize(("text", "expected"), [
    ("low", Risk.LOW), (" LOW ", Risk.LOW), ("read-only", Risk.READ_ONLY),
    ("Read_Only", Risk.READ_ONLY), ("critical", Risk.CRITICAL), (Risk.HIGH, Risk.HIGH),
])
def test_risk_parse(text: str | Risk, expected: Risk) -> None:
    assert Risk.parse(text) is expected


@pytest.mark.parametrize("text", ["", "lowish", "2", "read only"])
def test_risk_parse_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(
            f"unknown risk {text!r}; expected one of READ_ONLY, LOW, MEDIUM, HIGH, CRITICAL")
            + "$"):
        Risk.parse(text)


def test_levels_are_ordered_and_titled() -> None:
    assert list(Level) == sorted(Level)
    assert [lv.name for lv in Level] == ["L0", "L1", "L2", "L3", "L4", "L5"]
    assert [lv.title for lv in Level] == ["manual", "rules-based", "summarization",
                                          "single-domain", "cross-environment",
                                          "bounded autonomy"]


def test_modes_are_ranked_by_autonomy() -> None:
    assert Mode.DRY_RUN.rank < Mode.APPROVAL.rank < Mode.AUTONOMOUS.rank
    assert [str(m) for m in Mode] == ["dry-run", "approval", "autonomous"]


@pytest.mark.parametrize(("value", "seconds"), [
    ("90s", 90), ("5m", 300), ("1h30m", 5400), ("1h 30m", 5400), ("2d", 172800),
    ("250ms", 0.25), ("1.5h", 5400), ("1m30s", 90), (" 3s ", 3), ("0s", 0),
    (90, 90), (1.5, 1.5), (0, 0), (timedelta(minutes=2), 120),
])
def test_parse_duration(value: Any, seconds: float) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["", "   ", "soon", "5", "m5", "5x", "-5s", "5s garbage",
                                   "s", "1h30", "1.h", True, False, -1, -0.5])
def test_parse_duration_garbage(value: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        parse_duration(value)


# -- run states --------------------------------------------------------------------

# The end states the README's run diagram draws: nothing follows them.
DRAWN_ENDS = {RunState.PLANNED, RunState.DENIED, RunState.EXPIRED, RunState.PRECONDITION_FAILED,
               RunState.ROLLED_BACK, RunState.ROLLBACK_FAILED, RunState.SUCCEEDED,
               RunState.SKIPPED, RunState.INTERRUPTED}


def test_every_state_has_a_row_and_every_target_is_a_state() -> None:
    assert set(TRANSITIONS) == set(RunState)
    for targets in TRANSITIONS.values():
        assert targets <= set(RunState)


def test_terminal_states_have_no_exits() -> None:
    terminal = {s for s in RunState if s.terminal}
    assert terminal >= DRAWN_ENDS
    assert RunState.RUNNING not in terminal
    for state in terminal:
        assert TRANSITIONS[state] == frozenset()
        assert not any(state.can_become(other) for other in RunState)


def test_no_state_becomes_itself_or_goes_back_to_requested() -> None:
    for state, targets in TRANSITIONS.items():
        assert state not in targets
        assert RunState.REQUESTED not in targets


def reachable_from(start: RunState) -> set[RunState]:
    seen, todo = {start}, deque([start])
    while todo:
        for nxt in TRANSITIONS[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_is_reachable_from_requested() -> None:
    assert reachable_from(RunState.REQUESTED) == set(RunState)


def test_every_live_state_can_end() -> None:
    terminal = {s for s in RunState if s.terminal}
    for state in RunState:
        assert reachable_from(state) & terminal, state


def test_the_paths_of_design_section_4_are_legal() -> None:
    paths = [
        ["requested", "decided", "planned"],
        ["requested", "decided", "pending_approval", "approved", "running", "succeeded"],
        ["requested", "decided", "pending_approval", "denied"],
        ["requested", "decided", "pending_approval", "expired"],
        ["requested", "decided", "running", "precondition_failed"],
        ["requested", "decided", "running", "failed", "rolling_back", "rolled_back"],
        ["requested", "decided", "running", "verification_failed", "rolling_back",
         "rollback_failed"],
        ["requested", "skipped"],
        ["requested", "decided", "running", "interrupted"],
    ]
    for path in paths:
        states = [RunState(s) for s in path]
        for a, b in itertools.pairwise(states):
            assert a.can_become(b), f"{a} -> {b}"


@pytest.mark.parametrize(("a", "b"), [
    ("requested", "running"), ("decided", "succeeded"), ("pending_approval", "running"),
    ("succeeded", "rolling_back"), ("planned", "running"), ("denied", "approved"),
])
def test_shortcuts_are_illegal(a: str, b: str) -> None:
    assert not RunState(a).can_become(RunState(b))


def test_a_run_that_dies_while_running_can_be_marked_interrupted() -> None:
    assert RunState.RUNNING.can_become(RunState.INTERRUPTED)
    assert RunState.ROLLING_BACK.can_become(RunState.INTERRUPTED)


# -- Operand -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "message"), [
    ("-rf", "must not start with '-' (a command would read it as an option)"),
    ("--checkpoint-action=exec=sh", "must not start with '-' (a command would read it as "
                                    "an option)"),
    ("", "must not be empty"),
    ("a\x00b", "must not contain a NUL byte"),
])
def test_an_operand_refuses_what_a_command_would_misread(value: str, message: str) -> None:
    assert Operand is SdkOperand

    @runbook(risk=Risk.LOW)
    def pack(ctx: Context, archive: Operand, names: list[Operand] | None = None) -> None: ...

    for params, loc in (({"archive": value}, "archive"),
                        ({"archive": "a.tar", "names": ["ok", value]}, "names.1")):
        with pytest.raises(ParameterError, match=re.escape(
                f"parameter '{loc}': {message} (got {value!r})")):
            pack.validate_params(params)
    assert pack.validate_params({"archive": "a -b.tar", "names": ["x-", "./-y"]}) == {
        "archive": "a -b.tar", "names": ["x-", "./-y"]}
    assert pack.params[0].type_name == "Operand"
