"""The pickup page per shop and pool: the shop's name, contact and footer; each pool's usage
instructions and redemption link; the QR code of the page's own link. Everything a merchant
writes is escaped, links keep to safe schemes, and no redemption link (it holds the code)
appears before the reveal."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import Engine, select, update
from structlog.testing import capture_logs

from robot import poolpage
from robot.config import Contact, PickupConfig
from robot.errors import UserError
from robot.http import links, qr
from robot.schema import audit_log, pools
from robot.vault import Vault
from tests.factories import seed_codes
from tests.http.conftest import PUBLIC_URL, Http, make_http, shop_config
from tests.http.test_pickup import csrf_of, plain_codes
from tests.test_no_plaintext import scan_database
from tests.test_pools import run as run_cli

HOWTO_ZH = "1. 打开视频 App，进入「我的」\n2. 点「兑换」，粘贴卡密 <b>不是粗体</b>"
HOWTO_EN = "1. Open the app, go to Me\n2. Tap Redeem & paste the code"


def _shop(**pickup: object):  # the test shop with a face
    return shop_config(pickup=PickupConfig(lookup_check="buyer_id_suffix", **pickup)).model_copy(
        update={"display_name": "小蓝鲸 <数码>",
                "contact": Contact(text="客服微信 xlj-kefu & co",
                                   url="https://help.example.com/chat?a=1&b=2")})


@pytest.fixture
def faced(engine: Engine, vault: Vault):
    seed_codes(engine, vault, "p1", 10)
    h = make_http(engine, vault, shop=_shop(footer="工作时间 9:00–22:00\n<i>假日休息</i>"))
    with h.client:
        yield h


def _open(h: Http, oid: int) -> tuple[str, str, str]:
    token = links.ensure_link(h.engine, h.ctx.link_key, oid, ttl=timedelta(days=1)).token
    masked = h.client.get(f"/p/{token}").text
    revealed = h.client.post(f"/p/{token}/reveal", data={"csrf": csrf_of(masked)},
                             headers={"Origin": PUBLIC_URL}).text
    return token, masked, revealed


def test_shop_name_contact_and_footer_are_shown_escaped(faced: Http) -> None:
    """The shop file's display name, contact (text and link) and footer appear on the masked
    and the revealed page, HTML-escaped, the footer's line break kept as text."""
    _, masked, revealed = _open(faced, faced.order("F1"))
    for page in (masked, revealed):
        assert '<p class="shop">小蓝鲸 &lt;数码&gt;</p>' in page
        assert "<title>小蓝鲸 &lt;数码&gt; · 提取卡密 / Pickup</title>" in page
        assert ('<a class="contact" href="https://help.example.com/chat?a=1&amp;b=2" '
                'target="_blank" rel="noopener noreferrer">客服微信 xlj-kefu &amp; co</a>') in page
        assert ('<p class="foot-text">工作时间 9:00–22:00\n&lt;i&gt;假日休息&lt;/i&gt;</p>'
                in page)
        assert "<i>" not in page


def test_neutral_page_shows_no_shop(faced: Http) -> None:
    """The "nothing here" page stays the same for every shop: it names none."""
    page = faced.client.get("/p/" + "A" * 32)
    assert page.status_code == 404
    assert "小蓝鲸" not in page.text and "xlj-kefu" not in page.text


def test_pool_instructions_appear_escaped_with_line_breaks(faced: Http) -> None:
    """A pool's instructions (zh and en) show on both pages, escaped; `pre-line` keeps the
    line breaks without any markup from the merchant."""
    poolpage.set_page(faced.engine, faced.vault, "p1", {"instructions_zh": HOWTO_ZH,
                                           "instructions_en": HOWTO_EN}, actor="test")
    _, masked, revealed = _open(faced, faced.order("I1", quantity=2))
    for page in (masked, revealed):
        assert page.count('class="card howto"') == 1, "once per pool, not per code"
        assert ('<p class="text" lang="zh-CN">1. 打开视频 App，进入「我的」\n2. 点「兑换」，'
                "粘贴卡密 &lt;b&gt;不是粗体&lt;/b&gt;</p>") in page
        assert '<p class="text" lang="en">1. Open the app, go to Me\n2. Tap Redeem &amp; ' in page
        assert "<b>" not in page


def test_bundle_shows_each_pools_instructions_under_its_items(engine: Engine,
                                                             vault: Vault) -> None:
    """An order with codes of two pools shows both pools' instructions, each named by the
    items that use it."""
    from connectors.memory import MemoryConfig
    from robot.config import PoolShare, SkuMapping

    seed_codes(engine, vault, "p1", 2)
    seed_codes(engine, vault, "p2", 2)
    shop = shop_config().model_copy(update={"items": [SkuMapping(
        sku_id="s1", pools=[PoolShare(pool="p1"), PoolShare(pool="p2")])]})
    assert isinstance(shop.platform_config, MemoryConfig)
    h = make_http(engine, vault, shop=shop)
    poolpage.set_page(engine, vault, "p1", {"instructions_zh": "甲说明"}, actor="test")
    poolpage.set_page(engine, vault, "p2", {"instructions_en": "Second pool's way"}, actor="test")
    with h.client:
        _, masked, _ = _open(h, h.order("B1"))
    howto = masked[masked.index('class="card howto"'):]
    assert howto.index("甲说明") < howto.index("Second pool&#x27;s way")
    assert howto.count('<p class="item">') == 2


