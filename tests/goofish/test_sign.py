"""闲管家's signatures against the two examples in its own documentation (golden tests)."""

from __future__ import annotations

from connectors.goofish.sign import fresh, md5_hex, open_sign, same, same_id, supply_sign

SUPPLY_BODY = b'{"goods_type":1,"goods_no":"12344532"}'


def test_supply_standard_official_vector() -> None:
    """虚拟货源标准接口 接入说明: app_id 677859093659717, mch_id 1001, ts 1724414553."""
    assert md5_hex(SUPPLY_BODY) == "9b8030f5097d5ed123405b003dd247c5"
    assert supply_sign(app_id="677859093659717", app_secret="wK63PxlOBaY9NoqMksLeZySzGIW25ifA",
                       body=SUPPLY_BODY, timestamp=1724414553, mch_id="1001",
                       mch_secret="o9wl81dncmvby3ijpq7eur456zhgtaxs") \
        == "fda5954f48ab32b3b271c84450440ead"


def test_open_platform_official_vector() -> None:
    """闲管家开放平台 接入说明: appKey 203413189371893, ts 1636087298."""
    assert open_sign(app_key="203413189371893", app_secret="o9wl81dncmvby3ijpq7eur456zhgtaxs",
                     body=b'{"product_id":"219530767978565"}', timestamp=1636087298) \
        == "c26c8a48809141f3dd80bd9b9ddb41ea"


def test_signature_covers_every_part() -> None:
    """Changing any one part (body byte, timestamp, either id or secret) changes the sign."""
    base = {"app_id": "1", "app_secret": "s", "body": b"{}", "timestamp": 5, "mch_id": "2",
            "mch_secret": "m"}
    reference = supply_sign(**base)  # type: ignore[arg-type]
    for key, value in (("app_id", "3"), ("app_secret", "t"), ("body", b"{ }"),
                       ("timestamp", 6), ("mch_id", "4"), ("mch_secret", "n")):
        assert supply_sign(**{**base, key: value}) != reference  # type: ignore[arg-type]


def test_comparison_and_window() -> None:
    """Signatures compare case-insensitively; the timestamp window is ±300 s, digits only."""
    assert same("FDA5954F48AB32B3B271C84450440EAD", "fda5954f48ab32b3b271c84450440ead")
    assert not same("", "fda5954f48ab32b3b271c84450440ead")
    assert same_id("Mch-A1", "Mch-A1") and not same_id("mch-a1", "Mch-A1")
    assert fresh("1000", 1300.0) and fresh("1600", 1300.0)
    assert not fresh("999", 1300.0) and not fresh("1601", 1300.0)
    assert not fresh("-5", 0.0) and not fresh("1e3", 1000.0) and not fresh("", 0.0)
