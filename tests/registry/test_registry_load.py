"""Discovery: runbook folders and entry points, load problems located as file:line, lookup."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from selfdrive import Context, Risk, runbook
from selfdrive.registry import ENTRY_POINT_GROUP, LoadProblem, Registry, load_registry
from selfdrive.sdk.errors import DefinitionError, UnknownRunbookError

HEADER = "from selfdrive import Context, Risk, runbook\n"


def write(folder: Path, name: str, body: str, *, header: bool = True) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((HEADER if header else "") + textwrap.dedent(body))
    return path


def simple(name: str, risk: str = "LOW") -> str:
    func = name.replace("-", "_")
    return f'''
@runbook(risk=Risk.{risk})
def {func}(ctx: Context) -> None:
    """Runbook {name}."""
    ctx.run("true")
'''


@pytest.fixture
def books(tmp_path: Path) -> Path:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    return folder


def load(*folders: Path) -> Registry:
    return load_registry(list(folders), entry_points=False)


# -- loading folders -----------------------------------------------------------------


def test_loads_every_runbook_in_a_folder_tree(books):
    write(books, "disk.py", simple("clean-disk") + simple("rotate-logs"))
    write(books, "web/restart.py", simple("restart-web", "MEDIUM"))
    registry = load(books)
    assert registry.problems == ()
    assert sorted(registry.runbooks) == ["clean-disk", "restart-web", "rotate-logs"]
    assert [rb.name for rb in registry] == ["clean-disk", "restart-web", "rotate-logs"]
    assert len(registry) == 3
    rb = registry.get("restart-web")
    assert rb.risk is Risk.MEDIUM
    assert rb.summary == "Runbook restart-web."
    assert rb.location == f"{books / 'web' / 'restart.py'}:3"


def test_loaded_runbooks_are_frozen(books):
    write(books, "disk.py", simple("clean-disk"))
    rb = load(books).get("clean-disk")
    with pytest.raises(DefinitionError, match="frozen"):
        @rb.verify
        def late(ctx: Context) -> bool:
            return True


def test_runbook_files_may_import_helpers_from_their_folder(books):
    write(books, "_shared.py", "DEFAULT_HOST = 'web-7'\n", header=False)
    write(books, "deploy.py", '''
        from _shared import DEFAULT_HOST

        @runbook(risk=Risk.LOW)
        def deploy(ctx: Context, host: str = DEFAULT_HOST) -> None:
            ctx.run("true")
    ''')
    registry = load(books)
    assert registry.problems == ()
    (param,) = registry.get("deploy").params
    assert param.default == "web-7"


def test_a_runbook_imported_by_a_sibling_file_is_not_a_duplicate(books):
    """Composing runbooks: b.py imports a.py's runbook; one definition, not two."""
    write(books, "a.py", simple("clean-disk"))
    write(books, "b.py", '''
        from a import clean_disk

        @runbook(risk=Risk.LOW)
        def clean_everything(ctx: Context) -> None:
            clean_disk.fn(ctx)
    ''')
    registry = load(books)
    assert registry.problems == ()
    assert sorted(registry.runbooks) == ["clean-disk", "clean-everything"]
    assert registry.get("clean-disk").location == f"{books / 'a.py'}:3"


def test_tests_private_files_and_hidden_folders_are_skipped(books):
    broken = "def broken(:\n"
    for name in ("test_disk.py", "disk_test.py", "_private.py", "conftest.py",
                 "tests/check.py", "_internal/x.py", ".hidden/y.py"):
        write(books, name, broken + simple("should-not-load"), header=False)
    write(books, "real.py", simple("real"))
    registry = load(books)
    assert registry.problems == ()
    assert list(registry.runbooks) == ["real"]


def test_a_missing_folder_is_a_problem_not_a_crash(tmp_path, books):
    write(books, "real.py", simple("real"))
    registry = load(books, tmp_path / "nope")
    assert list(registry.runbooks) == ["real"]
    (problem,) = registry.problems
    assert problem.location == str(tmp_path / "nope")
    assert "does not exist" in problem.reason


