"""render_command: quoted by default, two faces, sandboxed, bounded."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from selfdrive import Command, safe
from selfdrive.sdk.command import MASK, MAX_RENDERED_CHARS, MAX_TEMPLATE_CHARS, render_command
from selfdrive.sdk.errors import TemplateError, UsageError

SECRET = "s3cr3t-Xq9;rm"


def sh(cmd: Command) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd.raw, shell=True, capture_output=True, text=True, timeout=10,
                          check=False)


def no_trace(text: str, secret: str = SECRET) -> bool:
    """True when no recognisable piece of the secret is in ``text``."""
    lowered = text.lower()
    core = "s3cr3t-xq9"
    return core not in lowered and core[::-1] not in lowered and secret.lower() not in lowered


# -- quoting -----------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    "x; touch {marker}",
    "x && touch {marker}",
    "x || touch {marker}",
    "x | touch {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "'; touch {marker}; '",
    '"; touch {marker}; "',
    "x\ntouch {marker}",
    "x > {marker}",
    "${{IFS}}touch${{IFS}}{marker}",
])
def test_hostile_value_arrives_as_one_literal_argument(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / f"owned-{uuid.uuid4().hex}"
    value = payload.format(marker=marker)
    cmd = render_command("printf '%s\\n' {{ v }}", {"v": value})

    result = sh(cmd)

    assert result.returncode == 0, result.stderr
    assert result.stdout == value + "\n"  # one argument, byte for byte
    assert not marker.exists()


def test_every_interpolation_is_quoted_not_only_the_first(tmp_path: Path) -> None:
    marker = tmp_path / f"owned-{uuid.uuid4().hex}"
    cmd = render_command("printf '%s\\n' {{ a }} {{ b }}",
                         {"a": "plain", "b": f"; touch {marker}"})

    result = sh(cmd)

    assert result.stdout.splitlines() == ["plain", f"; touch {marker}"]
    assert not marker.exists()


def test_glob_and_empty_values_are_literal() -> None:
    cmd = render_command("printf '[%s]\\n' {{ a }} {{ b }}", {"a": "*", "b": ""})

    assert sh(cmd).stdout == "[*]\n[]\n"


def test_values_are_quoted_with_shlex_rules() -> None:
    cmd = render_command("rm -rf {{ path }}", {"path": "/var/tmp/my dir"})

    assert cmd.raw == "rm -rf '/var/tmp/my dir'"
    assert cmd.masked == cmd.raw


def test_plain_words_stay_readable() -> None:
    cmd = render_command("systemctl restart {{ service }}", {"service": "nginx"})

    assert cmd.raw == "systemctl restart nginx"


def test_numbers_and_booleans_render_as_words() -> None:
    cmd = render_command("run {{ n }} {{ f }} {{ yes }} {{ no }}",
                         {"n": 3, "f": 1.5, "yes": True, "no": False})

    assert cmd.raw == "run 3 1.5 true false"


def test_list_becomes_several_quoted_words(tmp_path: Path) -> None:
    marker = tmp_path / f"owned-{uuid.uuid4().hex}"
    items = ["a b", f"c; touch {marker}", "d"]
    cmd = render_command("printf '%s\\n' {{ items }}", {"items": items})

    assert cmd.raw == f"printf '%s\\n' 'a b' 'c; touch {marker}' d"
    assert sh(cmd).stdout.splitlines() == items
    assert not marker.exists()


def test_tuple_becomes_several_quoted_words() -> None:
    cmd = render_command("ls {{ paths }}", {"paths": ("x y", "z")})

    assert cmd.raw == "ls 'x y' z"


def test_literal_template_text_is_not_quoted() -> None:
    cmd = render_command("echo a && echo b", {})

    assert cmd.raw == "echo a && echo b"
    assert sh(cmd).stdout == "a\nb\n"


def test_safe_value_opts_out_of_quoting() -> None:
    cmd = render_command("echo a {{ op }} echo b", {"op": safe("&&")})

    assert cmd.raw == "echo a && echo b"
    assert sh(cmd).stdout == "a\nb\n"


def test_safe_filter_opts_out_of_quoting() -> None:
    cmd = render_command("echo {{ flags | safe }} x", {"flags": "-n"})

    assert cmd.raw == "echo -n x"
    assert sh(cmd).stdout == "x"


def test_safe_items_inside_a_list_stay_unquoted() -> None:
    cmd = render_command("cmd {{ parts }}", {"parts": [safe("--flag=a b"), "c d"]})

    assert cmd.raw == "cmd --flag=a b 'c d'"


def test_quote_filter_quotes_once() -> None:
    cmd = render_command("echo {{ v | quote }}", {"v": "a b"})

    assert cmd.raw == "echo 'a b'"


def test_filter_result_is_quoted_too(tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    cmd = render_command("printf '%s\\n' {{ v | lower }}", {"v": f"X; TOUCH {marker}"})

    assert sh(cmd).stdout == f"x; touch {str(marker).lower()}\n"
    assert not marker.exists()


def test_render_returns_a_command_unchanged() -> None:
    cmd = Command(masked="echo ******", raw="echo hunter2")

    assert render_command(cmd, {"ignored": 1}) is cmd


def test_non_string_template_is_refused() -> None:
    with pytest.raises(TemplateError, match=r"^a command must be a string template, not int$"):
        render_command(42, {})  # type: ignore[arg-type]


# -- two faces: secrets ------------------------------------------------------------


def test_secret_on_raw_face_only() -> None:
    cmd = render_command("login --token {{ token }}", {"token": SecretStr(SECRET)})

    assert cmd.raw == f"login --token '{SECRET}'"
    assert cmd.masked == f"login --token {MASK}"
    assert str(cmd) == cmd.masked
    assert no_trace(cmd.masked)
    assert no_trace(str(cmd))
    assert no_trace(repr(cmd))
    assert no_trace(f"{cmd}")


def test_secret_reaches_the_shell_as_one_argument() -> None:
    cmd = render_command("printf '%s\\n' {{ token }}", {"token": SecretStr("a b; c")})

    assert sh(cmd).stdout == "a b; c\n"


@pytest.mark.parametrize("template", [
    "{{ token }}",
    "{{ token | upper }}",
    "{{ token | lower }}",
    "{{ token | reverse }}",
    "{{ token | list }}",
    "{{ token | string }}",
    "{{ token | title }}",
    "{{ token | replace('s', 'S') }}",
    "{{ token | center(40) }}",
    "{{ token ~ '-suffix' }}",
    "{{ 'prefix-' + token }}",
    "{{ token[0:] }}",
    "{{ token[::-1] }}",
    "{{ '%s' | format(token) }}",
    "{{ [token, 'x'] | join(',') }}",
    "{{ token | urlencode }}",
    "{% for c in token %}{{ c }}{% endfor %}",
    "{% set t = token %}{{ t | upper }}",
])
def test_masked_face_has_no_trace_of_the_secret_whatever_the_filters(template: str) -> None:
    cmd = render_command(f"echo {template}", {"token": SecretStr(SECRET)})

    assert cmd.raw != cmd.masked  # the raw face really used the secret
    for face in (cmd.masked, str(cmd), repr(cmd)):
        assert no_trace(face), face


def test_secret_in_a_list_is_masked_item_by_item() -> None:
    cmd = render_command("curl {{ headers }}", {"headers": ["-H", SecretStr(SECRET)]})

    assert cmd.raw == f"curl -H '{SECRET}'"
    assert cmd.masked == f"curl -H {MASK}"


def test_repr_never_shows_the_raw_face() -> None:
    cmd = render_command("echo {{ t }}", {"t": SecretStr(SECRET)})

    assert "raw" not in repr(cmd)
    assert repr(cmd) == f"Command(masked='echo {MASK}')"


def test_error_message_quotes_the_mask_not_the_secret() -> None:
    with pytest.raises(TemplateError) as info:
        render_command("echo {{ table[token] }}", {"table": {}, "token": SecretStr(SECRET)})

    assert no_trace(str(info.value))
    assert MASK in str(info.value)


def test_error_only_the_secret_value_triggers_withholds_the_details() -> None:
    template = "echo {% if token == 'hunter2' %}{{ 1 / 0 }}{% endif %}"

    with pytest.raises(TemplateError) as info:
        render_command(template, {"token": SecretStr("hunter2")})

    # The template itself holds the secret's value: it is masked there too.
    shown = template.replace("hunter2", MASK)
    assert str(info.value) == (f"template {shown!r} failed to render with the secret values "
                               f"(details withheld so that no secret leaks)")
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


# -- secrets known by their value ----------------------------------------------------


@pytest.mark.parametrize("template", [
    "{{ plain }}",
    "{{ plain | upper }}",
    "{{ plain | reverse }}",
    "{{ plain[::-1] }}",
    "{{ 'Bearer ' ~ plain }}",
    "{{ header }}",
    "{{ headers }}",
    "{{ table.key }}",
    "{{ flag }}",
])
def test_an_unwrapped_secret_is_masked_by_its_value(template: str) -> None:
    """`token.get_secret_value()` handed on as a plain string is still a secret."""
    variables = {"token": SecretStr(SECRET), "plain": SECRET, "header": f"X-Token: {SECRET}",
                 "headers": ["-H", f"X-Token: {SECRET}"], "table": {"key": SECRET},
                 "flag": safe(f"--token={SECRET}")}
    cmd = render_command(f"echo {template}", variables)

    assert not no_trace(cmd.raw)  # the wire got the secret
    for face in (cmd.masked, str(cmd), repr(cmd)):
        assert no_trace(face), face
    assert MASK in cmd.masked


def test_secrets_passed_by_value_are_masked_without_any_secretstr() -> None:
    """What a context does: the run's known secrets come as ``secrets=``."""
    cmd = render_command("curl -H {{ h }} {{ url }}", {"h": f"Authorization: {SECRET}",
                                                      "url": "http://x"}, secrets=[SECRET])

    assert cmd.raw == f"curl -H 'Authorization: {SECRET}' http://x"
    assert cmd.masked == f"curl -H 'Authorization: {MASK}' http://x"
    exact = render_command("echo {{ t }}", {"t": SECRET}, secrets=[SECRET])
    assert exact.masked == f"echo {MASK}"  # as a SecretStr shows


