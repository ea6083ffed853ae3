"""Risk rules on every backend: each rule holds a new order with the rule named, held orders
are released or rejected, blacklists hold across platforms, the dry run writes nothing, and
bad risk settings are reported with file, shop and field."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import Engine, select, update

import robot.cli
from connectors.base import Order
from connectors.memory import MemoryConnectorFactory
from robot import orders, pipeline, risk
from robot.cli import cmd_risk
from robot.clock import DEFAULT_ZONE, utcnow
from robot.config import RiskRules, load_config
from robot.display import format_time
from robot.errors import ConfigError, UserError
from robot.schema import audit_log, metadata
from robot.schema import orders as orders_t
from robot.vault import Vault
from tests.factories import Shop, paid_order, seed_codes, sku

ITEMS = (sku("s1", ("p1", 1)), sku("vip", ("p1", 1)))


@dataclass(frozen=True)
class RiskShop(Shop):
    """The test shop with risk rules (robot.config.ShopConfig has the same field)."""

    risk: RiskRules | None = None


def shop(name: str = "shop-a", platform: str = "memory", **rules: Any) -> RiskShop:
    return RiskShop(name=name, platform=platform, items=ITEMS,
                    risk=RiskRules.model_validate(rules))


def with_ip(order: Order, ip: str) -> Order:
    return dataclasses.replace(order, buyer_ip=ip)


def row_of(engine: Engine, order_id: int | None) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(orders_t).where(orders_t.c.id == order_id)).one()


def actions(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.action, r.subject) for r in conn.execute(
            select(audit_log.c.action, audit_log.c.subject)
            .order_by(audit_log.c.at, audit_log.c.chain, audit_log.c.seq))]  # oldest first


# ---------------------------------------------------------------------------- each rule


def test_buyer_rate_holds_the_order_over_the_limit(engine: Engine) -> None:
    """The 4th order of one buyer within 1h is held as buyer_rate; an hour later one passes."""
    s = shop(buyer_rate={"max_orders": 3, "window": "1h"})
    t0 = utcnow()
    states = [pipeline.intake(engine, s, paid_order(f"R{i}", ("s1", 1)),
                              now=t0 + timedelta(minutes=i)).state for i in range(4)]
    assert states == ["received", "received", "received", "held"]
    held = row_of(engine, pipeline.intake(engine, s, paid_order("R3b", ("s1", 1)),
                                          now=t0 + timedelta(minutes=5)).order_id)
    assert held.reason == "risk: buyer_rate 5 orders in 1h > 3"
    other = pipeline.intake(engine, s, paid_order("X1", ("s1", 1), buyer="someone-else"),
                            now=t0 + timedelta(minutes=6))
    assert other.state == "received"
    later = pipeline.intake(engine, s, paid_order("R9", ("s1", 1)),
                            now=t0 + timedelta(hours=1, minutes=4))
    assert later.state == "received"


def test_buyer_rate_counts_every_shop_of_the_platform_only(engine: Engine) -> None:
    """A buyer's orders in two shops of one platform add up; the same id elsewhere does not."""
    rules = {"buyer_rate": {"max_orders": 1, "window": "1d"}}
    pipeline.intake(engine, shop("shop-a", **rules), paid_order("A1", ("s1", 1)))
    other_platform = pipeline.intake(engine, shop("shop-c", "other", **rules),
                                     paid_order("C1", ("s1", 1)))
    assert other_platform.state == "received"
    second = pipeline.intake(engine, shop("shop-b", **rules), paid_order("B1", ("s1", 1)))
    assert second.state == "held"
    assert row_of(engine, second.order_id).reason == "risk: buyer_rate 2 orders in 1d > 1"


def test_ip_rate_holds_orders_from_one_ip_across_buyers_and_platforms(engine: Engine) -> None:
    """Orders from one IP count across buyers and platforms; orders without an IP never do."""
    rules = {"ip_rate": {"max_orders": 2, "window": "30m"}}
    a, b = shop("shop-a", **rules), shop("shop-b", "other", **rules)
    r1 = pipeline.intake(engine, a, with_ip(paid_order("I1", ("s1", 1), buyer="u1"), "10.0.0.7"))
    r2 = pipeline.intake(engine, b, with_ip(paid_order("I2", ("s1", 1), buyer="u2"), "10.0.0.7"))
    r3 = pipeline.intake(engine, a, with_ip(paid_order("I3", ("s1", 1), buyer="u3"), "10.0.0.7"))
    no_ip = [pipeline.intake(engine, a, paid_order(f"N{i}", ("s1", 1), buyer=f"n{i}")).state
             for i in range(3)]
    assert (r1.state, r2.state, r3.state) == ("received", "received", "held")
    assert row_of(engine, r3.order_id).reason == "risk: ip_rate 3 orders in 30m > 2"
    assert no_ip == ["received"] * 3