# -- load problems -------------------------------------------------------------------


def test_a_syntax_error_is_located_and_the_rest_still_loads(books):
    write(books, "good.py", simple("good"))
    bad = write(books, "bad.py", '''
        @runbook(risk=Risk.LOW)
        def half_written(ctx: Context) -> None:
            ctx.run("true"
    ''')
    registry = load(books)
    assert list(registry.runbooks) == ["good"]
    (problem,) = registry.problems
    assert isinstance(problem, LoadProblem)
    file, _, line = problem.location.rpartition(":")
    assert file == str(bad)
    assert int(line) in (5, 6)
    assert "syntax error" in problem.reason
    assert str(problem).startswith(f"{bad}:")
    with pytest.raises(UnknownRunbookError, match=r"did not load.*syntax error"):
        registry.get("half-written")


def test_an_exception_at_import_reports_its_line(books):
    write(books, "good.py", simple("good"))
    bad = write(books, "bad.py", '''
        import os

        SETTINGS = {"region": "eu"}
        ZONE = SETTINGS["zone"]

        @runbook(risk=Risk.LOW)
        def uses_zone(ctx: Context) -> None:
            ctx.run("true")
    ''')
    registry = load(books)
    assert list(registry.runbooks) == ["good"]
    (problem,) = registry.problems
    assert problem.location == f"{bad}:6"
    assert problem.reason == "KeyError: 'zone'"
    with pytest.raises(UnknownRunbookError, match=r"uses-zone.*did not load"):
        registry.get("uses-zone")


def test_an_exception_in_a_helper_is_located_in_the_runbook_file(books):
    write(books, "_helpers.py", "def boom():\n    raise RuntimeError('no config')\n",
          header=False)
    bad = write(books, "uses.py", '''
        from _helpers import boom

        boom()
    ''')
    (problem,) = load(books).problems
    assert problem.location == f"{bad}:5"
    assert problem.reason == "RuntimeError: no config"


def test_a_definition_error_is_reported_with_the_file(books):
    bad = write(books, "bad.py", '''
        @runbook(risk=Risk.LOW)
        def untyped(ctx: Context, host) -> None:
            ctx.run("true")
    ''')
    (problem,) = load(books).problems
    assert problem.location == str(bad)
    assert "needs a type annotation" in problem.reason
    assert f"{bad}:3" in problem.reason


def test_duplicate_names_name_both_places_and_neither_loads(books):
    first = write(books, "a.py", simple("clean-disk"))
    second = write(books, "b.py", '''

        @runbook(risk=Risk.HIGH, name="clean-disk")
        def another(ctx: Context) -> None:
            ctx.run("true")
    ''')
    write(books, "c.py", simple("fine"))
    registry = load(books)
    assert list(registry.runbooks) == ["fine"]
    (problem,) = registry.problems
    assert f"{first}:3" in problem.reason
    assert f"{second}:4" in problem.reason
    assert "defined more than once" in problem.reason
    assert problem.names == ("clean-disk",)
    with pytest.raises(UnknownRunbookError) as info:
        registry.get("clean-disk")
    assert "did not load" in str(info.value)
    assert f"{first}:3" in str(info.value) and f"{second}:4" in str(info.value)


# -- lookup --------------------------------------------------------------------------


def test_a_near_miss_name_suggests_the_right_one(books):
    write(books, "a.py", simple("restart-web") + simple("rotate-logs"))
    registry = load(books)
    with pytest.raises(UnknownRunbookError, match="did you mean restart-web"):
        registry.get("restrat-web")
    with pytest.raises(UnknownRunbookError, match="selfdrive list"):
        registry.get("completely-different")


def test_lookup_in_an_empty_registry_says_nothing_loaded(books):
    with pytest.raises(UnknownRunbookError, match="no runbooks are loaded"):
        load(books).get("anything")