def test_a_secret_written_into_the_template_itself_is_masked() -> None:
    """An f-string template (``ctx.run(f"login {token.get_secret_value()}")``)."""
    cmd = render_command(f"login --token {SECRET} {{{{ user }}}}", {"user": "bob"},
                         secrets=[SECRET])

    assert cmd.raw == f"login --token {SECRET} bob"
    assert cmd.masked == f"login --token {MASK} bob"
    with pytest.raises(TemplateError) as info:
        render_command(f"login --token {SECRET} {{{{ nope }}}}", {}, secrets=[SECRET])
    assert no_trace(str(info.value)) and MASK in str(info.value)
    with pytest.raises(TemplateError) as info:
        render_command(f"login {SECRET} {{{{ x", {}, secrets=[SECRET])  # a syntax error
    assert no_trace(str(info.value))


def test_a_given_command_gets_its_masked_face_masked_too() -> None:
    given = Command(masked=f"echo {SECRET}", raw=f"echo {SECRET}")

    cmd = render_command(given, {}, secrets=[SECRET])

    assert cmd.masked == f"echo {MASK}" and cmd.raw == given.raw


# -- errors a user reads -----------------------------------------------------------


def test_undefined_variable_is_an_error_naming_it() -> None:
    with pytest.raises(TemplateError, match="^" + re.escape(
            "template 'rm -rf {{ target }}/cache': 'target' is undefined "
            "(pass it as a keyword argument or a runbook parameter)") + "$"):
        render_command("rm -rf {{ target }}/cache", {})