def test_quantity_per_order_is_held(engine: Engine) -> None:
    """More units on one order than max_quantity holds it; exactly the limit passes."""
    s = shop(max_quantity=5)
    ok = pipeline.intake(engine, s, paid_order("Q1", ("s1", 3), ("vip", 2)))
    big = pipeline.intake(engine, s, paid_order("Q2", ("s1", 4), ("vip", 2), buyer="b2"))
    assert (ok.state, big.state) == ("received", "held")
    assert row_of(engine, big.order_id).reason == "risk: quantity 6 units > 5"


def test_amount_per_buyer_per_day_is_held(engine: Engine) -> None:
    """A buyer's totals since local midnight above the limit (in yuan) hold; cancelled orders
    don't count."""
    s = shop(buyer_amount_per_day_yuan="25.50")
    t0 = utcnow()
    first = pipeline.intake(engine, s, paid_order("M1", ("s1", 1)), now=t0)  # 10.00
    with engine.begin() as conn:
        conn.execute(update(orders_t).where(orders_t.c.id == first.order_id)
                     .values(state="cancelled"))
    second = pipeline.intake(engine, s, paid_order("M2", ("s1", 2)), now=t0)  # 20.00
    third = pipeline.intake(engine, s, paid_order("M3", ("s1", 1)), now=t0)  # 30.00 in 24h
    assert (second.state, third.state) == ("received", "held")
    assert row_of(engine, third.order_id).reason == (
        "risk: buyer_amount_per_day 30.00 yuan today > 25.50")
    next_day = pipeline.intake(engine, s, paid_order("M4", ("s1", 1)),
                               now=t0 + timedelta(days=1, seconds=1))
    assert next_day.state == "received"


def test_new_buyer_first_big_order_is_held(engine: Engine) -> None:
    """A buyer with nothing shipped yet is held above the limit; a buyer with a shipment is not."""
    s = shop(new_buyer_first_order_yuan=25)
    small = pipeline.intake(engine, s, paid_order("F1", ("s1", 2), buyer="new"))  # 20.00
    big = pipeline.intake(engine, s, paid_order("F2", ("s1", 3), buyer="new"))  # 30.00
    assert (small.state, big.state) == ("received", "held")
    assert row_of(engine, big.order_id).reason == "risk: new_buyer first order 30.00 yuan > 25.00"
    with engine.begin() as conn:
        conn.execute(update(orders_t).where(orders_t.c.id == small.order_id)
                     .values(state="shipped"))
    known = pipeline.intake(engine, s, paid_order("F3", ("s1", 3), buyer="new"))
    assert known.state == "received"


def test_review_skus_always_hold(engine: Engine) -> None:
    """An order with a listed SKU is held naming it; other SKUs pass."""
    s = shop(review_skus=[{"sku_id": "vip"}, {"outer_id": "X-1"}])
    plain = pipeline.intake(engine, s, paid_order("S1", ("s1", 1)))
    vip = pipeline.intake(engine, s, paid_order("S2", ("s1", 1), ("vip", 1)))
    assert (plain.state, vip.state) == ("received", "held")
    assert row_of(engine, vip.order_id).reason == "risk: review_sku sku_id=vip"


def test_several_rules_are_all_named_and_audited(engine: Engine) -> None:
    """Every broken rule is in the reason, and the hold is audited with the rules."""
    s = shop(max_quantity=1, review_skus=[{"sku_id": "vip"}])
    r = pipeline.intake(engine, s, paid_order("S3", ("vip", 2)))
    assert row_of(engine, r.order_id).reason == "risk: quantity 2 units > 1; review_sku sku_id=vip"
    assert ("risk_hold", f"order:{r.order_id}") in actions(engine)
    with engine.connect() as conn:
        details = json.loads(conn.execute(select(audit_log.c.details).where(
            audit_log.c.action == "risk_hold")).scalar_one())
    assert details["rules"] == ["quantity", "review_sku"]


def test_no_rules_hold_nothing(engine: Engine) -> None:
    """With no risk settings (the default), busy buyers and big orders go straight through."""
    s = RiskShop(items=ITEMS)
    states = {pipeline.intake(engine, s, paid_order(f"Z{i}", ("s1", 50))).state for i in range(5)}
    assert states == {"received"}
    assert "risk_hold" not in {a for a, _ in actions(engine)}


