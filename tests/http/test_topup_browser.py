"""A top-up order's pickup page in a real phone browser (Debian's Chromium through
Playwright), JavaScript on and off: a mixed order shows its top-up status with the account
masked beside its codes, the reveal works, the strict policy reports nothing, and nothing is
requested off this machine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import Engine

from robot.http import links
from robot.http.app import build_app
from robot.vault import Vault
from tests.factories import seed_codes
from tests.http.browser import CHROMIUM, CHROMIUM_ARGS, PHONE, loopback_socket, serve
from tests.http.conftest import Http, make_http
from tests.http.test_pickup import plain_codes
from tests.http.topup_helpers import ACCOUNT, MASKED, SUPPLIER, TopupRig, topup_shop


@pytest.fixture
def served(engine: Engine, vault: Vault) -> Iterator[tuple[Http, str]]:
    seed_codes(engine, vault, "p1", 4)
    sock = loopback_socket()
    h = make_http(engine, vault, shop=topup_shop(),
                  public_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    with serve(build_app(h.ctx), sock) as base:
        yield h, base


@pytest.mark.parametrize("javascript", [True, False])
def test_mixed_order_shows_topup_status_and_codes_on_a_phone(
        served: tuple[Http, str], engine: Engine, vault: Vault, javascript: bool) -> None:
    """The phone shows 充值成功 with 138****5678 beside the masked code; after the reveal
    (a form post, with or without JavaScript) the code and the top-up are both on screen;
    no console error (a CSP violation is one), no request off this machine."""
    h, base = served
    rig = TopupRig(engine, vault, h.shop)
    oid = rig.order("BT1", ("s1", 1), ("t50", 1))
    rig.work()  # before the browser: Playwright's sync API holds this thread's event loop
    (code,) = plain_codes(h, oid)
    token = links.ensure_link(h.engine, h.ctx.link_key, oid, ttl=timedelta(days=1)).token
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            _check_on_phone(browser, base, links.url_for(h.ctx.public_url, token), code,
                            javascript)
        finally:
            browser.close()


def _check_on_phone(browser: Browser, base: str, url: str, code: str,
                    javascript: bool) -> None:
    problems: list[str] = []
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                  locale="zh-CN", java_script_enabled=javascript)
    context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base)
                  else (problems.append(r.request.url), r.abort()))
    page = context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(url)
    status = page.locator("ul.topups li").first
    assert status.locator(".state.done").inner_text().startswith("充值成功")
    assert status.locator(".account").inner_text() == MASKED
    assert status.locator(".face").inner_text().strip() == "· 50元"
    assert page.get_by_text(code).count() == 0
    page.get_by_role("button", name="显示完整卡密").tap()
    page.wait_for_url("**/reveal")
    assert page.locator("code").first.inner_text() == code
    assert page.locator("ul.topups .state.done").is_visible()
    text = page.locator("body").inner_text()
    width = page.evaluate("document.documentElement.scrollWidth")
    context.close()
    assert ACCOUNT not in text and SUPPLIER not in text
    assert width <= PHONE["width"], "no horizontal scrolling on a phone"
    assert problems == [], problems
