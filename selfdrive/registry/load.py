"""Discovery: import runbook files by path and entry points, collect ``Runbook`` objects.

Nothing registers itself. Every load problem (syntax error, import failure, bad
definition, duplicate name) becomes a :class:`LoadProblem` value that ``list``,
``lint`` and ``run`` report, while the other files still load.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

from selfdrive.sdk.errors import UnknownRunbookError
from selfdrive.sdk.runbook import Runbook
from selfdrive.sdk.text import not_utf8, printable

ENTRY_POINT_GROUP = "selfdrive.runbooks"
SKIPPED_FILES = ("conftest.py",)


@dataclass(frozen=True)
class LoadProblem:
    """Why one source of runbooks did not load, located as ``file:line``."""

    location: str
    reason: str
    names: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


@dataclass(frozen=True)
class Registry:
    """An immutable set of runbooks by name, plus what failed to load."""

    runbooks: Mapping[str, Runbook] = field(default_factory=dict)
    problems: tuple[LoadProblem, ...] = ()

    @classmethod
    def of(cls, *runbooks: Runbook) -> Registry:
        """Build a registry directly (tests, embedding)."""
        collected: dict[str, Runbook] = {}
        problems: list[LoadProblem] = []
        _collect(runbooks, collected, problems)
        return cls(MappingProxyType(collected), tuple(problems))

    def get(self, name: str) -> Runbook:
        if name in self.runbooks:
            return self.runbooks[name]
        for problem in self.problems:
            if name in problem.names:
                raise UnknownRunbookError(f"runbook {name!r} did not load: {problem}")
        hint = difflib.get_close_matches(name, list(self.runbooks), n=3)
        msg = f"no runbook named {name!r}"
        if hint:
            msg += f"; did you mean {', '.join(hint)}?"
        elif self.runbooks:
            msg += " (`selfdrive list` shows them)"
        else:
            msg += "; no runbooks are loaded (check `runbooks` in selfdrive.toml)"
        if self.problems:
            msg += f"; {len(self.problems)} runbook source(s) failed to load (`selfdrive lint`)"
        raise UnknownRunbookError(msg)

    def __iter__(self) -> Any:
        return iter(sorted(self.runbooks.values(), key=lambda r: r.name))

    def __len__(self) -> int:
        return len(self.runbooks)


def load_registry(directories: Iterable[Path], *, entry_points: bool = True) -> Registry:
    """Load every runbook from ``directories`` (``*.py``, not tests) and entry points."""
    found: list[Runbook] = []
    problems: list[LoadProblem] = []
    for folder in directories:
        if not folder.is_dir():
            problems.append(LoadProblem(str(folder), "runbook folder does not exist"))
            continue
        for path in sorted(folder.rglob("*.py")):
            if _is_test_or_private(path, folder):
                continue
            why = not_utf8(str(path))
            if why is not None:  # its path could not be recorded with its runs
                problems.append(LoadProblem(printable(str(path)),
                                            f"file name: {why}; rename it"))
                continue
            module, problem = _import_file(path, folder)
            if problem is not None:
                problems.append(problem)
            elif module is not None:
                found.extend(_runbooks_in(vars(module).values()))
    if entry_points:
        _load_entry_points(found, problems)
    collected: dict[str, Runbook] = {}
    _collect(found, collected, problems)
    return Registry(MappingProxyType(collected), tuple(problems))


def _is_test_or_private(path: Path, root: Path) -> bool:
    rel = path.relative_to(root)
    name = path.name
    return (name in SKIPPED_FILES or name.startswith(("test_", "_")) or name.endswith("_test.py")
            or any(part.startswith((".", "_")) or part == "tests" for part in rel.parts[:-1]))


def _module_name(path: Path) -> str:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"selfdrive_runbooks_{digest}.{stem}"


def _import_file(path: Path, root: Path) -> tuple[ModuleType | None, LoadProblem | None]:
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return None, LoadProblem(str(path), "cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    root_text = str(root)
    added = root_text not in sys.path
    if added:  # lets runbook files share helper modules in their own folder
        sys.path.insert(0, root_text)
    # Registered before it runs, as an import would be: dataclasses and pickling look
    # their module up in sys.modules while the file executes.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        where = f"{exc.filename or path}:{exc.lineno or 0}"
        return None, LoadProblem(where, f"syntax error: {exc.msg}", _guess_names(path))
    except Exception as exc:
        sys.modules.pop(name, None)
        return None, LoadProblem(_locate(exc, path), f"{type(exc).__name__}: {exc}",
                                 _guess_names(path))
    finally:
        if added and root_text in sys.path:
            sys.path.remove(root_text)
    return module, None


def _locate(exc: BaseException, path: Path) -> str:
    """The deepest frame inside the runbook file, else the file itself."""
    line = 0
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno or 0
    text = str(exc)
    # DefinitionErrors already start with file:line; keep the file as the location.
    if text.startswith(str(path)):
        return str(path)
    return f"{path}:{line}" if line else str(path)


def _guess_names(path: Path) -> tuple[str, ...]:
    """Function names a broken file seems to define, so `run NAME` can say why it's missing."""
    import re

    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ()
    names = re.findall(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", text, flags=re.M)
    named = re.findall(r"name\s*=\s*[\"']([^\"']+)[\"']", text)
    return tuple({n.replace("_", "-") for n in names} | set(named))


def _runbooks_in(values: Iterable[Any]) -> list[Runbook]:
    seen: list[Runbook] = []
    for value in values:
        if isinstance(value, Runbook) and all(value is not s for s in seen):
            seen.append(value)
    return seen


def _load_entry_points(found: list[Runbook], problems: list[LoadProblem]) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:
            problems.append(LoadProblem(f"entry point {ep.name} ({ep.value})",
                                        f"{type(exc).__name__}: {exc}"))
            continue
        if isinstance(obj, Runbook):
            found.append(obj)
        elif isinstance(obj, ModuleType):
            found.extend(_runbooks_in(vars(obj).values()))
        elif isinstance(obj, list | tuple):
            found.extend(_runbooks_in(obj))
        else:
            problems.append(LoadProblem(f"entry point {ep.name} ({ep.value})",
                                        "must name a module, a Runbook or a list of Runbooks"))


def _same_definition(a: Runbook, b: Runbook) -> bool:
    """One definition seen twice: the same object, or the same file:line executed as two
    modules (a runbook file that a sibling file imports, ``from disk import clean_disk``)."""
    return a is b or (a.location == b.location and a.fn.__module__ != b.fn.__module__)


def _collect(runbooks: Iterable[Runbook], into: dict[str, Runbook],
             problems: list[LoadProblem]) -> None:
    first: dict[str, Runbook] = {}
    duplicated: dict[str, list[Runbook]] = {}
    for rb in runbooks:
        if rb.name in first and not _same_definition(first[rb.name], rb):
            duplicated.setdefault(rb.name, [first[rb.name]]).append(rb)
        else:
            first.setdefault(rb.name, rb)
    for name, rb in first.items():
        if name in duplicated:
            places = " and ".join(r.location for r in duplicated[name])
            problems.append(LoadProblem(duplicated[name][-1].location,
                                        f"runbook {name!r} is defined more than once: {places}",
                                        (name,)))
        else:
            into[name] = rb.freeze()