# ---------------------------------------------------------------------------- release / reject


def test_risk_held_order_is_released_and_delivered(engine: Engine, vault: Vault) -> None:
    """Releasing a risk-held order sends it to allocation, and it gets its codes."""
    seed_codes(engine, vault, "p1", 2)
    r = pipeline.intake(engine, shop(max_quantity=1), paid_order("L1", ("s1", 2)))
    assert r.state == "held" and r.order_id is not None
    assert pipeline.allocate_next(engine) is None  # held orders are not allocated
    assert orders.release(engine, r.order_id, actor="test") == "received"
    res = pipeline.allocate_next(engine)
    assert res is not None and res.order_id == r.order_id and res.state == "allocated"
    assert ("release", f"order:{r.order_id}") in actions(engine)


def test_risk_held_order_is_rejected(engine: Engine) -> None:
    """Rejecting a risk-held order ends it (nothing is shipped) and is audited."""
    r = pipeline.intake(engine, shop(max_quantity=1), paid_order("J1", ("s1", 2)))
    assert r.order_id is not None
    orders.reject(engine, r.order_id, actor="test", reason="fraud")
    row = row_of(engine, r.order_id)
    assert (row.state, row.reason) == ("rejected", "fraud")
    assert pipeline.allocate_next(engine) is None
    assert ("reject", f"order:{r.order_id}") in actions(engine)
    with pytest.raises(UserError, match="not held"):
        orders.release(engine, r.order_id, actor="test")


# ---------------------------------------------------------------------------- blacklists


def test_blacklisted_buyer_is_held_on_two_platforms(engine: Engine) -> None:
    """A blacklisted buyer id holds orders in shops of two platforms, even with no rules."""
    risk.add_blacklist(engine, "buyer", "bad-buyer", actor="test", reason="chargebacks")
    tb = Shop(name="tb-main", platform="taobao", items=ITEMS)  # no risk attribute at all
    yz = shop("yz-main", "youzan")
    r1 = pipeline.intake(engine, tb, paid_order("T1", ("s1", 1), buyer="bad-buyer"))
    r2 = pipeline.intake(engine, yz, paid_order("Y1", ("s1", 1), buyer="bad-buyer"))
    ok = pipeline.intake(engine, yz, paid_order("Y2", ("s1", 1), buyer="good-buyer"))
    assert (r1.state, r2.state, ok.state) == ("held", "held", "received")
    assert row_of(engine, r1.order_id).reason == (
        "risk: blacklist_buyer buyer bad-buyer is blacklisted")
    risk.remove_blacklist(engine, "buyer", "bad-buyer", actor="test")
    again = pipeline.intake(engine, tb, paid_order("T2", ("s1", 1), buyer="bad-buyer"))
    assert again.state == "received"
    assert [a for a in actions(engine) if a[0].startswith("blacklist")] == [
        ("blacklist_add", "buyer:bad-buyer"), ("blacklist_remove", "buyer:bad-buyer")]


def test_blacklisted_ip_matches_in_canonical_form(engine: Engine) -> None:
    """An IP blacklisted once holds orders from it on any platform, however it is spelled."""
    entry = risk.add_blacklist(engine, "ip", " 2001:DB8::0001 ", actor="test")
    assert entry.value == "2001:db8::1"
    r1 = pipeline.intake(engine, shop("a"), with_ip(paid_order("P1", ("s1", 1)), "2001:db8:0::1"))
    r2 = pipeline.intake(engine, shop("b", "other"),
                         with_ip(paid_order("P2", ("s1", 1), buyer="x"), "2001:DB8::1"))
    assert (r1.state, r2.state) == ("held", "held")
    assert row_of(engine, r2.order_id).buyer_ip == "2001:db8::1"


def test_blacklist_refuses_duplicates_bad_ips_and_unknown_removals(engine: Engine) -> None:
    """Adding twice, a malformed IP and removing what is not listed are clear user errors."""
    risk.add_blacklist(engine, "ip", "10.1.2.3", actor="test")
    with pytest.raises(UserError, match="already blacklisted"):
        risk.add_blacklist(engine, "ip", "10.1.2.3", actor="test")
    with pytest.raises(UserError, match="not an IP address"):
        risk.add_blacklist(engine, "ip", "10.1.2", actor="test")
    with pytest.raises(UserError, match="not blacklisted"):
        risk.remove_blacklist(engine, "buyer", "nobody", actor="test")
    assert [(e.kind, e.value) for e in risk.list_blacklist(engine)] == [("ip", "10.1.2.3")]


