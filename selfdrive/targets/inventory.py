"""Host names and groups from ``[inventory]`` resolved to connectable hosts."""

from __future__ import annotations

import difflib
import getpass
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfdrive.config.model import TeamConfig
from selfdrive.config.remote import InventoryConfig
from selfdrive.sdk.errors import UsageError

_RAW = re.compile(r"^(?:(?P<user>[^@\s:]+)@)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^@\s:/\[\]]+))"
                  r"(?::(?P<port>\d{1,5}))?$")


class UnknownHostError(UsageError):
    """A host or group name is not in the inventory (and raw addresses are not allowed)."""


@dataclass(frozen=True)
class HostSpec:
    """Where and as whom to connect. ``name`` is what journals and results show."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    key: Path | None = None

    @property
    def login(self) -> str:
        """The user to log in as: the inventory's, else the OS user's (as ``ssh`` does)."""
        return self.user or default_user()

    @property
    def endpoint(self) -> str:
        """``address:port`` for messages (IPv6 in brackets)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH and paramiko look up in known_hosts for this address and port."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in a bare container
        return "root"


def parse_raw(text: str) -> HostSpec:
    """Parse ``[user@]address[:port]`` (IPv6 as ``[addr]:port``) into a host named ``text``."""
    match = _RAW.fullmatch(text.strip())
    if not match:
        raise UnknownHostError(f"{text!r} is not a host address; write [user@]address[:port]")
    port = int(match["port"]) if match["port"] else 22
    if not 1 <= port <= 65535:
        raise UnknownHostError(f"{text!r}: port {port} is out of range 1-65535")
    return HostSpec(name=text.strip(), address=match["v6"] or match["host"], port=port,
                    user=match["user"])


class Inventory:
    """Resolves host and group names against one team's inventory.

    Group names expand to their hosts; duplicates are dropped keeping the first
    occurrence; an empty request resolves to an empty list (never to "all hosts").
    """

    def __init__(self, config: InventoryConfig, *, root: Path,
                 allow_raw_addresses: bool = False) -> None:
        self.config = config
        self.root = root
        self.allow_raw_addresses = allow_raw_addresses

    @classmethod
    def from_team(cls, team: TeamConfig) -> Inventory:
        """The team's inventory, paths against its config file's folder."""
        return cls(team.inventory, root=team.root,
                   allow_raw_addresses=team.ssh.allow_raw_addresses)

    def host(self, name: str) -> HostSpec:
        """One inventory host by name (not a group)."""
        cfg = self.config.hosts.get(name)
        if cfg is None:
            return self._unknown(name)
        return HostSpec(name=name, address=cfg.address, port=cfg.port, user=cfg.user,
                        key=cfg.key_path(self.root))

    def resolve(self, names_or_group: str | Sequence[str]) -> list[HostSpec]:
        """Hosts for a name, a group name, or a sequence of them, in order, without repeats."""
        names = [names_or_group] if isinstance(names_or_group, str) else list(names_or_group)
        out: list[HostSpec] = []
        seen: set[str] = set()
        for name in names:
            if not isinstance(name, str):
                raise UnknownHostError(f"host names must be strings, not {type(name).__name__}")
            for spec in self._expand(name):
                if spec.name not in seen:
                    seen.add(spec.name)
                    out.append(spec)
        return out

    def _expand(self, name: str) -> list[HostSpec]:
        if name in self.config.hosts:
            return [self.host(name)]
        if name in self.config.groups:
            return [self.host(member) for member in self.config.groups[name]]
        return [self._unknown(name)]

    def _unknown(self, name: str) -> HostSpec:
        if self.allow_raw_addresses:
            return parse_raw(name)
        known = sorted([*self.config.hosts, *self.config.groups])
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        if close:
            hint = f"; did you mean {', '.join(close)}?"
        elif known:
            hint = f" (known: {', '.join(known[:20])}{' …' if len(known) > 20 else ''})"
        else:
            hint = " (the inventory is empty)"
        raise UnknownHostError(
            f"unknown host or group {name!r}{hint}; add it to [inventory] or set "
            f"[ssh] allow_raw_addresses = true to use user@address:port")
