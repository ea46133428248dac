"""Scenario files and the seeded fault schedule.

A scenario (TOML) says which fault classes happen how often, over what window, and how
the simulated humans behave; ``schedule(scenario, seed)`` turns it into the concrete
list of faults (what, where, when) with ``random.Random(seed)``. The same seed always
gives the same schedule; a different seed changes which faults, where and when.
"""

from __future__ import annotations

import math
import random
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleet import GROUPS

HERE = Path(__file__).resolve().parent
BUILTIN = {"smoke": HERE / "scenarios" / "smoke.toml", "full": HERE / "scenarios" / "full.toml"}

SERVICE_HOSTS = GROUPS["front"] + GROUPS["api"] + GROUPS["worker"]
ALL_HOSTS = [h for hosts in GROUPS.values() for h in hosts]

# class -> (hosts it may hit, has a runbook in the harness's project)
CLASSES: dict[str, tuple[list[str], bool]] = {
    "storm": (GROUPS["front"], True),
    "dead_dependency": (GROUPS["cache"] + GROUPS["queue"], True),
    "db_connections": (GROUPS["postgres"], True),
    "expired_cert": (GROUPS["edge"], True),
    "crashed_service": (SERVICE_HOSTS, True),
    "bad_config": (SERVICE_HOSTS, True),
    "flapping": (GROUPS["front"] + GROUPS["api"], False),
    "unfixable": (SERVICE_HOSTS, False),
    "full_disk": (ALL_HOSTS, True),
    "runaway_process": (ALL_HOSTS, True),
}
ORDER = list(CLASSES)  # storm first: it takes most of a group before single hosts are drawn
RUNBOOK_FOR = {
    "crashed_service": {"gameday-restart-service"},
    "storm": {"gameday-restart-service"},
    "full_disk": {"gameday-free-disk"},
    "runaway_process": {"gameday-kill-runaway"},
    "db_connections": {"gameday-end-idle-sessions"},
    "expired_cert": {"gameday-renew-cert", "check-cert-expiry"},
    "bad_config": {"gameday-rollback-config"},
    "dead_dependency": {"gameday-restart-upstream"},
    "flapping": set(),
    "unfixable": set(),
}


class ScenarioError(Exception):
    """A scenario that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Humans:
    approve_delay: tuple[float, float] = (1.0, 2.5)
    deny_share: float = 0.15
    fix_delay: tuple[float, float] = (5.0, 8.0)


@dataclass(frozen=True)
class Scenario:
    name: str
    window: float
    faults: list[tuple[str, int]]
    humans: Humans = field(default_factory=Humans)
    level_timeout: float = 60.0


@dataclass(frozen=True)
class Fault:
    id: str
    cls: str
    at: float
    hosts: list[str]
    fix_delay: float
    variant: str = ""
    duration: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _pair(value: Any, key: str, where: str) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in value)
            or value[0] > value[1]):
        raise ScenarioError(f"{where}: {key} must be [low, high] seconds, low <= high")
    return float(value[0]), float(value[1])


def load(spec: str) -> Scenario:
    """``smoke``, ``full`` or the path of a scenario file."""
    path = BUILTIN.get(spec) or Path(spec)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {spec!r}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    where = str(path)
    known = {"name", "window", "level_timeout", "humans", "faults"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}")
    window = raw.get("window", 3.0)
    if not isinstance(window, int | float) or not 0 <= window <= 3600:
        raise ScenarioError(f"{where}: window must be 0..3600 seconds")
    timeout = raw.get("level_timeout", 60.0)
    if not isinstance(timeout, int | float) or not 5 <= timeout <= 7200:
        raise ScenarioError(f"{where}: level_timeout must be 5..7200 seconds")
    h = raw.get("humans", {})
    if not isinstance(h, dict) or set(h) - {"approve_delay", "deny_share", "fix_delay"}:
        raise ScenarioError(f"{where}: [humans] takes approve_delay, deny_share, fix_delay")
    share = h.get("deny_share", 0.15)
    if not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ScenarioError(f"{where}: humans.deny_share must be between 0 and 1")
    humans = Humans(_pair(h.get("approve_delay", [1.0, 2.5]), "humans.approve_delay", where),
                    float(share), _pair(h.get("fix_delay", [5.0, 8.0]), "humans.fix_delay",
                                        where))
    faults = []
    entries = raw.get("faults")
    if not isinstance(entries, list) or not entries:
        raise ScenarioError(f"{where}: no [[faults]] given")
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or set(entry) - {"class", "count"}:
            raise ScenarioError(f"{where}: [[faults]] #{i} takes class and count only")
        cls, count = entry.get("class"), entry.get("count", 1)
        if cls not in CLASSES:
            raise ScenarioError(f"{where}: [[faults]] #{i}: unknown fault class {cls!r} "
                                f"(known: {', '.join(sorted(CLASSES))})")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 50:
            raise ScenarioError(f"{where}: [[faults]] #{i}: count must be 1..50")
        faults.append((cls, count))
    name = raw.get("name", path.stem)
    if not isinstance(name, str):
        raise ScenarioError(f"{where}: name must be a string")
    return Scenario(name, float(window), faults, humans, float(timeout))


def schedule(scenario: Scenario, seed: int) -> list[Fault]:
    """The faults of one level, in time order: every level of a game day gets this list."""
    rng = random.Random(seed)
    wanted = {cls: 0 for cls in CLASSES}
    for cls, count in scenario.faults:
        wanted[cls] += count
    used: set[str] = set()
    out: list[Fault] = []
    for cls in ORDER:
        candidates, _ = CLASSES[cls]
        for _ in range(wanted[cls]):
            free = [h for h in candidates if h not in used] or list(candidates)
            if cls == "storm":
                hosts = sorted(rng.sample(free, max(2, math.ceil(len(free) * 0.75))))
            else:
                hosts = [rng.choice(free)]
            used.update(hosts)
            variant = rng.choice(["corrupt_data", "broken_install"]) if cls == "unfixable" else ""
            duration = round(rng.uniform(2.5, 4.0), 2) if cls == "flapping" else 0.0
            out.append(Fault("", cls, round(rng.uniform(0, scenario.window), 2), hosts,
                             round(rng.uniform(*scenario.humans.fix_delay), 2), variant,
                             duration))
    out.sort(key=lambda f: (f.at, f.cls, f.hosts))
    return [Fault(f"f{i:02d}", f.cls, f.at, f.hosts, f.fix_delay, f.variant, f.duration)
            for i, f in enumerate(out, start=1)]
