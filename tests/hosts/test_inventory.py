"""Ansible inventories resolved like Ansible does. The expected structures are written by hand
from Ansible's documented rules (inventory plugins ini/yaml, host_group_vars, variable
precedence: all < parent group < child group, inventory-file group vars < group_vars/all <
group_vars/<group> < inventory host vars < host_vars/<host>)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tminus.hosts.inventory import InventoryError, expand_host_pattern, resolve
from tminus.plan.targets import Host as TargetHost
from tminus.plan.targets import Targets

INI = """\
# an Ansible inventory, unchanged
bastion.example.com ansible_port=2200

[web]
web[01:03].example.com
web04.example.com:2222 ansible_user=deploy http_port=8080

[db]
db-[a:b].example.com ansible_host=10.0.0.5   # a trailing comment
; another comment style

[app:children]
web
db

[prod:children]
app

[web:vars]
http_port=80
role=web
tier=front

[app:vars]
role=app
tier=app
max_conn=100

[all:vars]
ansible_user=ops
ntp="ntp.example.com"
role=all
"""

YAML = """\
all:
  vars:
    ansible_user: ops
    ntp: ntp.example.com
    role: all
  hosts:
    bastion.example.com:
      ansible_port: 2200
  children:
    prod:
      children:
        app:
          vars: {role: app, tier: app, max_conn: 100}
          children:
            web:
              vars: {http_port: 80, role: web, tier: front}
              hosts:
                web[01:03].example.com:
                web04.example.com:2222: {ansible_user: deploy, http_port: 8080}
            db:
              hosts:
                db-[a:b].example.com: {ansible_host: 10.0.0.5}
