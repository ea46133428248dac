"""The ``selfdrive`` pytest plugin (entry point ``pytest11``): fixtures for runbook tests.

Installed with selfdrive, so it loads in every pytest session of the environment:
it imports nothing beyond pytest at start-up, and each fixture imports the kit when
a test first asks for it (``bench/plugin_import.py`` measures this). Disable it with
``pytest -p no:selfdrive``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selfdrive.config.model import TeamConfig
    from selfdrive.registry.load import Registry
    from selfdrive.testing.fake import FakeContext


def _checked(fake: FakeContext) -> Iterator[FakeContext]:
    yield fake
    # A runbook that caught the UnscriptedCommand and went on must still fail its test.
    if fake.unscripted:
        pytest.fail("commands with no script (the runbook may have swallowed the error):\n  "
                    + "\n  ".join(fake.unscripted), pytrace=False)


@pytest.fixture
def selfdrive_fake(selfdrive_config: TeamConfig | None) -> Iterator[FakeContext]:
    """A :class:`~selfdrive.testing.FakeContext` (dry-run), with the team's inventory when
    a ``selfdrive.toml`` is found above the test file; fails the test if any command
    went unscripted."""
    from selfdrive.testing.fake import FakeContext

    yield from _checked(FakeContext(config=selfdrive_config))


@pytest.fixture
def selfdrive_fake_live(selfdrive_config: TeamConfig | None) -> Iterator[FakeContext]:
    """As ``selfdrive_fake``, but its direct context runs changes against the fakes."""
    from selfdrive.testing.fake import FakeContext

    yield from _checked(FakeContext(live=True, config=selfdrive_config))


@pytest.fixture
def selfdrive_config(request: pytest.FixtureRequest) -> TeamConfig | None:
    """The team's ``selfdrive.toml`` found walking up from the test file, else ``None``."""
    from selfdrive.config.load import find_config, load_config

    found = find_config(Path(str(request.path)).parent)
    return None if found is None else load_config(found)


@pytest.fixture
def selfdrive_registry(selfdrive_config: TeamConfig | None) -> Registry:
    """The team's runbooks as ``selfdrive list`` loads them (fails on load problems)."""
    from selfdrive.registry.load import load_registry

    if selfdrive_config is None:
        pytest.fail("selfdrive_registry: no selfdrive.toml above this test file",
                    pytrace=False)
    registry = load_registry(selfdrive_config.runbook_dirs,
                             entry_points=selfdrive_config.entry_points)
    if registry.problems:
        pytest.fail("runbooks failed to load:\n  "
                    + "\n  ".join(str(p) for p in registry.problems), pytrace=False)
    return registry
