"""The pickup page in a real phone browser (headless Chromium through Playwright): masked
codes, the reveal tap, the copy button, no CSP violations, and a screenshot to look at."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from sqlalchemy import Engine

from robot.http import links
from robot.http.app import build_app
from robot.vault import Vault
from tests.factories import seed_codes
from tests.http.browser import CHROMIUM, CHROMIUM_ARGS, PHONE, loopback_socket, serve
from tests.http.conftest import Http, make_http
from tests.http.test_pickup import plain_codes


@pytest.fixture
def served(engine: Engine, vault: Vault) -> Iterator[tuple[Http, str]]:
    """The app on a real uvicorn (in its own thread and loop) on a free loopback port."""
    seed_codes(engine, vault, "p1", 2)
    h = make_http(engine, vault)
    with serve(build_app(h.ctx), loopback_socket()) as base:
        yield h, base


def test_pickup_page_on_a_phone(served: tuple[Http, str], tmp_path: Path) -> None:
    """On a 390×844 screen: masked first; a tap reveals the code; copy works; CSP holds."""
    h, base = served
    oid = h.order("B1")
    token = links.ensure_link(h.engine, h.ctx.link_key, oid, ttl=timedelta(days=1)).token
    code = plain_codes(h, oid)[0]
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True,
                                      has_touch=True, locale="zh-CN")
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(f"{base}/p/{token}")
        assert code not in page.content()
        page.get_by_role("button", name="显示完整卡密").tap()
        page.wait_for_url("**/reveal")
        page.wait_for_selector("button.copy")
        assert code in page.content()
        page.locator("button.copy").first.tap()
        page.wait_for_selector("text=已复制 Copied")
        copied = page.evaluate("navigator.clipboard.readText()")
        shot = Path(os.environ.get("ROBOT_SCREENSHOT_DIR", str(tmp_path))) / "pickup-phone.png"
        page.screenshot(path=str(shot), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        browser.close()
    assert copied == code
    assert width <= PHONE["width"], "no horizontal scrolling on a phone"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert problems == [], problems