def test_lookup_mentions_failed_sources(books):
    write(books, "a.py", simple("restart-web"))
    write(books, "b.py", "this is not python\n", header=False)
    with pytest.raises(UnknownRunbookError, match="1 runbook source"):
        load(books).get("zzz-unrelated")


def test_registry_of_builds_a_registry_directly():
    @runbook(risk=Risk.LOW)
    def alpha(ctx: Context) -> None:
        """First."""

    @runbook(risk=Risk.MEDIUM, name="beta")
    def second(ctx: Context) -> None:
        """Second."""

    registry = Registry.of(alpha, second, alpha)
    assert registry.problems == ()
    assert [rb.name for rb in registry] == ["alpha", "beta"]
    assert registry.get("beta") is second
    with pytest.raises(DefinitionError, match="frozen"):
        alpha.precondition(lambda ctx: True)


def test_registry_of_reports_two_definitions_with_one_name():
    def make(risk: Risk):
        @runbook(risk=risk, name="same")
        def body(ctx: Context) -> None:
            """Made by a factory."""
        return body

    @runbook(risk=Risk.LOW, name="same")
    def other(ctx: Context) -> None:
        """Elsewhere."""

    registry = Registry.of(make(Risk.LOW), other)
    assert len(registry) == 0
    (problem,) = registry.problems
    assert "defined more than once" in problem.reason

    # One factory, two different runbooks: same file:line, still two definitions.
    twins = Registry.of(make(Risk.LOW), make(Risk.HIGH))
    assert len(twins) == 0
    assert "defined more than once" in twins.problems[0].reason


# -- entry points --------------------------------------------------------------------


def make_distribution(root: Path, dist: str, entries: dict[str, str]) -> None:
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def test_entry_points_bring_runbooks_from_installed_packages(tmp_path, books, monkeypatch):
    site = tmp_path / "site"
    mod = f"team_books_{tmp_path.name.replace('-', '_')}"
    write(site, f"{mod}.py", simple("from-module") + simple("also-from-module") + '''
ALL = [from_module]
NOT_A_RUNBOOK = 42
''')
    write(site, f"{mod}_single.py", simple("single", "HIGH"))
    make_distribution(site, f"teambooks{tmp_path.name.replace('-', '')}", {
        "whole": mod,
        "one": f"{mod}_single:single",
        "listed": f"{mod}:ALL",
        "broken": f"{mod}_missing",
        "wrong": f"{mod}:NOT_A_RUNBOOK",
    })
    monkeypatch.syspath_prepend(str(site))
    write(books, "local.py", simple("local"))

    registry = load_registry([books])

    assert sorted(registry.runbooks) == ["also-from-module", "from-module", "local", "single"]
    assert registry.get("single").risk is Risk.HIGH
    problems = {p.location: p.reason for p in registry.problems}
    assert len(problems) == 2
    broken = problems[f"entry point broken ({mod}_missing)"]
    assert "ModuleNotFoundError" in broken
    wrong = problems[f"entry point wrong ({mod}:NOT_A_RUNBOOK)"]
    assert "must name a module, a Runbook or a list of Runbooks" in wrong

    without = load_registry([books], entry_points=False)
    assert list(without.runbooks) == ["local"]


def test_an_entry_point_clashing_with_a_local_runbook_is_a_duplicate(tmp_path, books,
                                                                      monkeypatch):
    site = tmp_path / "site"
    mod = f"clash_books_{tmp_path.name.replace('-', '_')}"
    write(site, f"{mod}.py", simple("clean-disk"))
    make_distribution(site, f"clash{tmp_path.name.replace('-', '')}", {"all": mod})
    monkeypatch.syspath_prepend(str(site))
    write(books, "local.py", simple("clean-disk"))
    registry = load_registry([books])
    assert "clean-disk" not in registry.runbooks
    (problem,) = registry.problems
    assert str(site / f"{mod}.py") in problem.reason
    assert str(books / "local.py") in problem.reason
