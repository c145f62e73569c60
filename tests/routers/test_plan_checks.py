"""`tminus check` on router, flag store, traffic and flag declarations (no servers needed)."""

from __future__ import annotations

from tminus.plan.loader import load_plan_text

PLAN = """
name: demo
targets:
  routers:
    lb:
      kind: haproxy
      socket: /run/haproxy/admin.sock
      backend: shop
      pools: {stable: [web1], canary: [web3]}
      cookie: canary
      cookie_map: /etc/haproxy/tminus-shop.map
      cookie_backends: {canry: shop_canary}
    rollout: {kind: flags, store: flags, flag: new-ui, on_pool: green}
  flag_stores:
    flags: {kind: flagd, path: flags.json}
phases:
  - name: one
    steps:
      - {kind: traffic, router: rollout, weights: {stable: 50, canary: 50}}
      - {kind: flag, store: flags, flag: new-ui}
"""


def codes(text: str) -> list[tuple[str, str]]:
    result = load_plan_text(text, "plan.yaml")
    return [(p.code, p.message) for p in result.problems]


def test_pools_of_every_router_kind_are_checked() -> None:
    fixed = PLAN.replace(
        "{kind: flag, store: flags, flag: new-ui}",
        "{kind: flag, store: flags, flag: new-ui, enabled: true}",
    )
    found = codes(fixed)
    assert ("undefined-pool", "undefined pool 'canry'") in found
    assert ("undefined-pool", "undefined pool 'canary'") in found  # the flags router: stable/green
    assert len(found) == 2, found


def test_a_flag_step_needs_something_to_set() -> None:
    assert any("needs 'percentage' or 'enabled'" in m for _c, m in codes(PLAN))


def test_a_haproxy_cookie_needs_its_map() -> None:
    text = PLAN.replace("      cookie_map: /etc/haproxy/tminus-shop.map\n", "")
    assert any("needs 'cookie_map'" in m for _c, m in codes(text))


def test_a_cookie_route_may_match_one_value() -> None:
    fixed = PLAN.replace("cookie_backends: {canry: shop_canary}", "cookie_backends: {}").replace(
        "{kind: flag, store: flags, flag: new-ui}",
        "{kind: flag, store: flags, flag: new-ui, enabled: true}",
    )
    valued = fixed.replace("cookie: canary\n", 'cookie: {name: canary, value: "1"}\n')
    assert valued != fixed
    assert [c for c in codes(valued) if "canary" not in c[1] or c[0] != "undefined-pool"] == []
    nginx = valued.replace(
        "    rollout:",
        "    edge:\n      kind: nginx\n      include_file: /etc/nginx/conf.d/t.conf\n"
        "      pools: {stable: [10.0.0.1:80], canary: [10.0.0.2:80]}\n"
        '      cookie: {name: canary, value: "1"}\n    rollout:',
    )
    assert [c for c in codes(nginx) if c[0] != "undefined-pool"] == []
    bad = valued.replace('value: "1"', 'value: "a b"')
    assert any("value" in m for _c, m in codes(bad)), codes(bad)
    assert any("valu" in m for _c, m in codes(valued.replace("value:", "valu:")))
