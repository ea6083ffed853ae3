"""A goofish shop file: goods numbers with prices, top-up goods routed to suppliers with the
account taken from 闲管家's request, prices refused on shops that are not suppliers — file,
shop and field named."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.errors import ConfigError
from robot.config import load_config

ROBOT = "database: sqlite:///robot.db\nkey_file: robot.key\nshops: shops/*.yaml\n"
SHOP = """\
name: xianyu
platform: goofish
items:
  - goods_no: "G1001"
    goods_name: 月卡
    pool: p1
    price: "9.90"
  - goods_no: G1002
    pools: [{pool: p1}, {pool: p2, quantity: 2}]
    price: 30
platform_config:
  app_id: "677859093659717"
  app_secret: app-secret-for-tests
  mch_id: "1001"
  mch_secret: mch-secret-for-tests
"""


def _site(tmp_path: Path, shop: str) -> Path:
    (tmp_path / "shops").mkdir(exist_ok=True)
    (tmp_path / "shops" / "xianyu.yaml").write_text(textwrap.dedent(shop), encoding="utf-8")
    robot = tmp_path / "robot.yaml"
    robot.write_text(ROBOT, encoding="utf-8")
    return robot


def _problems(tmp_path: Path, shop: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(_site(tmp_path, shop))
    return info.value.problems


def test_goods_numbers_and_prices_load(tmp_path: Path) -> None:
    """goods_no is the mapping's outer_id; price is kept in yuan; secrets stay masked."""
    shop = load_config(_site(tmp_path, SHOP)).shops[0]
    assert [(m.outer_id, m.price, m.goods_name) for m in shop.items] == [
        ("G1001", Decimal("9.90"), "月卡"), ("G1002", Decimal(30), None)]
    assert "mch-secret-for-tests" not in repr(shop)


ROBOT_WITH_SUPPLIER = ROBOT + "suppliers:\n  memsup:\n    plugin: memory\n    config: {name: cfg}\n"
RECHARGE = """\
  - goods_no: T3003
    goods_type: recharge
    goods_name: 话费50元
    price: "49.95"
    suppliers:
      - {supplier: memsup, product: topup-mobile-50, max_cost: "49.90"}
"""


def _with_recharge(tmp_path: Path, entry: str) -> Path:
    robot = _site(tmp_path, SHOP.replace("platform_config:", entry + "platform_config:"))
    robot.write_text(ROBOT_WITH_SUPPLIER, encoding="utf-8")
    return robot


def test_a_top_up_goods_reads_its_account_from_the_request(tmp_path: Path) -> None:
    """goods_type recharge: suppliers and a price, no pool; the account, area and server are
    the request's (line properties), of the form the mapping says (a mobile number unless
    told)."""
    shop = load_config(_with_recharge(tmp_path, RECHARGE)).shops[0]
    top = shop.items[2]
    assert top.topup and top.pools == [] and top.price == Decimal("49.95")
    assert top.account is not None
    assert (top.account.source, top.account.area, top.account.server, top.account.game,
            top.account.role, top.account.format) == (
        "property.account", "property.game_area", "property.game_server", "property.game_name",
        "property.game_role", "mobile")
    qq = load_config(_with_recharge(tmp_path, RECHARGE + "    account: {format: qq}\n"))
    assert qq.shops[0].items[2].account.format == "qq"  # type: ignore[union-attr]


@pytest.mark.parametrize(("extra", "expected"), [
    ("    pool: p1\n", "a top-up (account:) is bought from suppliers only: remove pool/pools"),
    ("    account: {source: buyer_message}\n",
     "a recharge goods' account comes from 闲管家's request: leave out source"),
])
def test_a_top_up_goods_written_wrong_is_refused(tmp_path: Path, extra: str,
                                                 expected: str) -> None:
    """A recharge goods with a pool, or naming where its account is read, is refused with
    the reason, naming file, shop and item."""
    with pytest.raises(ConfigError) as info:
        load_config(_with_recharge(tmp_path, RECHARGE + extra))
    problems = info.value.problems
    assert len(problems) == 1
    assert "shops/xianyu.yaml: shop 'xianyu'" in problems[0] and "items[2]" in problems[0]
    assert expected in problems[0]


def test_card_goods_carry_no_account(tmp_path: Path) -> None:
    """An account on card goods is refused: top-ups are goods_type recharge."""
    problems = _problems(tmp_path, SHOP.replace('    price: 30\n',
                                                '    price: 30\n    account: {format: qq}\n'))
    assert len(problems) == 1 and "items[1]" in problems[0]
    assert "card goods carry no account" in problems[0]


def test_goods_without_a_price_and_a_price_on_an_ordinary_shop(tmp_path: Path) -> None:
    """A goofish item needs its price; a price (or goods_no) on a Taobao shop is refused."""
    missing = _problems(tmp_path, SHOP.replace('    price: "9.90"\n', ""))
    assert any("items[0].price: required" in line for line in missing)
    taobao = SHOP.replace("platform: goofish", "platform: taobao")
    wrong = _problems(tmp_path, taobao)
    assert any("items[0].price: only for a shop its platform buys from" in line
               for line in wrong)


def test_the_same_goods_number_twice_and_a_bad_app_id(tmp_path: Path) -> None:
    """goods_no duplicates are caught like SKU duplicates; app_id must be digits."""
    twice = SHOP.replace("goods_no: G1002", 'goods_no: "G1001"').replace(
        '"677859093659717"', "abc")
    problems = _problems(tmp_path, twice)
    assert any("items[1].goods_no" in line and "already mapped by items[0]" in line
               for line in problems)
    assert any("platform_config.app_id" in line for line in problems)