def test_undefined_attribute_is_an_error() -> None:
    with pytest.raises(TemplateError, match="has no attribute 'missing'"):
        render_command("echo {{ host.missing }}", {"host": "web1"})


def test_template_error_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        render_command("echo {{ nope }}", {})
    assert TemplateError("x").exit_code == 2


@pytest.mark.parametrize("template", ["echo {{ v ", "echo {% if %}", "echo {{ v }", "{% for %}"])
def test_syntax_error_is_a_template_error(template: str) -> None:
    with pytest.raises(TemplateError, match="^" + re.escape(
            f"template syntax error in {template!r}: ") + r".+ \(line 1\)$"):
        render_command(template, {"v": 1})


def test_syntax_error_names_its_line() -> None:
    with pytest.raises(TemplateError, match=r"\(line 3\)$"):
        render_command("echo a\necho b\necho {{ v ", {"v": 1})


def test_none_is_refused() -> None:
    with pytest.raises(TemplateError, match="^" + re.escape(
            "template 'rm -rf {{ path }}': a template interpolated None; "
            "pass a value or leave it out") + "$"):
        render_command("rm -rf {{ path }}", {"path": None})


def test_none_inside_a_list_is_refused() -> None:
    with pytest.raises(TemplateError, match="interpolated None"):
        render_command("ls {{ paths }}", {"paths": ["a", None]})


