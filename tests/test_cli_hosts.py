"""`tminus hosts`: inventories and plan targets through the real CLI."""

from __future__ import annotations

import json

from tests.conftest import Tm

INI = """\
lonely ansible_host=127.0.0.7

[web]
web[1:2] ansible_user=deploy
web3:2222

[web:vars]
http_port=80

[app:children]
web
"""

PLAN = """\
name: shop
environment: test
targets:
  inventory: inv/hosts.ini
  hosts:
    web3: {port: 2200, user: admin, become: true}
    extra: {address: 127.0.0.8}
  groups:
    canary: [web3, extra]
phases:
  - name: deploy
    steps: [{kind: run, name: noop, command: "true"}]
"""


def _setup(tm: Tm) -> None:
    (tm.cwd / "inv" / "group_vars").mkdir(parents=True)
    (tm.cwd / "inv" / "hosts.ini").write_text(INI)
    (tm.cwd / "inv" / "group_vars" / "app.yml").write_text("tier: app\n")
    (tm.cwd / "deploy").mkdir()
    (tm.cwd / "deploy" / "plan.yaml").write_text(PLAN.replace("inv/", "../inv/"))


def test_inventory_alone_json_like_ansible_inventory_list(tm: Tm) -> None:
    _setup(tm)
    data = tm.json("hosts", "-i", "inv/hosts.ini")
    assert data["all"] == {"children": ["app", "ungrouped"]}
    assert data["app"] == {"children": ["web"]}
    assert data["web"] == {"hosts": ["web1", "web2", "web3"]}
    assert data["ungrouped"] == {"hosts": ["lonely"]}
    hv = data["_meta"]["hostvars"]
    assert hv["web1"]["ansible_user"] == "deploy" and hv["web1"]["http_port"] == 80
    assert hv["web1"]["tier"] == "app" and "tier" not in hv["lonely"]
    assert hv["web3"]["tminus"]["port"] == 2222
    assert hv["lonely"]["tminus"]["address"] == "127.0.0.7"


def test_group_filter_and_table(tm: Tm) -> None:
    _setup(tm)
    data = tm.json("hosts", "-i", "inv/hosts.ini", "web")
    assert sorted(data["_meta"]["hostvars"]) == ["web1", "web2", "web3"]
    assert set(data) == {"_meta", "web"}
    out = tm("hosts", "-i", "inv/hosts.ini", check=0).stdout.splitlines()
    assert out[0].split() == ["HOST", "ADDRESS", "PORT", "USER", "BECOME", "KEY", "GROUPS"]
    assert out[1].split() == ["lonely", "127.0.0.7", "22", "ungrouped"]
    assert out[4].split() == ["web3", "web3", "2222", "app,web"]


def test_plan_merges_its_inventory_relative_to_the_plan(tm: Tm) -> None:
    _setup(tm)
    data = tm.json("hosts", "deploy/plan.yaml")
    hv = data["_meta"]["hostvars"]
    assert hv["web3"]["tminus"] == {
        "address": "web3",
        "port": 2200,
        "user": "admin",
        "identity_file": None,
        "known_hosts": None,
        "become": True,
        "local": False,
    }
    assert hv["web3"]["tier"] == "app"
    assert data["canary"] == {"hosts": ["extra", "web3"]}
    assert data["ungrouped"] == {"hosts": ["lonely"]}
    canary = tm.json("hosts", "deploy/plan.yaml", "canary")
    assert sorted(canary["_meta"]["hostvars"]) == ["extra", "web3"]


def test_errors_exit_2_with_file_and_line(tm: Tm) -> None:
    _setup(tm)
    (tm.cwd / "bad.ini").write_text("[web]\nweb1\nweb2 oops\n")
    r = tm("hosts", "-i", "bad.ini")
    assert r.returncode == 2 and "bad.ini:3: expected key=value" in r.stderr
    r = tm("hosts", "-i", "missing.ini")
    assert r.returncode == 2 and "missing.ini: no such inventory file" in r.stderr
    r = tm("hosts", "-i", "inv/hosts.ini", "nosuchgroup")
    assert r.returncode == 2 and "no host or group named 'nosuchgroup'" in r.stderr
    assert "hint: groups: all, app, ungrouped, web" in r.stderr
    r = tm("hosts")
    assert r.returncode == 2 and "give -i INVENTORY, a PLAN, or both" in r.stderr
    json.loads(tm("hosts", "-i", "inv/hosts.ini", "--output", "json", check=0).stdout)
