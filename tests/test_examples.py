"""The example configuration shipped in the repository is valid as written (given its
secrets), so a merchant who copies it starts from something that works."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from robot.config import effective_dict, load_config

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    "ROBOT_ALERT_URL": "json://localhost/alerts",
    "TAOBAO_APP_SECRET": "example-taobao-secret",
    "PDD_CLIENT_SECRET": "example-pdd-secret",
    "YOUZAN_CLIENT_SECRET": "example-youzan-secret",
    "DOUYIN_APP_SECRET": "example-douyin-secret",
    "GOOFISH_APP_SECRET": "example-goofish-app-secret",
    "GOOFISH_MCH_SECRET": "example-goofish-mch-secret",
    "WX_APP_SECRET": "example-wx-secret",
    "WXPAY_APIV3_KEY": "0123456789abcdef0123456789abcdef",
    "WX_DELIVERY_API_TOKEN": "example-delivery-token-at-least-32-chars",
}


def test_example_config_and_every_example_shop_load(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """config.example.yaml and shops/example-*.yaml pass the loader; secrets stay masked."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    secrets_dir = tmp_path / "etc"
    secrets_dir.mkdir()
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    (secrets_dir / "wechatpay_pub.pem").write_bytes(pem.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for name in ("taobao.session", "pdd.access_token", "pdd.refresh_token"):
        (secrets_dir / name).write_text(f"example-{name}\n")
    shutil.copy(ROOT / "config.example.yaml", tmp_path / "robot.yaml")
    (tmp_path / "shops").mkdir()
    for example in sorted((ROOT / "shops").glob("example-*.yaml")):
        text = example.read_text().replace("file:/etc/robot/", f"file:{secrets_dir}/")
        (tmp_path / "shops" / example.name).write_text(text)

    config = load_config(tmp_path / "robot.yaml")

    assert sorted(s.platform for s in config.shops) == ["douyin", "goofish", "pinduoduo",
                                                           "taobao", "wechat", "youzan"]
    shown = str(effective_dict(config))
    assert not any(value in shown for value in ENV.values())


def _fake_catalog(platform: str) -> set[tuple[str, str]]:
    """(mapping key, value) of every SKU ``robot fake <platform>`` sells."""
    from connectors.douyin.fake import FakeDouyin
    from connectors.pinduoduo.fake import FakePdd
    from connectors.taobao.fake import FakeTop
    from connectors.wechat.fake import FakeWechat
    from connectors.youzan.fake import FakeYouzan

    fakes = {"taobao": FakeTop, "pinduoduo": FakePdd, "youzan": FakeYouzan,
             "wechat": FakeWechat, "douyin": FakeDouyin}
    return {(item.mapping, item.sku) for item in fakes[platform]().catalog()}


@pytest.mark.parametrize("example", sorted((ROOT / "shops").glob("example-*.yaml")),
                         ids=lambda p: p.stem)
def test_example_shop_maps_exactly_the_skus_its_fake_sells(example: Path) -> None:
    """Each example shop is named <platform>-main, as the README names it, and maps exactly
    the SKUs its platform's fake sells: every seeded or `robot fake order` order is mapped."""
    shop = yaml.safe_load(example.read_text())
    platform = shop["platform"]
    assert shop["name"] == f"{platform}-main"
    mapped = {(key, str(item[key])) for item in shop["items"]
              for key in ("sku_id", "outer_id", "item_id") if key in item}
    if platform == "goofish":  # 闲管家 buys from us: the shop's goods are the catalogue
        assert mapped == set()
        assert all(item["goods_no"] and item["price"] for item in shop["items"])
    else:
        assert mapped == _fake_catalog(platform)
    assert "gateway:" in example.read_text() or "base_url:" in example.read_text()
    assert f"robot fake {platform}" in example.read_text()


def test_readme_names_the_example_shops_as_they_are() -> None:
    """The README's shop names are the examples' (taobao-main), never an older name."""
    readme = (ROOT / "README.md").read_text()
    assert "taobao-main" in readme and "tb-main" not in readme
    assert "robot fake order --url" in readme
