"""The targets one run reaches: opened lazily, reused within the run, closed at its end."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import TYPE_CHECKING

from selfdrive.config.model import TeamConfig
from selfdrive.targets.base import Target

if TYPE_CHECKING:
    from selfdrive.targets.inventory import HostSpec, Inventory


class TargetPool:
    """Local shell plus one SSH target per host, shared by a run's plan and its execution."""

    def __init__(self, config: TeamConfig, local: Target) -> None:
        self.config = config
        self.local = local
        self._ssh: dict[tuple[str, str | None, int], Target] = {}
        self._lock = threading.Lock()
        self._inventory: Inventory | None = None

    @property
    def inventory(self) -> Inventory:
        if self._inventory is None:
            from selfdrive.targets.inventory import Inventory

            self._inventory = Inventory(self.config.inventory, root=self.config.root,
                                        allow_raw_addresses=self.config.ssh.allow_raw_addresses)
        return self._inventory

    def host(self, name: str, *, user: str | None = None, port: int | None = None) -> HostSpec:
        """One host by inventory name (a group is refused: use ``ctx.hosts``)."""
        from selfdrive.targets.inventory import UnknownHostError

        if not isinstance(name, str) or not name:
            raise UnknownHostError(f"ctx.ssh() takes one host name, not {name!r}")
        if name in self.config.inventory.groups:
            raise UnknownHostError(f"{name!r} is a group; ctx.ssh() takes one host, "
                                   f"ctx.hosts({name!r}) takes a group")
        spec = self.inventory.resolve(name)[0]
        if user is not None:
            spec = dataclasses.replace(spec, user=user)
        if port is not None:
            spec = dataclasses.replace(spec, port=port)
        return spec

    def hosts(self, names_or_group: str | list[str]) -> list[HostSpec]:
        return self.inventory.resolve(names_or_group)

    def ssh(self, spec: HostSpec) -> Target:
        from selfdrive.targets.ssh import SshTarget

        key = (spec.name, spec.user, spec.port)
        with self._lock:
            target = self._ssh.get(key)
            if target is None:
                target = SshTarget.from_config(spec, self.config.ssh, self.config.root)
                self._ssh[key] = target
            return target

    def close(self) -> None:
        with self._lock:
            targets, self._ssh = list(self._ssh.values()), {}
        for target in targets:
            with contextlib.suppress(Exception):
                target.close()