def test_redeem_link_carries_the_url_encoded_code_after_reveal_only(faced: Http) -> None:
    """A template with {code} gets the card number percent-encoded, on the revealed page
    only; the masked page has no redemption link at all."""
    poolpage.set_page(faced.engine, faced.vault, "p1", {
        "redeem_url": "https://vip.example.com/exchange?from=robot&code={code}"}, actor="test")
    oid = faced.order("X1")
    code = plain_codes(faced, oid)[0]
    _, masked, revealed = _open(faced, oid)
    assert "vip.example.com" not in masked and code not in masked
    hrefs = re.findall(r'<a class="redeem" href="([^"]+)" target="_blank" '
                       r'rel="noopener noreferrer">去兑换 Redeem</a>', revealed)
    assert len(hrefs) == 1
    link = hrefs[0].replace("&amp;", "&")
    assert parse_qs(urlsplit(link).query) == {"from": ["robot"], "code": [code]}


def test_redeem_without_placeholder_copies_then_opens(faced: Http) -> None:
    """A template without {code} is the site's redemption page: the button copies the code
    (the card number's element) and opens it; a note says to paste."""
    poolpage.set_page(faced.engine, faced.vault, "p1",
                      {"redeem_url": "https://vip.example.com/redeem"}, actor="test")
    _, _, revealed = _open(faced, faced.order("X2"))
    assert ('<a class="redeem" href="https://vip.example.com/redeem" target="_blank" '
            'rel="noopener noreferrer" data-copy="c0n" data-done="已复制 Copied">去兑换 Redeem</a>'
            in revealed)
    assert "请在兑换页粘贴卡密。" in revealed


def test_redeem_link_quotes_every_reserved_character() -> None:
    """Whatever a code holds, it stays one query value: it can change neither the host, the
    path nor another parameter."""
    template = "https://vip.example.com/x?code={code}&n=1"
    for code in ("A&n=2", "a b/c?d#e", "%41", "卡密-1", "x'\"<>"):
        link = poolpage.redeem_link(template, code)
        parts = urlsplit(link)
        assert parts.netloc == "vip.example.com" and parts.path == "/x" and not parts.fragment
        assert parse_qs(parts.query) == {"code": [code], "n": ["1"]}
    assert poolpage.redeem_link("https://v.example.com/r/{code}", "a/b") == \
        "https://v.example.com/r/a%2Fb"
    assert poolpage.redeem_link("https://v.example.com/{{x}}", "A") == "https://v.example.com/{x}"


@pytest.mark.parametrize(("template", "why"), [
    ("javascript:alert(1)//{code}", "only https:, http: redemption links"),
    ("data:text/html,{code}", "only https:, http: redemption links"),
    ("ftp://files.example.com/{code}", "only https:, http: redemption links"),
    ("https://{code}.example.com/", "not in the host"),
    ("https://v.example.com/?pin={pin}", "the only placeholder is {code}"),
    ("https://v.example.com/?c={code!r}", "the only placeholder is {code}"),
    ("https://v.example.com/?c={code:>9}", "the only placeholder is {code}"),
    ("https://v.example.com/?c={code", "unbalanced braces"),
    ("https:///nohost?c={code}", "with a host"),
    ("https://v.example.com/a b?c={code}", "spaces and control characters"),
    ("https://vip.example.com@evil.example.net/?c={code}", "user name before the host"),
    ("https://v.example.com/\u202e?c={code}", "spaces and control characters"),
])
def test_bad_redeem_templates_are_refused(template: str, why: str) -> None:
    """Only http(s) templates with {code} in the path or query (or none) are accepted."""
    problem = poolpage.redeem_problem(template)
    assert problem is not None and why in problem


@pytest.mark.parametrize("template", [
    "https://vip.example.com/exchange?code={code}",
    "http://vip.example.com/r/{code}",
    "https://vip.example.com/redeem",
    "HTTPS://vip.example.com/#/exchange?code={code}",
])
def test_good_redeem_templates_are_accepted(template: str) -> None:
    """Templates with or without {code} pass."""
    assert poolpage.redeem_problem(template) is None


def test_qr_code_is_the_page_own_public_link(faced: Http) -> None:
    """Both link pages carry the QR code of ``public_url/p/<token>`` (the seller memo's
    link), as inline SVG: no image fetched, nothing the CSP would block."""
    token, masked, revealed = _open(faced, faced.order("Q1"))
    expected = qr.svg(links.url_for(PUBLIC_URL, token))
    for page in (masked, revealed):
        assert expected in page
        assert "<img" not in page and "style=" not in page


