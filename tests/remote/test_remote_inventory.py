"""[ssh] and [inventory] configuration, and resolving names to hosts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from selfdrive.config import parse_config
from selfdrive.config.remote import InventoryConfig, SshConfig
from selfdrive.sdk.errors import ConfigError, UsageError
from selfdrive.targets.inventory import HostSpec, Inventory, UnknownHostError, parse_raw

ROOT = Path("/srv/team")


def inventory(allow_raw: bool = False) -> Inventory:
    cfg = InventoryConfig.model_validate({
        "hosts": {
            "web1": {"address": "10.0.0.11", "user": "deploy", "key": "keys/deploy_ed25519"},
            "web2": {"address": "10.0.0.12", "port": 2222},
            "db1": {"address": "db1.internal"},
        },
        "groups": {"web": ["web1", "web2"], "all-db": ["db1"]},
    })
    return Inventory(cfg, root=ROOT, allow_raw_addresses=allow_raw)


def test_team_config_reads_ssh_and_inventory_tables(tmp_path: Path) -> None:
    data = {
        "team": "t",
        "ssh": {"known_hosts": "known_hosts", "trust_on_first_use": False,
                "connect_timeout": 5, "allow_raw_addresses": False},
        "inventory": {"hosts": {"web1": {"address": "10.0.0.11", "port": 22, "user": "deploy",
                                         "key": "keys/deploy_ed25519"}},
                      "groups": {"web": ["web1"]}},
    }
    cfg = parse_config(data, tmp_path / "selfdrive.toml")
    assert cfg.ssh.known_hosts_path(cfg.root) == (tmp_path / "known_hosts").resolve()
    host = cfg.inventory.hosts["web1"]
    assert host.key_path(cfg.root) == (tmp_path / "keys/deploy_ed25519").resolve()
    assert cfg.ssh.connect_timeout == 5
    assert Inventory.from_team(cfg).resolve("web") == [HostSpec(
        name="web1", address="10.0.0.11", port=22, user="deploy",
        key=(tmp_path / "keys/deploy_ed25519").resolve())]
    # Defaults: strict host keys, no raw addresses.
    default = parse_config({"team": "t"}, tmp_path / "selfdrive.toml")
    assert default.ssh == SshConfig()
    assert default.ssh.trust_on_first_use is False
    assert default.ssh.allow_raw_addresses is False
    assert default.inventory.hosts == {}


def test_unknown_keys_and_bad_values_name_the_dotted_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"team": "t", "ssh": {"known_host": "x"},
                      "inventory": {"hosts": {"web1": {"address": "a", "port": 70000}}}},
                     tmp_path / "selfdrive.toml")
    text = str(err.value)
    assert "ssh.known_host: unknown key" in text
    assert "inventory.hosts.web1.port" in text


def test_group_members_must_be_hosts() -> None:
    with pytest.raises(ValidationError) as err:
        InventoryConfig.model_validate({"hosts": {"web1": {"address": "a"}},
                                        "groups": {"web": ["web1", "web9"]}})
    assert "group 'web' lists 'web9', which is not a host" in str(err.value)


def test_groups_list_hosts_not_groups_and_names_mean_one_thing() -> None:
    with pytest.raises(ValidationError, match="groups list hosts, not other groups"):
        InventoryConfig.model_validate({"hosts": {"a": {"address": "a"}},
                                        "groups": {"g1": ["a"], "g2": ["g1"]}})
    with pytest.raises(ValidationError, match="group 'a' has the name of a host"):
        InventoryConfig.model_validate({"hosts": {"a": {"address": "a"}}, "groups": {"a": ["a"]}})


@pytest.mark.parametrize("name", ["", "-web", "web 1", "web/1", "a" * 64, "wéb", "web@1"])
def test_host_names_must_be_sane(name: str) -> None:
    with pytest.raises(ValidationError, match="is not allowed"):
        InventoryConfig.model_validate({"hosts": {name: {"address": "10.0.0.1"}}})


@pytest.mark.parametrize("address", ["", "a b", "deploy@web1", "web1/24"])
def test_addresses_must_be_plain(address: str) -> None:
    with pytest.raises(ValidationError, match="must be a host name or an IP address"):
        InventoryConfig.model_validate({"hosts": {"web1": {"address": address}}})


def test_resolve_expands_groups_in_order_without_repeats() -> None:
    inv = inventory()
    names = [h.name for h in inv.resolve(["web2", "web", "db1", "all-db"])]
    assert names == ["web2", "web1", "db1"]
    web1 = inv.resolve("web1")[0]
    assert web1 == HostSpec(name="web1", address="10.0.0.11", port=22, user="deploy",
                            key=(ROOT / "keys/deploy_ed25519").resolve())
    assert inv.resolve("web2")[0].port == 2222
    assert inv.resolve("web2")[0].known_hosts_name == "[10.0.0.12]:2222"
    assert web1.known_hosts_name == "10.0.0.11"


def test_empty_resolution_is_an_empty_list_never_all_hosts() -> None:
    assert inventory().resolve([]) == []
    empty = Inventory(InventoryConfig.model_validate({"groups": {}}), root=ROOT)
    assert empty.resolve([]) == []


def test_unknown_name_is_a_usage_error_with_close_matches() -> None:
    with pytest.raises(UnknownHostError) as err:
        inventory().resolve(["web1", "wbe1"])
    assert isinstance(err.value, UsageError)
    assert str(err.value).startswith("unknown host or group 'wbe1'; did you mean web1")
    assert "allow_raw_addresses" in str(err.value)
    with pytest.raises(UnknownHostError, match=r"'zzz' \(known: all-db, db1, web, web1, web2\)"):
        inventory().resolve("zzz")


def test_raw_addresses_parse_only_when_allowed() -> None:
    inv = inventory(allow_raw=True)
    [raw] = inv.resolve("ops@127.0.0.9:2201")
    assert raw == HostSpec(name="ops@127.0.0.9:2201", address="127.0.0.9", port=2201, user="ops")
    assert inv.resolve("web1")[0].address == "10.0.0.11"  # inventory names win
    assert parse_raw("127.0.0.5") == HostSpec(name="127.0.0.5", address="127.0.0.5")
    v6 = parse_raw("root@[::1]:2222")
    assert (v6.address, v6.port, v6.user, v6.endpoint) == ("::1", 2222, "root", "[::1]:2222")
    with pytest.raises(UnknownHostError, match="not a host address"):
        inv.resolve("a b")
    with pytest.raises(UnknownHostError, match="out of range"):
        parse_raw("h:70000")


def test_importing_the_targets_loads_neither_paramiko_nor_ansible_runner() -> None:
    code = ("import sys, selfdrive.targets, selfdrive.targets.ssh, selfdrive.targets.fanout, "
            "selfdrive.targets.ansible, selfdrive.targets.inventory; "
            "print(sorted(m for m in ('paramiko', 'ansible_runner', 'ansible') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
