"""The pickup page of an order bought as a top-up: each unit's status (done, in progress,
failed) with the account masked instead of codes, never the supplier or its cost; an order
with codes and a top-up shows both; without JavaScript as with it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from robot.http import links
from robot.vault import Vault, mask
from tests.factories import seed_codes
from tests.http.conftest import API_TOKEN, PUBLIC_URL, Http, make_http
from tests.http.test_pickup import csrf_of, plain_codes
from tests.http.topup_helpers import (
    ACCOUNT,
    MASKED,
    MAX_COST,
    PRODUCT,
    SUPPLIER,
    TOPUP_TITLE,
    TopupRig,
    topup_shop,
)


@pytest.fixture
def rig(engine: Engine, vault: Vault) -> Iterator[tuple[Http, TopupRig]]:
    seed_codes(engine, vault, "p1", 5)
    h = make_http(engine, vault, shop=topup_shop())
    with h.client:
        yield h, TopupRig(engine, vault, h.shop)


def page_of(h: Http, order_id: int) -> str:
    token = links.ensure_link(h.engine, h.ctx.link_key, order_id, ttl=timedelta(days=1)).token
    answer = h.client.get(f"/p/{token}")
    assert answer.status_code == 200
    return answer.text


def assert_private(text: str) -> None:
    """Nothing of the supplier, its product or cost, nor the whole account."""
    for secret in (SUPPLIER, PRODUCT, MAX_COST, ACCOUNT):
        assert secret not in text


def test_a_topup_in_progress_shows_its_progress(rig: tuple[Http, TopupRig]) -> None:
    """While the top-up is bought the page says so (充值中 / In progress), with the item and
    the account masked, and offers nothing to reveal."""
    h, r = rig
    oid = r.order("T1", ("t50", 1))
    r.work(settle=False, rounds=1)
    assert r.state(oid) == "sourcing"
    text = page_of(h, oid)
    assert "充值中" in text and "In progress" in text
    assert TOPUP_TITLE in text and MASKED in text
    assert 'name="csrf"' not in text
    assert_private(text)


def test_a_done_topup_shows_success_instead_of_codes(rig: tuple[Http, TopupRig]) -> None:
    """Once the supplier succeeded: 充值成功 138****5678 · 50元 under the item (the mapping's
    face value); no code list, no reveal."""
    h, r = rig
    oid = r.order("T2", ("t50", 2))
    r.work()
    assert r.state(oid) == "allocated"
    text = page_of(h, oid)
    assert text.count("充值成功") == 2 and "Topped up" in text
    assert text.count(f'{MASKED}</span><span class="face"> · 50元</span>') == 2
    assert "Your top-up" in text and "Your codes" not in text
    assert 'class="codes"' not in text and 'name="csrf"' not in text
    assert_private(text)


def test_a_failed_topup_says_so_and_points_to_the_shop(rig: tuple[Http, TopupRig]) -> None:
    """Every supplier failed: the order is failed and the page says the top-up failed and to
    contact the shop."""
    h, r = rig
    r.backend.arm("accept_then_fail", "运营商维护")
    oid = r.order("T3", ("t50", 1))
    r.work(rounds=4)
    assert r.state(oid) == "failed"
    text = page_of(h, oid)
    assert "充值失败" in text and "contact the shop" in text
    assert "运营商维护" not in text  # the supplier's own words stay with the merchant
    assert_private(text)


def test_a_mixed_order_shows_codes_and_topup(rig: tuple[Http, TopupRig]) -> None:
    """Codes and a top-up in one order: the masked codes with the reveal form and the
    top-up's status; the reveal shows the codes and the top-up again."""
    h, r = rig
    oid = r.order("T4", ("s1", 1), ("t50", 1))
    r.work()
    assert r.state(oid) == "allocated"
    [code] = plain_codes(h, oid)
    token = links.ensure_link(h.engine, h.ctx.link_key, oid, ttl=None).token
    masked = h.client.get(f"/p/{token}").text
    assert mask(code) in masked and code not in masked
    assert "充值成功" in masked and MASKED in masked
    revealed = h.client.post(f"/p/{token}/reveal", data={"csrf": csrf_of(masked)},
                             headers={"Origin": PUBLIC_URL}).text
    assert code in revealed and "充值成功" in revealed and MASKED in revealed
    assert_private(revealed)