def test_pools_page_cli_sets_shows_clears_and_audits(engine: Engine, vault: Vault,
                                                     tmp_path: Path) -> None:
    """`robot pools page` reads instructions from files, refuses bad input without changing
    anything, clears with '', and audits each change."""
    seed_codes(engine, vault, "p1", 1)
    (tmp_path / "zh.txt").write_text("\ufeff第一步\r\n第二步\n", encoding="utf-8")
    result = run_cli(engine, vault, "pools", "page", "p1", "--instructions-zh-file",
                     str(tmp_path / "zh.txt"), "--redeem-url", "https://v.example.com/?c={code}")
    assert result.exit_code == 0, result.output
    assert poolpage.show(engine, vault, "p1") == (poolpage.PoolPage(
        "第一步\n第二步", None, "https://v.example.com/?c={code}"), True)

    bad = run_cli(engine, vault, "pools", "page", "p1", "--instructions-en", "ok",
                  "--redeem-url", "javascript:{code}")
    assert bad.exit_code != 0
    assert isinstance(bad.exception, UserError)
    assert "redeem-url: only https:, http: redemption links" in str(bad.exception)
    assert poolpage.show(engine, vault, "p1")[0].instructions_en is None, "nothing changed"

    cleared = run_cli(engine, vault, "pools", "page", "p1", "--redeem-url", "", "--json")
    assert cleared.exit_code == 0, cleared.output
    assert '"redeem_url": null' in cleared.output
    with engine.connect() as conn:
        actions = conn.execute(select(audit_log.c.action, audit_log.c.subject)
                               .where(audit_log.c.action == "pool_page_set")).all()
    assert [tuple(a) for a in actions] == [("pool_page_set", "pool:p1")] * 2
    with pytest.raises(UserError, match="no pool named 'nope'"):
        poolpage.set_page(engine, vault, "nope", {"redeem_url": ""}, actor="test")


def test_redemption_links_leave_no_code_in_logs_or_database(faced: Http) -> None:
    """A reveal with redemption links (which carry the code) logs no code and stores none:
    the link is made for the page and nowhere else."""
    poolpage.set_page(faced.engine, faced.vault, "p1",
                      {"redeem_url": "https://v.example.com/?c={code}"}, actor="test")
    oid = faced.order("NP1", quantity=2)
    codes = plain_codes(faced, oid)
    with capture_logs() as logs:
        _, _, revealed = _open(faced, oid)
    assert all(f"https://v.example.com/?c={c}" in revealed for c in codes)
    assert any(e["event"] == "pickup_revealed" for e in logs)
    assert not [c for c in codes if c in repr(logs)]
    assert scan_database(faced.engine, codes) == []


def test_settings_changed_in_the_database_alone_are_not_shown(faced: Http) -> None:
    """Someone who can write the database but has no key file cannot point the redeem
    button (or the instructions) elsewhere: a setting without a matching seal is dropped and
    logged, and `robot pools page` seals it again."""
    poolpage.set_page(faced.engine, faced.vault, "p1",
                      {"instructions_zh": "正版说明",
                       "redeem_url": "https://vip.example.com/?c={code}"}, actor="test")
    with faced.engine.begin() as conn:
        conn.execute(update(pools).where(pools.c.name == "p1").values(
            redeem_url="https://evil.example.net/steal?c={code}"))
    with capture_logs() as logs:
        _, masked, revealed = _open(faced, faced.order("T1"))
    assert "evil.example.net" not in revealed and 'class="redeem"' not in revealed
    assert "正版说明" not in masked, "the whole setting is dropped, not only the link"
    assert [e["pool"] for e in logs if e["event"] == "pool_page_refused"] == ["p1", "p1"]
    shown = run_cli(faced.engine, faced.vault, "pools", "page", "p1")
    assert shown.exit_code == 0 and "evil.example.net" in shown.output
    assert "NOT SHOWN on the pickup page" in shown.output

    poolpage.set_page(faced.engine, faced.vault, "p1",
                      {"redeem_url": "https://vip.example.com/?c={code}"}, actor="test")
    _, _, revealed = _open(faced, faced.order("T2"))
    assert "https://vip.example.com/?c=" in revealed and "正版说明" in revealed
    assert poolpage.show(faced.engine, faced.vault, "p1")[1] is True


def test_expiry_is_shown_in_the_robot_time_zone(engine: Engine, vault: Vault) -> None:
    """Each code's expiry is shown in the robot's ``timezone`` (here Berlin, not Beijing),
    to the second, on the masked and the revealed page."""
    from datetime import datetime

    seed_codes(engine, vault, "p1", 1, expires_at=datetime(2026, 12, 31, 23, 59, 59))
    h = make_http(engine, vault, timezone="Europe/Berlin")
    with h.client:
        _, masked, revealed = _open(h, h.order("Z1"))
    for page in (masked, revealed):
        assert re.search(r'<div class="row expires">有效期至<span class="en">Valid until</span> '
                         r"2027-01-01 00:59:59</div>", page)