@dataclass
class FakeApp:
    """What the risk commands use of robot.cli.common.App."""

    engine: Engine
    console: Console
    config: Any = None
    zone: tzinfo = DEFAULT_ZONE

    def time(self, value: datetime | None, *, empty: str = "") -> str:
        return format_time(value, zone=self.zone, empty=empty)


def run(app: FakeApp, *args: str) -> Any:
    group = {"blacklist": cmd_risk.blacklist_group, "risk": cmd_risk.risk_group}[args[0]]
    return CliRunner().invoke(group, list(args[1:]), obj=app)


def test_blacklist_cli_add_list_remove(engine: Engine) -> None:
    """`robot blacklist add/list/remove` work for buyers and IPs and insist on one of them."""
    app = FakeApp(engine, Console(width=200, color_system=None))
    assert run(app, "blacklist", "add", "--buyer", "b-1", "--reason", "fraud").exit_code == 0
    assert run(app, "blacklist", "add", "--ip", "192.0.2.9").exit_code == 0
    both = run(app, "blacklist", "add", "--buyer", "b", "--ip", "192.0.2.1")
    assert both.exit_code != 0 and "one of them" in both.output
    listed = json.loads(run(app, "blacklist", "list", "--json").stdout)
    assert [(e["kind"], e["value"], e["reason"]) for e in listed] == [
        ("buyer", "b-1", "fraud"), ("ip", "192.0.2.9", None)]
    assert "192.0.2.9" in run(app, "blacklist", "list").stdout
    assert run(app, "blacklist", "remove", "--ip", "192.0.2.9").exit_code == 0
    assert [e.value for e in risk.list_blacklist(engine)] == ["b-1"]
    robot.cli._register()
    assert {"blacklist", "risk"} <= set(robot.cli.cli.commands)


# ---------------------------------------------------------------------------- dry run


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {t.name: sorted((tuple(r) for r in conn.execute(select(t))), key=repr)
                for t in metadata.sorted_tables}


def test_dry_run_reports_what_new_rules_would_hold_and_writes_nothing(engine: Engine) -> None:
    """Past orders are judged against the orders before them; no table changes."""
    plain = RiskShop(items=ITEMS)
    t0 = utcnow() - timedelta(days=2)
    ids = [pipeline.intake(engine, plain, paid_order(f"D{i}", ("s1", 1)),
                           now=t0 + timedelta(minutes=i)).order_id for i in range(3)]
    big = pipeline.intake(engine, plain, paid_order("D9", ("s1", 7), buyer="other"),
                          now=t0 + timedelta(minutes=5)).order_id
    old = pipeline.intake(engine, plain, paid_order("OLD", ("s1", 9), buyer="old"),
                          now=t0 - timedelta(days=30)).order_id
    rules = RiskRules.model_validate({"buyer_rate": {"max_orders": 2, "window": "1h"},
                                      "max_quantity": 5})
    before = snapshot(engine)
    report = risk.dry_run(engine, lambda _shop: rules, days=7)
    assert snapshot(engine) == before
    assert report.judged == 4
    assert [(w.order_id, w.reason) for w in report.would_hold] == [
        (ids[2], "risk: buyer_rate 3 orders in 1h > 2"),
        (big, "risk: quantity 7 units > 5"),
    ]
    assert old not in {w.order_id for w in report.would_hold}
    none = risk.dry_run(engine, lambda _shop: None, days=7)
    assert none.would_hold == [] and snapshot(engine) == before


