"""The pickup page's shop and pool parts in a real phone browser (Debian's Chromium through
Playwright): the QR code read back from a screenshot is the page's own link, the redeem
buttons open the right links (one copying the code first), the instructions, contact and
expiry are on screen, and with JavaScript off the reveal still works by a form post. No
request leaves this machine: the redemption site is answered by the test itself."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright
from sqlalchemy import Engine

from robot import poolpage
from robot.config import Contact, PickupConfig
from robot.http import links
from robot.http.app import build_app
from robot.vault import Vault
from tests.factories import seed_codes
from tests.http.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PHONE,
    loopback_socket,
    png_gray,
    serve,
)
from tests.http.conftest import Http, make_http, shop_config
from tests.http.test_pickup import plain_codes

#: The redemption site: a reserved name that resolves nowhere, answered by the test's route.
REDEEM_HOST = "https://redeem.example.invalid"
HOWTO_ZH = "1. 打开 App，进入「我的」\n2. 点「兑换码」，粘贴卡密"
HOWTO_EN = "1. Open the app, go to Me\n2. Tap Redeem code and paste it"
#: 2026-12-31 15:59:59 UTC: the last second of 31 December in Beijing.
EXPIRES_UTC = datetime(2026, 12, 31, 15, 59, 59)


@dataclass
class Site:
    h: Http
    base: str
    browser: Browser
    problems: list[str]
    redeemed: list[str]

    def context(self, **options: Any) -> BrowserContext:
        """A phone's browser context; requests to the redemption site are answered here,
        every other request off this machine is refused and recorded as a problem."""
        context = self.browser.new_context(viewport=PHONE, device_scale_factor=2,
                                           is_mobile=True, has_touch=True, locale="zh-CN",
                                           **options)

        def route(r: Route) -> None:
            url = r.request.url
            if url.startswith(self.base):
                r.continue_()
            elif url.startswith(REDEEM_HOST + "/"):
                self.redeemed.append(url)
                r.fulfill(status=200, content_type="text/html", body="<p>redeem</p>")
            else:
                self.problems.append(f"request off this machine: {url}")
                r.abort()

        context.route("**/*", route)
        return context

    def watch(self, page: Page) -> Page:
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        return page

    def link(self, order_id: int) -> str:
        token = links.ensure_link(self.h.engine, self.h.ctx.link_key, order_id,
                                  ttl=timedelta(days=1)).token
        return links.url_for(self.h.ctx.public_url, token)


@pytest.fixture
def site(engine: Engine, vault: Vault) -> Iterator[Site]:
    """A shop with a name, contact and footer, its pool with instructions, served on a
    loopback port that is also its ``public_url`` (so the page's link is the one opened)."""
    seed_codes(engine, vault, "p1", 6, expires_at=EXPIRES_UTC)
    poolpage.set_page(engine, vault, "p1",
                      {"instructions_zh": HOWTO_ZH, "instructions_en": HOWTO_EN}, actor="test")
    shop = shop_config(pickup=PickupConfig(lookup_check="buyer_id_suffix",
                                           footer="卡密一经显示不退不换")).model_copy(
        update={"display_name": "小蓝鲸数码",
                "contact": Contact(text="客服微信 xlj-kefu", url="tel:+864001234567")})
    sock = loopback_socket()
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    h = make_http(engine, vault, shop=shop, public_url=public_url)
    with serve(build_app(h.ctx), sock) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        s = Site(h, base, browser, [], [])
        yield s
        browser.close()
    assert s.problems == [], s.problems


def _shot_dir(tmp_path: Path) -> Path:
    return Path(os.environ.get("ROBOT_SCREENSHOT_DIR", str(tmp_path)))


def test_qr_code_on_screen_decodes_to_the_page_link(site: Site, tmp_path: Path) -> None:
    """A screenshot of the QR code, as a phone camera would see it, reads back as the page's
    own link (``public_url/p/<token>``), on the masked page and after the reveal."""
    url = site.link(site.h.order("QR1"))
    context = site.context()
    page = site.watch(context.new_page())
    page.goto(url)
    decoded = []
    for step in ("masked", "revealed"):
        if step == "revealed":
            page.get_by_role("button", name="显示完整卡密").tap()
            page.wait_for_url("**/reveal")
        shot = _shot_dir(tmp_path) / f"pickup-qr-{step}.png"
        page.locator("svg.qr").screenshot(path=str(shot))
        width, height, pixels = png_gray(shot.read_bytes())
        found = zxingcpp.read_barcode(memoryview(pixels).cast("B", (height, width)))
        assert found is not None, f"no QR code found on the {step} page"
        assert found.format == zxingcpp.BarcodeFormat.QRCode
        decoded.append(found.text)
    context.close()
    assert decoded == [url, url]


def test_redeem_button_instructions_contact_and_expiry(site: Site, tmp_path: Path) -> None:
    """With JavaScript: the instructions, contact, footer and expiry (Beijing time) show;
    after the reveal each code's "去兑换" opens the redemption link with the code in it."""
    poolpage.set_page(site.h.engine, site.h.vault, "p1",
                      {"redeem_url": REDEEM_HOST + "/exchange?from=robot&code={code}"},
                      actor="test")
    oid = site.h.order("RD1", quantity=2)
    codes = plain_codes(site.h, oid)
    context = site.context()
    page = site.watch(context.new_page())
    page.goto(site.link(oid))
    assert page.get_by_text("1. 打开 App，进入「我的」").is_visible()
    assert page.get_by_text("2. Tap Redeem code and paste it").is_visible()
    assert page.locator("a.redeem").count() == 0, "no redemption link before the reveal"
    page.get_by_role("button", name="显示完整卡密").tap()
    page.wait_for_url("**/reveal")
    assert page.locator("p.shop").inner_text() == "小蓝鲸数码"
    contact = page.locator("a.contact")
    assert contact.is_visible() and contact.inner_text() == "客服微信 xlj-kefu"
    assert contact.get_attribute("href") == "tel:+864001234567"
    assert page.get_by_text("卡密一经显示不退不换").is_visible()
    assert page.locator(".expires").first.inner_text().endswith("2026-12-31 23:59:59")
    assert page.locator("button.copy").first.is_visible(), "copy buttons shown by the script"
    redeem = page.locator("a.redeem")
    expected = [f"{REDEEM_HOST}/exchange?from=robot&code={c}" for c in codes]
    assert [redeem.nth(i).get_attribute("href") for i in range(2)] == expected
    with context.expect_page() as opened:
        redeem.nth(1).tap()
    popup = opened.value
    popup.wait_for_load_state()
    assert popup.url == expected[1]
    page.screenshot(path=str(_shot_dir(tmp_path) / "pickup-redeem.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    context.close()
    assert width <= PHONE["width"], "no horizontal scrolling on a phone"
    assert site.redeemed == [expected[1]]


def test_redeem_without_placeholder_copies_the_code_then_opens(site: Site) -> None:
    """A redemption page that takes no code: the button copies the card number, then opens
    the page; the buyer pastes it there."""
    poolpage.set_page(site.h.engine, site.h.vault, "p1", {"redeem_url": REDEEM_HOST + "/redeem"},
                      actor="test")
    oid = site.h.order("RD2")
    (code,) = plain_codes(site.h, oid)
    context = site.context()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.base)
    page = site.watch(context.new_page())
    page.goto(site.link(oid))
    page.get_by_role("button", name="显示完整卡密").tap()
    page.wait_for_url("**/reveal")
    with context.expect_page() as opened:
        page.locator("a.redeem").tap()
    popup = opened.value
    popup.wait_for_load_state()
    copied = page.evaluate("navigator.clipboard.readText()")
    context.close()
    assert popup.url == REDEEM_HOST + "/redeem"
    assert copied == code
    assert site.redeemed == [REDEEM_HOST + "/redeem"]


def test_javascript_off_reveal_by_form_post(site: Site, tmp_path: Path) -> None:
    """With JavaScript off the page still works: the reveal is a form post, the codes and
    the redemption link are there, and no copy button that could not work is shown."""
    poolpage.set_page(site.h.engine, site.h.vault, "p1",
                      {"redeem_url": REDEEM_HOST + "/exchange?code={code}"}, actor="test")
    oid = site.h.order("NJ1")
    (code,) = plain_codes(site.h, oid)
    context = site.context(java_script_enabled=False)
    page = site.watch(context.new_page())
    page.goto(site.link(oid))
    assert code not in page.content()
    page.get_by_role("button", name="显示完整卡密").tap()
    page.wait_for_url("**/reveal")
    assert page.locator("code").first.inner_text() == code
    assert page.locator("a.redeem").get_attribute("href") == f"{REDEEM_HOST}/exchange?code={code}"
    assert page.locator("button.copy").count() == 1
    assert not page.locator("button.copy").is_visible()
    assert page.get_by_text("1. 打开 App，进入「我的」").is_visible()
    page.screenshot(path=str(_shot_dir(tmp_path) / "pickup-nojs.png"), full_page=True)
    context.close()