"""

WEB = [f"web0{i}.example.com" for i in range(1, 5)]
DB = ["db-a.example.com", "db-b.example.com"]


def _vars_files(base: Path) -> None:
    (base / "group_vars" / "app").mkdir(parents=True)
    (base / "host_vars").mkdir()
    (base / "group_vars" / "all.yml").write_text("dns: 1.1.1.1\ntier: all-file\n")
    (base / "group_vars" / "web.yml").write_text("http_port: 8081\n")
    (base / "group_vars" / "app" / "main.yml").write_text("max_conn: 200\n")
    (base / "group_vars" / "app" / "extra.yaml").write_text("app_extra: true\n")
    (base / "host_vars" / "web01.example.com.yml").write_text(
        "http_port: 9000\nansible_become: yes\nansible_become_user: www\n"
    )


COMMON = {"ansible_user": "ops", "ntp": "ntp.example.com", "dns": "1.1.1.1"}
# group_vars/all beats [web:vars] / [app:vars] (Ansible: inventory-file group vars, then
# group_vars/all, then group_vars/<group>).
APP = {**COMMON, "role": "app", "tier": "all-file", "max_conn": 200, "app_extra": True}
EXPECTED_VARS: dict[str, dict[str, Any]] = {
    "bastion.example.com": {**COMMON, "role": "all", "tier": "all-file", "ansible_port": 2200},
    "web01.example.com": {
        **APP,
        "role": "web",
        "http_port": 9000,
        "ansible_become": True,
        "ansible_become_user": "www",
    },
    "web02.example.com": {**APP, "role": "web", "http_port": 8081},
    "web03.example.com": {**APP, "role": "web", "http_port": 8081},
    "web04.example.com": {
        **APP,
        "role": "web",
        "http_port": 8080,
        "ansible_user": "deploy",
        "ansible_port": 2222,
    },
    "db-a.example.com": {**APP, "ansible_host": "10.0.0.5"},
    "db-b.example.com": {**APP, "ansible_host": "10.0.0.5"},
}
EXPECTED_GROUPS = {
    "all": sorted(["bastion.example.com", *WEB, *DB]),
    "ungrouped": ["bastion.example.com"],
    "web": WEB,
    "db": DB,
    "app": sorted(WEB + DB),
    "prod": sorted(WEB + DB),
}


@pytest.mark.parametrize(("fname", "text"), [("hosts.ini", INI), ("hosts.yml", YAML)])
def test_ini_and_yaml_resolve_like_ansible(tmp_path: Path, fname: str, text: str) -> None:
    (tmp_path / fname).write_text(text)
    _vars_files(tmp_path)
    inv = resolve(tmp_path / fname)
    assert inv.groups == EXPECTED_GROUPS
    assert {n: h.vars for n, h in inv.hosts.items()} == EXPECTED_VARS
    web01, web04, db_a = (inv.hosts[n] for n in ("web01.example.com", WEB[3], DB[0]))
    assert web01.connection() == {
        "address": "web01.example.com",
        "port": 22,
        "user": "ops",
        "identity_file": None,
        "known_hosts": None,
        "become": "www",
        "local": False,
    }
    assert (web04.port, web04.user, web04.become) == (2222, "deploy", False)
    assert (db_a.address, db_a.port) == ("10.0.0.5", 22)
    assert inv.hosts["bastion.example.com"].port == 2200
    assert web01.groups == ["all", "app", "prod", "web"]
    listing = inv.to_ansible()
    assert listing["all"] == {"children": ["prod", "ungrouped"]}
    assert listing["prod"] == {"children": ["app"]}
    assert listing["app"] == {"children": ["db", "web"]}
    assert listing["web"] == {"hosts": WEB}
    assert listing["ungrouped"] == {"hosts": ["bastion.example.com"]}
    assert listing["_meta"]["hostvars"]["web02.example.com"]["http_port"] == 8081
    assert inv.warnings == []


def test_ini_values_go_through_literal_eval_like_ansible(tmp_path: Path) -> None:
    (tmp_path / "inv").write_text(
        "h1 a=1 b=yes c=True d='007' e=\"two words\" f=[1,2] g=\"{'k': 'v'}\" g2={'k':'v'} "
        "h=1.5 i=x=y\n"
        "[g]\nh1\n[g:vars]\nj=False\nk = spaced value \n"
    )
    hv = resolve(tmp_path / "inv").hosts["h1"].vars
    assert hv == {
        "a": 1,
        "b": "yes",
        "c": True,
        "d": "007",
        "e": "two words",
        "f": [1, 2],
        "g": {"k": "v"},
        "g2": "{k:v}",  # shlex removed the quotes, so literal_eval fails: a str, as in Ansible
        "h": 1.5,
        "i": "x=y",
        "j": False,
        "k": "spaced value",
    }


def test_children_declared_before_their_group_and_group_priority(tmp_path: Path) -> None:
    (tmp_path / "inv").write_text(
        "[parent:children]\nkid\n\n[kid]\nh1\n\n[a]\nh1\n[b]\nh1\n"
        "[a:vars]\nx=from-a\n[b:vars]\nx=from-b\n"
    )
    inv = resolve(tmp_path / "inv")
    assert inv.groups["parent"] == ["h1"]
    assert inv.hosts["h1"].vars["x"] == "from-b"  # same depth: by name, last wins
    (tmp_path / "inv").write_text(
        "[a]\nh1\n[b]\nh1\n[a:vars]\nx=from-a\nansible_group_priority=10\n[b:vars]\nx=from-b\n"
    )
    assert resolve(tmp_path / "inv").hosts["h1"].vars["x"] == "from-a"


def test_deeper_group_wins_over_its_parent_whatever_the_names(tmp_path: Path) -> None:
    (tmp_path / "inv.yaml").write_text(
        "zparent:\n  vars: {x: parent}\n  children:\n    achild:\n      vars: {x: child}\n"
        "      hosts: {h1: }\n"
    )
    assert resolve(tmp_path / "inv.yaml").hosts["h1"].vars["x"] == "child"


def test_ranges() -> None:
    assert expand_host_pattern("web[01:03].x") == ["web01.x", "web02.x", "web03.x"]
    assert expand_host_pattern("h[1:10:4]") == ["h1", "h5", "h9"]
    assert expand_host_pattern("db-[a:c]") == ["db-a", "db-b", "db-c"]
    assert expand_host_pattern("r[1:2]-[a:b]") == ["r1-a", "r1-b", "r2-a", "r2-b"]
    assert expand_host_pattern("plain.example.com") == ["plain.example.com"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[web]\nweb1\nweb2 not-a-var\n", "inv:3: expected key=value"),
        ("[app:children]\nweb\n", "inv:2: section [app:children] names undefined group 'web'"),
        ("[web:vars]\nx=1\n", "inv:1: section [web:vars] is for undefined group 'web'"),
        ("[web:bogus]\n", "inv:1: section [web:bogus] has unknown type"),
        ("[web]\nh[3:1]\n", "inv:2: range start is after its end"),
        ("[web stuff]\n", "inv:1: invalid section"),
        ("[web]\nh1 x='unterminated\n", "inv:2: cannot parse host line"),
    ],
)
def test_ini_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "inv").write_text(text)
    with pytest.raises(InventoryError) as err:
        resolve(tmp_path / "inv")
    assert f"{tmp_path}/{message}" in str(err.value)


def test_yaml_and_missing_file_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("all:\n  hosts: [a, b\n")
    with pytest.raises(InventoryError, match=r"bad\.yml:\d+: invalid YAML"):
        resolve(tmp_path / "bad.yml")
    with pytest.raises(InventoryError, match="no such inventory file"):
        resolve(tmp_path / "nope.ini")
    (tmp_path / "odd.yml").write_text("all:\n  hosts: {h1: }\n  color: blue\n")
    inv = resolve(tmp_path / "odd.yml")
    assert inv.groups["all"] == ["h1"] and "unexpected key 'color'" in inv.warnings[0]
    with pytest.raises(InventoryError, match="no host or group named 'nope'"):
        inv.select("nope")


def test_plan_targets_merge_and_win(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text(INI)
    _vars_files(tmp_path)
    targets = Targets(
        inventory="hosts.ini",
        hosts={
            "web02.example.com": TargetHost(
                port=2022, identity_file="~/.ssh/deploy", vars={"x": 1}
            ),
            "extra": TargetHost(address="127.0.0.9", user="me", become=True),
            "laptop": TargetHost(local=True),
        },
        groups={
            "web": {"hosts": ["web01.example.com", "extra"], "vars": {"role": "plan-web"}},
            "edge": {"children": ["web"], "hosts": ["laptop"]},
        },
    )
    inv = resolve(tmp_path / "hosts.ini", targets)
    # The plan's `web` replaces the inventory's membership; the other groups are untouched.
    assert inv.groups["web"] == ["extra", "web01.example.com"]
    assert inv.groups["edge"] == ["extra", "laptop", "web01.example.com"]
    assert inv.groups["db"] == DB
    assert "web02.example.com" in inv.groups["ungrouped"]
    w2 = inv.hosts["web02.example.com"]
    assert (w2.address, w2.port, w2.user, w2.identity_file) == (
        "web02.example.com",
        2022,
        "ops",
        "~/.ssh/deploy",
    )
    assert w2.vars["x"] == 1 and w2.vars["tier"] == "all-file"
    extra = inv.hosts["extra"]
    assert (extra.address, extra.user, extra.become, extra.vars["role"]) == (
        "127.0.0.9",
        "me",
        True,
        "plan-web",
    )
    # plan group vars beat the inventory's host vars (the plan layer is applied last)
    assert inv.hosts["web01.example.com"].vars["role"] == "plan-web"
    assert inv.hosts["laptop"].local


def test_plan_only_and_connection_aliases(tmp_path: Path) -> None:
    (tmp_path / "inv").write_text(
        "old ansible_ssh_host=10.1.1.1 ansible_ssh_port=2201 ansible_ssh_user=legacy "
        "ansible_private_key_file=/k ansible_become=true tminus_known_hosts=/kh\n"
        "me ansible_connection=local\n"
    )
    inv = resolve(tmp_path / "inv")
    old = inv.hosts["old"]
    assert old.connection() == {
        "address": "10.1.1.1",
        "port": 2201,
        "user": "legacy",
        "identity_file": "/k",
        "known_hosts": "/kh",
        "become": True,
        "local": False,
    }
    assert inv.hosts["me"].local
    only = resolve(None, Targets(hosts={"a": TargetHost(port=2)}, groups={"g": ["a"]}))
    assert only.groups == {"all": ["a"], "ungrouped": [], "g": ["a"]}
    assert only.hosts["a"].target().port == 2


def test_a_range_with_a_port_sets_the_port_ini_and_yaml(tmp_path: Path) -> None:
    """Mutation: drop the range-then-port branch of ``_split_port`` (the old code) and
    ``web[01:02]:2222`` becomes one host named ``web01:2222`` on port 22 — this fails."""
    (tmp_path / "inv").write_text('[web]\nweb[01:02]:2222\n"node[001:003]:2200" x=1\n')
    (tmp_path / "inv.yml").write_text(
        'web:\n  hosts:\n    web[01:02]:2222:\n    "node[001:003]:2200": {x: 1}\n'
    )
    for name in ("inv", "inv.yml"):
        inv = resolve(tmp_path / name)
        assert sorted(inv.hosts) == [
            "node001",
            "node002",
            "node003",
            "web01",
            "web02",
        ], name
        assert {h.name: h.port for h in inv.hosts.values()} == {
            "web01": 2222,
            "web02": 2222,
            "node001": 2200,
            "node002": 2200,
            "node003": 2200,
        }, name
        assert inv.hosts["node002"].vars["x"] == 1
    # IPv6 addresses keep their colons
    (tmp_path / "v6").write_text("[::1]:2022\nfe80::1\n")
    assert {h.name: h.port for h in resolve(tmp_path / "v6").hosts.values()} == {
        "::1": 2022,
        "fe80::1": 22,
    }


def test_ansible_group_priority_is_no_host_var(tmp_path: Path) -> None:
    """Mutation: store ``ansible_group_priority`` in the group's vars again (the old
    ``set_group_var``) and it leaks into ``h1``'s vars — this fails."""
    (tmp_path / "inv").write_text(
        "[a]\nh1\n[b]\nh1\n[a:vars]\nx=from-a\nansible_group_priority=10\n[b:vars]\nx=from-b\n"
    )
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "b.yml").write_text("ansible_group_priority: 3\n")
    inv = resolve(tmp_path / "inv")
    assert inv.hosts["h1"].vars["x"] == "from-a"  # the priority still orders the groups
    assert "ansible_group_priority" not in inv.hosts["h1"].vars
    listing = inv.to_ansible()
    assert "ansible_group_priority" not in listing["_meta"]["hostvars"]["h1"]
