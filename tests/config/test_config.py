"""selfdrive.toml: finding it, reading it, and errors that name file, key and reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from selfdrive import Level, Risk
from selfdrive.config import (
    CONFIG_NAME,
    ExecutorConfig,
    PolicyConfig,
    Rule,
    TeamConfig,
    TrackRecordRule,
    find_config,
    load_config,
    parse_config,
)
from selfdrive.sdk.errors import ConfigError, UsageError

UNKNOWN = "unknown key (check the spelling; see the README's configuration section)"


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_NAME
    path.write_text(text, encoding="utf-8")
    return path


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    return tmp_path / CONFIG_NAME


# -- finding -----------------------------------------------------------------------


def test_config_name() -> None:
    assert CONFIG_NAME == "selfdrive.toml"


def test_find_walks_up_from_a_nested_folder(tmp_path: Path) -> None:
    path = write(tmp_path / "repo", 'team = "t"\n')
    nested = tmp_path / "repo" / "a" / "b" / "c"
    nested.mkdir(parents=True)

    assert find_config(nested) == path.resolve()


def test_find_takes_the_nearest_file(tmp_path: Path) -> None:
    write(tmp_path / "repo", 'team = "outer"\n')
    inner = write(tmp_path / "repo" / "svc", 'team = "inner"\n')
    nested = tmp_path / "repo" / "svc" / "runbooks"
    nested.mkdir(parents=True)

    assert find_config(nested) == inner.resolve()


def test_find_starts_in_the_folder_itself(tmp_path: Path) -> None:
    path = write(tmp_path, 'team = "t"\n')

    assert find_config(tmp_path) == path.resolve()


def test_find_ignores_a_folder_with_the_config_name(tmp_path: Path) -> None:
    outer = write(tmp_path, 'team = "t"\n')
    (tmp_path / "sub" / CONFIG_NAME).mkdir(parents=True)

    assert find_config(tmp_path / "sub") == outer.resolve()


def test_find_resolves_relative_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'team = "t"\n')
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path / "x")

    assert find_config(Path(".")) == path.resolve()


def test_find_returns_none_when_no_folder_has_one(tmp_path: Path) -> None:
    if any((p / CONFIG_NAME).is_file() for p in tmp_path.resolve().parents):
        pytest.skip("a selfdrive.toml sits above the temporary folder")
    (tmp_path / "a").mkdir()

    assert find_config(tmp_path / "a") is None


def test_load_walks_up_and_resolves_paths_against_the_files_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "repo", 'team = "payments-sre"\nlevel = "L3"\n'
                                    'journal = "state/journal.db"\nrunbooks = ["rb", "more/rb"]\n')
    nested = tmp_path / "repo" / "deep" / "er"
    nested.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load_config(start=nested)

    root = (tmp_path / "repo").resolve()
    assert config.path == path.resolve()
    assert config.root == root
    assert config.team == "payments-sre"
    assert config.level is Level.L3
    assert config.journal_path == root / "state" / "journal.db"
    assert config.runbook_dirs == [root / "rb", root / "more" / "rb"]


def test_default_journal_is_next_to_the_file(tmp_path: Path) -> None:
    write(tmp_path, 'team = "t"\n')

    config = load_config(tmp_path / CONFIG_NAME)

    assert config.journal_path == tmp_path.resolve() / ".selfdrive" / "journal.db"
    assert config.runbook_dirs == [tmp_path.resolve() / "runbooks"]


def test_absolute_journal_path_stays_as_it_is(tmp_path: Path) -> None:
    journal = tmp_path / "var" / "j.db"
    write(tmp_path / "repo", f'team = "t"\njournal = "{journal}"\n')

    assert load_config(start=tmp_path / "repo").journal_path == journal.resolve()


def test_load_uses_the_working_directory_by_default(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'team = "cwd-team"\n')
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")

    config = load_config()

    assert config.team == "cwd-team"
    assert config.path == path.resolve()


def test_load_without_any_file_says_how_to_create_one(tmp_path: Path) -> None:
    if any((p / CONFIG_NAME).is_file() for p in tmp_path.resolve().parents):
        pytest.skip("a selfdrive.toml sits above the temporary folder")

    with pytest.raises(ConfigError, match=exact(
            f"no selfdrive.toml in {tmp_path.resolve()} or any folder above it; "
            f"create one with `selfdrive init`")):
        load_config(start=tmp_path)


def test_load_a_missing_explicit_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError, match=exact(f"{missing.resolve()}: no such file")):
        load_config(missing)


def test_load_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_NAME
    path.write_bytes(b'team = "\xff\xfe"\n')

    with pytest.raises(ConfigError, match="^" + re.escape(f"{path.resolve()}: cannot read: ")):
        load_config(path)


def test_malformed_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'team = "t"\n\nlevel = \n')

    with pytest.raises(ConfigError) as info:
        load_config(path)

    message = str(info.value)
    assert message.startswith(f"{path.resolve()}: not valid TOML: ")
    assert "line 3" in message


def test_config_error_is_a_usage_error(cfg_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        parse_config({}, cfg_path)
    assert isinstance(info.value, ConfigError)
    assert info.value.exit_code == 2


# -- validation --------------------------------------------------------------------


def test_minimal_config_gets_the_defaults(cfg_path: Path) -> None:
    config = parse_config({"team": "t"}, cfg_path)

    assert config.path == cfg_path
    assert config.level is Level.L0
    assert config.runbooks == ["runbooks"]
    assert config.journal == ".selfdrive/journal.db"
    assert config.entry_points is True
    assert config.policy == PolicyConfig()
    assert config.policy.matrix == {}
    assert config.policy.track_record == TrackRecordRule(min_verified_successes=3, window=5,
                                                         applies_from=Risk.MEDIUM)
    assert config.policy.separation_of_duties is Risk.HIGH
    assert config.executor == ExecutorConfig(output_limit=65536, command_timeout=600.0)


def test_missing_team(cfg_path: Path) -> None:
    with pytest.raises(ConfigError, match=exact(f"{cfg_path}: team: required key is missing")):
        parse_config({"level": "L1"}, cfg_path)


def test_missing_team_in_a_real_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'level = "L2"\n')

    with pytest.raises(ConfigError, match=exact(
            f"{path.resolve()}: team: required key is missing")):
        load_config(path)


def test_unknown_top_level_key(cfg_path: Path) -> None:
    with pytest.raises(ConfigError, match=exact(f"{cfg_path}: levl: {UNKNOWN}")):
        parse_config({"team": "t", "levl": "L3"}, cfg_path)


@pytest.mark.parametrize(("data", "key"), [
    ({"policy": {"matrx": {}}}, "policy.matrx"),
    ({"policy": {"track_record": {"windw": 3}}}, "policy.track_record.windw"),
    ({"executor": {"timeout": 3}}, "executor.timeout"),
])
def test_unknown_nested_key_names_the_dotted_key(cfg_path: Path, data: dict[str, object],
                                                 key: str) -> None:
    with pytest.raises(ConfigError, match=exact(f"{cfg_path}: {key}: {UNKNOWN}")):
        parse_config({"team": "t", **data}, cfg_path)


def test_unknown_key_in_a_real_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'team = "t"\n[policy.track_record]\nmin_verified_sucesses = 2\n')

    with pytest.raises(ConfigError, match=exact(
            f"{path.resolve()}: policy.track_record.min_verified_sucesses: {UNKNOWN}")):
        load_config(path)


def test_every_problem_is_listed_at_once(cfg_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"level": "L9", "jornal": "x"}, cfg_path)

    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{cfg_path}: ") for line in lines)
    assert {line.split(": ")[1] for line in lines} == {"team", "level", "jornal"}


@pytest.mark.parametrize(("value", "expected"), [
    ("L3", Level.L3), ("l5", Level.L5), (" L0 ", Level.L0), (2, Level.L2),
])
def test_levels(cfg_path: Path, value: object, expected: Level) -> None:
    assert parse_config({"team": "t", "level": value}, cfg_path).level is expected


@pytest.mark.parametrize("value", ["L9", "3", "level3", ""])
def test_bad_level(cfg_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(f"{cfg_path}: level: ") + ".*"
                       + re.escape(f"unknown level {value!r}; expected one of L0 … L5") + "$"):
        parse_config({"team": "t", "level": value}, cfg_path)


@pytest.mark.parametrize("value", [9, -1, [3]])
def test_bad_level_of_another_type(cfg_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(f"{cfg_path}: level: ")):
        parse_config({"team": "t", "level": value}, cfg_path)


def test_wrong_types_name_their_keys(cfg_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"team": "t", "runbooks": "runbooks", "entry_points": "maybe",
                      "executor": {"output_limit": 10, "command_timeout": 0}}, cfg_path)

    keys = {line.split(": ")[1] for line in str(info.value).splitlines()}
    assert keys == {"runbooks", "entry_points", "executor.output_limit",
                    "executor.command_timeout"}


@pytest.mark.parametrize("item", ["", "MY VAR", "A=B", "$HOME"])
def test_a_bad_env_allow_entry_is_named(cfg_path: Path, item: str) -> None:
    with pytest.raises(ConfigError, match=exact(
            f"{cfg_path}: executor.env_allow: {item!r} is neither an environment "
            f"variable name nor a pattern of one (such as LC_*)")):
        parse_config({"team": "t", "executor": {"env_allow": ["PATH", item]}}, cfg_path)


def test_env_allow_takes_names_and_patterns(cfg_path: Path) -> None:
    config = parse_config({"team": "t", "executor": {"env_allow": ["PATH", "LC_*", "AWS_?"]}},
                          cfg_path)
    assert config.executor.env_allow == ["PATH", "LC_*", "AWS_?"]


def test_track_record_and_thresholds(cfg_path: Path) -> None:
    config = parse_config({"team": "t", "policy": {
        "track_record": {"min_verified_successes": 1, "window": 2, "applies_from": "low"},
        "separation_of_duties": "critical"}}, cfg_path)

    assert config.policy.track_record == TrackRecordRule(min_verified_successes=1, window=2,
                                                         applies_from=Risk.LOW)
    assert config.policy.separation_of_duties is Risk.CRITICAL


@pytest.mark.parametrize(("track_record", "key"), [
    ({"window": 0}, "policy.track_record.window"),
    ({"min_verified_successes": -1}, "policy.track_record.min_verified_successes"),
    ({"applies_from": "nope"}, "policy.track_record.applies_from"),
])
def test_bad_track_record(cfg_path: Path, track_record: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(f"{cfg_path}: {key}: ")):
        parse_config({"team": "t", "policy": {"track_record": track_record}}, cfg_path)


def test_bad_separation_of_duties_names_the_allowed_classes(cfg_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "policy.separation_of_duties: unknown risk 'severe'; expected one of "
            "READ_ONLY, LOW, MEDIUM, HIGH, CRITICAL")):
        parse_config({"team": "t", "policy": {"separation_of_duties": "severe"}}, cfg_path)


def test_config_is_frozen(cfg_path: Path) -> None:
    config = parse_config({"team": "t"}, cfg_path)

    with pytest.raises(ValidationError):
        config.team = "other"


def test_root_without_a_file_is_the_working_directory(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    assert TeamConfig(team="t").root == Path.cwd()


# -- the policy matrix -------------------------------------------------------------


def test_matrix_overrides_from_a_real_file(tmp_path: Path) -> None:
    path = write(tmp_path, '''team = "t"
level = "L4"

[policy.matrix.L4]
HIGH = "auto-with-record"
medium = "approval"

[policy.matrix.l1]
read-only = "dry-run"
''')

    policy = load_config(path).policy

    assert policy.matrix == {"L4": {"HIGH": Rule.AUTO_WITH_RECORD, "MEDIUM": Rule.APPROVAL},
                             "L1": {"READ_ONLY": Rule.DRY_RUN}}
    assert policy.override(Level.L4, Risk.HIGH) is Rule.AUTO_WITH_RECORD
    assert policy.override(Level.L4, Risk.MEDIUM) is Rule.APPROVAL
    assert policy.override(Level.L1, Risk.READ_ONLY) is Rule.DRY_RUN


def test_override_is_none_where_the_team_set_nothing(cfg_path: Path) -> None:
    policy = parse_config({"team": "t", "policy": {"matrix": {"L3": {"LOW": "approval"}}}},
                          cfg_path).policy

    assert policy.override(Level.L3, Risk.LOW) is Rule.APPROVAL
    assert policy.override(Level.L3, Risk.MEDIUM) is None
    assert policy.override(Level.L2, Risk.LOW) is None
    assert PolicyConfig().override(Level.L5, Risk.CRITICAL) is None


def test_every_rule_word_is_accepted(cfg_path: Path) -> None:
    row = dict(zip(["READ_ONLY", "LOW", "MEDIUM", "HIGH", "CRITICAL"],
                   ["dry-run", "approval", "auto", "auto-own-trigger", "auto-in-domain"],
                   strict=True))
    policy = parse_config({"team": "t", "policy": {"matrix": {"L2": row,
                                                              "L5": {"HIGH": "auto-with-record"}}}},
                          cfg_path).policy

    assert [policy.override(Level.L2, r) for r in Risk] == [
        Rule.DRY_RUN, Rule.APPROVAL, Rule.AUTO, Rule.AUTO_OWN_TRIGGER, Rule.AUTO_IN_DOMAIN]
    assert policy.override(Level.L5, Risk.HIGH) is Rule.AUTO_WITH_RECORD


def test_matrix_bad_level(cfg_path: Path) -> None:
    with pytest.raises(ConfigError, match=exact(
            f"{cfg_path}: policy.matrix: unknown level 'L7' in [policy.matrix]; "
            f"use L0 … L5")):
        parse_config({"team": "t", "policy": {"matrix": {"L7": {"LOW": "auto"}}}}, cfg_path)


def test_matrix_bad_risk(cfg_path: Path) -> None:
    with pytest.raises(ConfigError, match=exact(
            f"{cfg_path}: policy.matrix: unknown risk 'LOWW'; expected one of "
            f"READ_ONLY, LOW, MEDIUM, HIGH, CRITICAL")):
        parse_config({"team": "t", "policy": {"matrix": {"L3": {"LOWW": "auto"}}}}, cfg_path)


def test_matrix_bad_rule_names_the_cell(cfg_path: Path) -> None:
    with pytest.raises(ConfigError, match=exact(
            f"{cfg_path}: policy.matrix.L3.LOW: Input should be 'dry-run', 'approval', 'auto', "
            f"'auto-own-trigger', 'auto-in-domain' or 'auto-with-record'")):
        parse_config({"team": "t", "policy": {"matrix": {"L3": {"LOW": "yolo"}}}}, cfg_path)


def test_matrix_bad_cell_in_a_real_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'team = "t"\n[policy.matrix.L3]\nHIGH = "always"\n')

    with pytest.raises(ConfigError, match="^" + re.escape(
            f"{path.resolve()}: policy.matrix.L3.HIGH: Input should be ")):
        load_config(path)


def test_matrix_row_given_twice_is_an_error(cfg_path: Path) -> None:
    with pytest.raises(ConfigError, match=exact(
            f"{cfg_path}: policy.matrix: level L3 appears twice in "
            f"[policy.matrix]")):
        parse_config({"team": "t", "policy": {"matrix": {"L3": {"LOW": "approval"},
                                                         "l3": {"HIGH": "auto"}}}}, cfg_path)


def test_matrix_cell_given_twice_is_an_error(cfg_path: Path) -> None:
    with pytest.raises(ConfigError, match=exact(
            f"{cfg_path}: policy.matrix: risk READ_ONLY appears twice in "
            f"[policy.matrix.L4]")):
        parse_config({"team": "t", "policy": {"matrix": {
            "L4": {"read-only": "approval", "READ_ONLY": "auto"}}}}, cfg_path)


# -- hostile input: absurd values, deep nesting, endless files ---------------------------


@pytest.mark.parametrize(("table", "key", "dotted"), [
    ("[approvals]", "expiry", "approvals.expiry"),
    ("[guardrails]", "rate_window", "guardrails.rate_window"),
    ("[receiver]", "dedup_window", "receiver.dedup_window"),
    ('[[schedules]]\nrunbook = "r"\ncron = "@daily"', "grace", "schedules.0.grace"),
])
def test_an_absurd_duration_is_an_error_naming_key_and_value(tmp_path: Path, table: str,
                                                             key: str, dotted: str) -> None:
    path = write(tmp_path, f'team = "t"\n{table}\n{key} = "999999999999d"\n')

    with pytest.raises(ConfigError, match=exact(
            f"{path.resolve()}: {dotted}: duration '999999999999d' is too long "
            f"(at most 3650d, ten years)")):
        load_config(path)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_a_float_that_is_not_finite_is_an_error(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f'team = "t"\n[executor]\ncommand_timeout = {value}\n'
                           f'[approvals]\nexpiry = {value}\n')

    with pytest.raises(ConfigError) as info:
        load_config(path)

    lines = str(info.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["approvals.expiry",
                                                       "executor.command_timeout"]
    assert lines[1].endswith("Input should be a finite number")


def test_deeply_nested_inline_tables_are_an_error_naming_key_and_line(tmp_path: Path) -> None:
    deep = "{a = " * 5000 + "1" + "}" * 5000  # the TOML parser alone would hit RecursionError
    path = write(tmp_path, f'team = "t"\n# {{ [ in a comment\n[[schedules]]\nrunbook = "r"\n'
                           f'cron = "@daily"\nparams = {deep}\n')

    with pytest.raises(ConfigError, match=exact(
            f"{path.resolve()}: schedules.params: nested more than 32 levels deep (line 6)")):
        load_config(path)


def test_deeply_nested_arrays_are_an_error_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'team = "t"\nrunbooks = ' + "[" * 40 + "]" * 40 + "\n")

    with pytest.raises(ConfigError, match=exact(
            f"{path.resolve()}: runbooks[0][0][0]…: nested more than 32 levels deep")):
        load_config(path)


def test_a_config_larger_than_1_mib_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'team = "t"\n' + "# padding\n" * 110_000)

    with pytest.raises(ConfigError, match=exact(
            f"{path.resolve()}: larger than 1 MiB; a selfdrive.toml is a few KiB "
            f"(is this the right file?)")):
        load_config(path)


def test_an_endless_device_is_read_only_up_to_the_limit() -> None:
    with pytest.raises(ConfigError, match=exact(
            "/dev/zero: larger than 1 MiB; a selfdrive.toml is a few KiB "
            "(is this the right file?)")):
        load_config(Path("/dev/zero"))


def test_a_folder_given_as_the_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(f"{tmp_path.resolve()}: cannot read: ")):
        load_config(tmp_path)


# -- guardrails fail closed ----------------------------------------------------------
# A guardrail or approval setting that would switch its guardrail off is an error
# naming the file, the dotted key and the reason, in a real file read by the loader.


@pytest.mark.parametrize(("table", "line", "key", "reason"), [
    ("guardrails", 'rate_window = "0s"', "guardrails.rate_window",
     "an empty window counts no runs, so the rate limits would never trip"),
    ("guardrails", "rate_window = 0", "guardrails.rate_window",
     "an empty window counts no runs, so the rate limits would never trip"),
    ("guardrails", "rate_window = 0.0000001", "guardrails.rate_window",
     "an empty window counts no runs, so the rate limits would never trip"),
    ("guardrails", 'rate_window = "0h0m"', "guardrails.rate_window",
     "an empty window counts no runs, so the rate limits would never trip"),
    ("guardrails", "rate_window = -60", "guardrails.rate_window",
     "duration must not be negative: -60"),
    ("guardrails", "blast_radius = 0", "guardrails.blast_radius",
     "Input should be greater than or equal to 1"),
    ("approvals", 'expiry = "0s"', "approvals.expiry",
     "an approval window of 0s closes as it opens"),
    ("approvals", "expiry = 0", "approvals.expiry",
     "an approval window of 0s closes as it opens"),
    ("approvals.min_approvers", "CRITICAL = 0", "approvals.min_approvers.CRITICAL",
     "Input should be greater than or equal to 1"),
    ("policy.track_record", "window = 0", "policy.track_record.window",
     "Input should be greater than or equal to 1"),
])
def test_a_setting_that_turns_a_guardrail_off_is_an_error(
        tmp_path: Path, table: str, line: str, key: str, reason: str) -> None:
    path = write(tmp_path, f'team = "t"\n[{table}]\n{line}\n')

    with pytest.raises(ConfigError) as info:
        load_config(path)

    [problem] = str(info.value).splitlines()
    assert problem.startswith(f"{path.resolve()}: {key}: "), problem
    assert problem.endswith(reason), problem


FREEZE = '[[guardrails.freeze]]\nname = "year end"\n'


@pytest.mark.parametrize(("body", "reason"), [
    ("start = 2026-12-20T00:00:00\nend = 2026-12-19T00:00:00\n",
     "freeze 'year end': its end (2026-12-19 00:00 UTC) is not after its start "
     "(2026-12-20 00:00 UTC), so it would never hold"),
    ("start = 2026-12-20T00:00:00\nend = 2026-12-20T00:00:00\n",
     "freeze 'year end': its end (2026-12-20 00:00 UTC) is not after its start "
     "(2026-12-20 00:00 UTC), so it would never hold"),
    # One bound with an offset, one without: the window's timezone places the other.
    ('start = 2026-12-20T00:00:00+01:00\nend = 2026-12-20T00:00:00\ntimezone = "UTC"\n',
     None),
    ('start = 2026-12-20T00:00:00Z\nend = 2026-12-20T00:30:00\n'
     'timezone = "Europe/Berlin"\n',
     "freeze 'year end': its end (2026-12-20 00:30 Europe/Berlin) is not after its start "
     "(2026-12-20 01:00 Europe/Berlin), so it would never hold"),
    ("start = 2026-12-20T00:00:00\n", "freeze 'year end': give both start and end"),
    ('cron = "* * * * *"\nend = 2026-12-20T00:00:00\n',
     "freeze 'year end': give either start and end, or cron"),
])
def test_a_freeze_that_could_never_hold_is_an_error(tmp_path: Path, body: str,
                                                    reason: str | None) -> None:
    path = write(tmp_path, f'team = "t"\n{FREEZE}{body}')

    if reason is None:
        [window] = load_config(path).guardrails.freeze
        assert window.start is not None and window.end is not None
        return
    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert str(info.value) == (f"{path.resolve()}: guardrails.freeze.0: "
                               f"{reason}")


def test_a_freeze_needs_a_name(tmp_path: Path) -> None:
    path = write(tmp_path, 'team = "t"\n[[guardrails.freeze]]\nname = ""\ncron = "* * * * *"\n')

    with pytest.raises(ConfigError, match=exact(
            f"{path.resolve()}: guardrails.freeze.0.name: String should have at least 1 "
            f"character")):
        load_config(path)


def test_guardrails_built_in_code_fail_closed_too() -> None:
    from datetime import timedelta

    from selfdrive.config.model import GuardrailsConfig

    with pytest.raises(ValidationError, match="rate limits would never trip"):
        GuardrailsConfig(rate_window=timedelta(0))