def test_codes_of_an_order_still_buying_its_topup_stay_hidden(
        rig: tuple[Http, TopupRig]) -> None:
    """A mixed order still in ``sourcing`` shows its top-up's progress only: its codes wait
    until the order is allocated, and a reveal opens nothing."""
    h, r = rig
    oid = r.order("T5", ("s1", 1), ("t50", 1))
    assert r.state(oid) == "sourcing"
    token = links.ensure_link(h.engine, h.ctx.link_key, oid, ttl=None).token
    text = h.client.get(f"/p/{token}").text
    assert "充值中" in text and 'class="codes"' not in text
    for code in plain_codes(h, oid):
        assert mask(code) not in text
    assert h.client.post(f"/p/{token}/reveal", data={"csrf": "0" * 32},
                         headers={"Origin": PUBLIC_URL}).status_code == 403


def test_a_held_topup_without_account_opens_nothing(rig: tuple[Http, TopupRig]) -> None:
    """An order held for its account has nothing to show: the neutral page."""
    h, r = rig
    oid = r.order("T6", ("t50", 1), message=None)
    assert r.state(oid) == "held"
    token = links.ensure_link(h.engine, h.ctx.link_key, oid, ttl=None).token
    assert h.client.get(f"/p/{token}").status_code == 404


def test_the_lookup_form_finds_a_topup_being_bought(rig: tuple[Http, TopupRig]) -> None:
    """By order number and the buyer's check, a top-up still in progress is found (its page
    shows the progress)."""
    h, r = rig
    r.order("T7", ("t50", 1))
    answer = h.client.post("/p", data={"order": "T7", "buyer_id_suffix": "1234"},
                           follow_redirects=False)
    assert answer.status_code == 303
    target = re.sub(r"^p/", "/p/", answer.headers["location"])
    assert "充值中" in h.client.get(target).text


def test_the_topup_page_keeps_the_strict_policy(rig: tuple[Http, TopupRig]) -> None:
    """The top-up page runs no script and loads nothing from elsewhere: the same CSP."""
    h, r = rig
    oid = r.order("T8", ("t50", 1))
    r.work()
    token = links.ensure_link(h.engine, h.ctx.link_key, oid, ttl=None).token
    answer = h.client.get(f"/p/{token}")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert "<script" not in answer.text and "http://" not in answer.text


def test_the_delivery_api_tells_a_backend_how_far_the_topup_is(
        rig: tuple[Http, TopupRig]) -> None:
    """The merchant's backend reads a top-up order through the delivery API: while it is
    bought, 409 ``not_ready`` with the top-up ``in_progress``; once done, 200 with the codes
    of its card line and the top-up ``done``; the account masked, nothing of the supplier."""
    h, r = rig
    oid = r.order("T9", ("t50", 1), ("s1", 1))
    url, auth = "/api/v1/shops/mem/orders/T9/delivery", {"Authorization": f"Bearer {API_TOKEN}"}
    r.work(settle=False, rounds=1)
    assert r.state(oid) == "sourcing"
    waiting = h.client.get(url, headers=auth)
    assert waiting.status_code == 409
    assert waiting.json() == {"error": "not_ready", "state": "sourcing", "topups": [
        {"line_no": 0, "title": TOPUP_TITLE, "account": MASKED, "state": "in_progress",
         "face_value_cents": 5000}]}
    r.work()
    done = h.client.get(url, headers=auth)
    assert done.status_code == 200
    body = done.json()
    assert body["topups"] == [
        {"line_no": 0, "title": TOPUP_TITLE, "account": MASKED, "state": "done",
         "face_value_cents": 5000}]
    assert len(body["codes"]) == 1
    assert_private(done.text)
