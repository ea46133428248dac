"""The ``[ssh]`` and ``[inventory]`` tables of ``selfdrive.toml``: hosts and trust.

```toml
[ssh]
known_hosts = "known_hosts"       # relative to selfdrive.toml; host keys checked strictly
trust_on_first_use = false        # true: an UNKNOWN key is appended; a changed one never is
connect_timeout = 10              # seconds to open TCP and finish the SSH handshake
connect_retries = 3               # attempts when sshd drops a connect (MaxStartups, banner)
max_connects_per_host = 8         # concurrent handshakes to one address:port (sshd MaxStartups)
allow_raw_addresses = false       # a name not in the inventory is an error unless true

[inventory.hosts.web1]
address = "10.0.0.11"
port = 22
user = "deploy"                   # default: the OS user running selfdrive
key = "keys/deploy_ed25519"       # relative to selfdrive.toml; without it, agent and default keys

[inventory.groups]
web = ["web1", "web2"]
```

Paths stay as written; the helpers taking ``root`` (the config file's folder,
``TeamConfig.root``) resolve them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Host and group names: what an operator types on the command line and in runbooks.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class _Strict(BaseModel):
    # TOML has inf and nan; no setting means either.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a sane host or group name, else raise ``ValueError``."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{kind} name {name!r} is not allowed: use letters, digits, '.', '_' "
                         f"and '-', starting with a letter or digit, at most 63 characters")
    return name


class SshConfig(_Strict):
    """How selfdrive connects over SSH. Host keys are always checked."""

    known_hosts: str = "known_hosts"
    trust_on_first_use: bool = False
    connect_timeout: Annotated[float, Field(gt=0, le=600)] = 10.0
    connect_retries: Annotated[int, Field(ge=1, le=10)] = 3
    max_connects_per_host: Annotated[int, Field(ge=1, le=1000)] = 8
    allow_raw_addresses: bool = False

    @field_validator("known_hosts")
    @classmethod
    def _known_hosts(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("known_hosts must name a file")
        return value

    def known_hosts_path(self, root: Path) -> Path:
        """The known_hosts file, resolved against ``root`` (the config file's folder)."""
        return (root / Path(self.known_hosts).expanduser()).resolve()


class HostConfig(_Strict):
    """One host of the inventory."""

    address: str
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: str | None = None
    key: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value) or "@" in value or "/" in value:
            raise ValueError(f"address {value!r} must be a host name or an IP address "
                             f"(no spaces, '@' or '/'; the user and port have their own keys)")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() or c in "@:" for c in value)):
            raise ValueError(f"user {value!r} must be a non-empty login name without "
                             f"spaces, '@' or ':'")
        return value

    def key_path(self, root: Path) -> Path | None:
        """The private key file, resolved against ``root``; ``None``: agent and default keys."""
        if self.key is None:
            return None
        return (root / Path(self.key).expanduser()).resolve()


class InventoryConfig(_Strict):
    """Named hosts and groups of them. Groups list host names only."""

    hosts: dict[str, HostConfig] = Field(default_factory=dict)
    groups: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, value: dict[str, HostConfig]) -> dict[str, HostConfig]:
        for name in value:
            check_name("host", name)
        return value

    @model_validator(mode="after")
    def _groups(self) -> InventoryConfig:
        for group, members in self.groups.items():
            check_name("group", group)
            if group in self.hosts:
                raise ValueError(f"group {group!r} has the name of a host; a name must mean "
                                 f"one thing")
            for member in members:
                if member not in self.hosts:
                    hint = (" (groups list hosts, not other groups)"
                            if member in self.groups else "")
                    raise ValueError(f"group {group!r} lists {member!r}, which is not a host "
                                     f"in [inventory.hosts]{hint}")
        return self
