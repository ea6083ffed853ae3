"""A goofish shop file: goods numbers with prices, top-ups refused until supplier routing
exists, prices refused on shops that are not suppliers — file, shop and field named."""

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


def test_a_top_up_goods_mapping_is_refused_until_the_gateway_serves_it(tmp_path: Path) -> None:
    """goods_type recharge is refused with the reason, naming file, shop and item."""
    problems = _problems(tmp_path, SHOP.replace('  - goods_no: G1002\n',
                                                '  - goods_no: G1002\n    goods_type: recharge\n'))
    assert len(problems) == 1
    assert "shops/xianyu.yaml: shop 'xianyu'" in problems[0] and "items[1]" in problems[0]
    assert "is not served through the gateway yet" in problems[0]


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
