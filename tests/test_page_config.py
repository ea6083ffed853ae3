"""The shop file's page settings (display name, customer-service contact, footer): loaded as
written, and every bad value named with file, shop and field, its value never quoted."""

from __future__ import annotations

from pathlib import Path

import pytest

from robot.config import Contact, load_config
from tests import test_config
from tests.test_config import REGISTRY, problems_of


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The good robot file and shop of tests.test_config; returns the robot file's path."""
    monkeypatch.setenv("TEST_APP_SECRET", test_config.SECRET)
    monkeypatch.setenv("TEST_ALERT_URL", f"dingtalk://{test_config.ALERT_SECRET}/")
    test_config.write(tmp_path / "shops" / "secrets" / "session.txt", test_config.FILE_SECRET)
    test_config.write(tmp_path / "shops" / "tb.yaml", test_config.SHOP_YAML)
    return test_config.write(tmp_path / "robot.yaml", test_config.ROBOT_YAML)

FACE = """\
display_name: 小蓝鲸数码
contact:
  text: 客服微信 xlj-kefu（9:00–22:00）
  url: https://work.example.com/kf?id=1
pickup:
  footer: |
    本店卡密一经显示，不退不换。
    Codes shown are final.
"""


def test_page_settings_load(site: Path) -> None:
    """Name, contact and footer reach the shop's config; the footer keeps its line break."""
    shop_file = site.parent / "shops" / "tb.yaml"
    shop_file.write_text(shop_file.read_text(encoding="utf-8") + FACE, encoding="utf-8")
    (shop,) = load_config(site, registry=REGISTRY).shops
    assert shop.display_name == "小蓝鲸数码"
    assert shop.contact == Contact(text="客服微信 xlj-kefu（9:00–22:00）",
                                   url="https://work.example.com/kf?id=1")
    assert shop.pickup.footer == "本店卡密一经显示，不退不换。\nCodes shown are final."


def test_page_settings_are_optional(site: Path) -> None:
    """A shop file without them shows no name, contact or footer."""
    (shop,) = load_config(site, registry=REGISTRY).shops
    assert (shop.display_name, shop.contact, shop.pickup.footer) == (None, None, None)


def test_bad_page_settings_name_file_shop_and_field(site: Path) -> None:
    """Unsafe link schemes, a contact without text, control characters and over-long text
    are each one line naming file, shop and field."""
    shop_file = site.parent / "shops" / "tb.yaml"
    bad = (FACE.replace("display_name: 小蓝鲸数码", 'display_name: "小蓝鲸\\u202e数码"')
           .replace("url: https://work.example.com/kf?id=1", "url: javascript:alert(1)")
           .replace("    Codes shown are final.", "    " + "长" * 501))
    shop_file.write_text(shop_file.read_text(encoding="utf-8") + bad, encoding="utf-8")
    problems = problems_of(site)
    where = "shops/tb.yaml: shop 'tb-main': "
    assert f"{where}display_name: control characters and line breaks are not allowed here" \
        in problems
    assert f"{where}contact.url: only https:, http:, mailto:, tel: links are allowed" in problems
    assert f"{where}pickup.footer: too long (at most 500 characters)" in problems
    assert all("javascript" not in p and "长长" not in p for p in problems)


def test_contact_needs_text_and_takes_mail_or_phone(site: Path) -> None:
    """A contact link alone is refused (the buyer needs words to tap); mailto: and tel:
    links are fine, a web link needs a host."""
    shop_file = site.parent / "shops" / "tb.yaml"
    base = shop_file.read_text(encoding="utf-8")
    shop_file.write_text(base + "contact: {url: 'tel:+8640012345'}\n", encoding="utf-8")
    assert problems_of(site) == ["shops/tb.yaml: shop 'tb-main': contact.text: Field required"]
    shop_file.write_text(base + "contact: {text: 电话, url: 'http:/nohost'}\n", encoding="utf-8")
    assert problems_of(site) == ["shops/tb.yaml: shop 'tb-main': contact.url: expected a web "
                                 "address with a host, e.g. https://shop.example.com/help"]
    for url in ("tel:+8640012345", "mailto:kf@example.com"):
        shop_file.write_text(base + f"contact: {{text: 电话, url: '{url}'}}\n", encoding="utf-8")
        (shop,) = load_config(site, registry=REGISTRY).shops
        assert shop.contact == Contact(text="电话", url=url)