@pytest.mark.parametrize("template", ["echo {{ 1 / 0 }}", "echo {{ 'a' + 1 }}",
                                      "echo {{ ((10 ** 60) ** 60) ** 2 }}"])
def test_python_errors_inside_a_template_become_template_errors(template: str) -> None:
    with pytest.raises(TemplateError, match="^" + re.escape(f"template {template!r}: ")):
        render_command(template, {})


# -- sandbox -----------------------------------------------------------------------


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ v.__class__ }}",
    "{{ v.__init__.__globals__['os'] }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ '{0.__class__}'.format(v) }}",
])
def test_sandbox_escapes_are_refused(template: str) -> None:
    with pytest.raises(TemplateError, match=r": unsafe access refused: access to attribute "
                                            r"'__\w+__' of '\w+' object is unsafe\.$"):
        render_command(f"echo {template}", {"v": "x"})


def test_attribute_escape_names_the_refusal() -> None:
    with pytest.raises(TemplateError, match=re.escape(
            "unsafe access refused: access to attribute '__class__' of 'str' object is unsafe")):
        render_command("echo {{ ''.__class__.__mro__ }}", {})


@pytest.mark.parametrize(("template", "message"), [
    ("echo {{ 'x' * 10**9 }}", "template expression too large"),
    ("echo {{ 10**9 * 'x' }}", "template expression too large"),
    ("echo {{ [0] * 10**9 }}", "template expression too large"),
    ("echo {{ 2 ** 100000 }}", "exponent too large in template"),
    ("echo {{ 10 ** 65 }}", "exponent too large in template"),
])
def test_memory_bombs_are_refused_quickly(template: str, message: str) -> None:
    started = time.monotonic()

    with pytest.raises(TemplateError, match=re.escape(message)):
        render_command(template, {})

    assert time.monotonic() - started < 1.0


def test_small_arithmetic_is_allowed() -> None:
    assert render_command("echo {{ 'ab' * 3 }} {{ 2 ** 10 }}", {}).raw == "echo ababab 1024"


def test_rendered_output_is_bounded() -> None:
    half = MAX_RENDERED_CHARS // 2 + 10
    with pytest.raises(TemplateError, match=f"rendered to more than {MAX_RENDERED_CHARS} chars"):
        render_command(f"{{{{ 'x' * {half} }}}}{{{{ 'y' * {half} }}}}", {})


def test_template_length_is_bounded() -> None:
    with pytest.raises(TemplateError, match="^" + re.escape(
            f"command template longer than {MAX_TEMPLATE_CHARS} characters") + "$"):
        render_command("x" * (MAX_TEMPLATE_CHARS + 1), {})