def test_dry_run_cli_uses_each_shops_rules(engine: Engine, tmp_path: Path) -> None:
    """`robot risk dry-run --json` judges each shop with its own effective rules."""
    cfg = _site(tmp_path, "defaults:\n  risk:\n    max_quantity: 2\n",
                shop_b="risk:\n  max_quantity: 10\n")
    plain = RiskShop(items=ITEMS)
    a = pipeline.intake(engine, dataclasses.replace(plain, name="shop-a"),
                        paid_order("A1", ("s1", 3))).order_id
    pipeline.intake(engine, dataclasses.replace(plain, name="shop-b"),
                    paid_order("B1", ("s1", 3)))
    app = FakeApp(engine, Console(width=200, color_system=None), config=cfg)
    before = snapshot(engine)
    out = run(app, "risk", "dry-run", "--days", "1", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["judged"] == 2
    assert [(w["order_id"], w["reason"]) for w in data["would_hold"]] == [
        (a, "risk: quantity 3 units > 2")]
    table = run(app, "risk", "dry-run")
    assert "1 of 2 order(s) would be held" in table.stdout
    assert snapshot(engine) == before


# ---------------------------------------------------------------------------- config


def _site(tmp_path: Path, robot_extra: str = "", *, shop_a: str = "", shop_b: str = "") -> Any:
    (tmp_path / "shops").mkdir(exist_ok=True)
    (tmp_path / "robot.yaml").write_text(
        "database: sqlite:///robot.db\nshops: shops/*.yaml\n" + robot_extra, encoding="utf-8")
    for name, extra in (("shop-a", shop_a), ("shop-b", shop_b)):
        (tmp_path / "shops" / f"{name}.yaml").write_text(
            f"name: {name}\nplatform: memory\n" + extra, encoding="utf-8")
    return load_config(tmp_path / "robot.yaml", registry={"memory": MemoryConnectorFactory()})


def test_shop_risk_overrides_single_default_fields(tmp_path: Path) -> None:
    """A shop's risk: replaces only the fields it sets; null turns a default rule off."""
    cfg = _site(tmp_path,
                "defaults:\n  risk:\n    max_quantity: 5\n    buyer_amount_per_day_yuan: 99.9\n"
                "    buyer_rate: {max_orders: 3, window: 1h}\n",
                shop_b="risk:\n  max_quantity: 50\n  buyer_rate: null\n"
                       "  review_skus: [{sku_id: 123}]\n")
    a, b = cfg.shop("shop-a").risk, cfg.shop("shop-b").risk
    assert (a.max_quantity, b.max_quantity) == (5, 50)
    assert a.buyer_rate is not None and a.buyer_rate.window == 3600.0
    assert b.buyer_rate is None
    assert str(a.buyer_amount_per_day_yuan) == str(b.buyer_amount_per_day_yuan) == "99.9"
    assert [r.sku_id for r in b.review_skus] == ["123"] and a.review_skus == []


def test_bad_risk_settings_name_file_shop_and_field(tmp_path: Path) -> None:
    """Every bad risk setting is reported in one pass, with file, shop and field."""
    with pytest.raises(ConfigError) as info:
        _site(tmp_path,
              "defaults:\n  risk:\n    max_quantity: 0\n    buyer_rate: {max_orders: 3}\n",
              shop_a="risk:\n  ip_rate: {max_orders: 2, window: soon}\n"
                     "  new_buyer_first_order_yuan: 1.005\n  review_skus: [{}]\n"
                     "  buyer_rat: {max_orders: 1, window: 1h}\n")
    problems = info.value.problems
    assert any(p.startswith("robot.yaml: defaults.risk.max_quantity:") for p in problems)
    assert "robot.yaml: defaults.risk.buyer_rate.window: Field required" in problems
    where = "shops/shop-a.yaml: shop 'shop-a': risk."
    assert any(p.startswith(where + "ip_rate.window: expected seconds") for p in problems)
    assert any(p.startswith(where + "new_buyer_first_order_yuan:") for p in problems)
    assert any(p.startswith(where + "review_skus[0]: ") and "exactly one" in p
               for p in problems)
    assert (where + "buyer_rat: unknown key (did you mean 'buyer_rate'?)") in problems


def test_example_risk_section_is_valid_when_uncommented(tmp_path: Path) -> None:
    """The commented rules in config.example.yaml load as written once uncommented."""
    lines = (Path(__file__).parent.parent / "config.example.yaml").read_text(
        encoding="utf-8").splitlines()
    start = lines.index("  risk: {}")
    block = ["  risk:"]
    for line in lines[start + 1:]:
        if not line.startswith("    # "):
            break
        block.append("    " + line[len("    # "):])
    cfg = _site(tmp_path, "defaults:\n" + "\n".join(block) + "\n")
    rules = cfg.shop("shop-a").risk
    assert rules.buyer_rate is not None and rules.ip_rate is not None
    assert rules.max_quantity == 20 and len(rules.review_skus) == 2
    assert str(rules.new_buyer_first_order_yuan) == "300"


def test_blacklisted_buyer_id_matches_exactly(engine: Engine) -> None:
    """Buyer ids are case-sensitive (openids): a listed id does not hold one differing in case."""
    risk.add_blacklist(engine, "buyer", "oAbC123", actor="test")
    risk.add_blacklist(engine, "buyer", "oabc123", actor="test")  # a different buyer
    risk.remove_blacklist(engine, "buyer", "oabc123", actor="test")
    other = pipeline.intake(engine, shop(), paid_order("K1", ("s1", 1), buyer="oabc123"))
    listed = pipeline.intake(engine, shop(), paid_order("K2", ("s1", 1), buyer="oAbC123"))
    assert (other.state, listed.state) == ("received", "held")
