"""The pickup page: masked until revealed, every reveal logged and audited, links that expire
and can be revoked, rate limits, and one neutral answer for everything that opens nothing."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from sqlalchemy import Engine, select

from robot import audit, orders
from robot.cli.cmd_links import revoke_link_cmd
from robot.cli.common import App
from robot.clock import utcnow
from robot.config import PickupConfig
from robot.http import links, pickup
from robot.http.handover import code_rows, decrypt
from robot.http.ratelimit import Bucket, RateLimits
from robot.schema import audit_log, deliveries, pickup_links, pickup_views
from robot.vault import Vault, mask
from tests.factories import seed_codes
from tests.http.conftest import PUBLIC_URL, Http, make_http, shop_config
from tests.http.lookup_helpers import SimClock


def link_for(h: Http, order_id: int, **kwargs: object) -> str:
    return links.ensure_link(h.engine, h.ctx.link_key, order_id, **kwargs).token  # type: ignore[arg-type]


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match, "the page has a reveal form"
    return match.group(1)


def plain_codes(h: Http, order_id: int) -> list[str]:
    """The order's codes, read without marking them seen (as the test's own peek)."""
    with h.engine.connect() as conn:
        return [decrypt(h.vault, r)[0] for r in code_rows(conn, order_id)]


def seen(h: Http, order_id: int) -> list[bool]:
    with h.engine.connect() as conn:
        return [r.seen_at is not None for r in conn.execute(
            select(deliveries.c.seen_at).where(deliveries.c.order_id == order_id))]


def test_reveal_flow_masks_first_then_logs_audits_and_marks_seen(http: Http) -> None:
    """GET shows masked codes only; the reveal shows them, logs a hashed-IP view, audits
    ``pickup_reveal`` and marks the codes seen, before the codes are on the page."""
    oid = http.order("R1", quantity=2)
    codes = plain_codes(http, oid)
    token = link_for(http, oid, ttl=timedelta(days=30))
    page = http.client.get(f"/p/{token}", headers={"User-Agent": "PhoneBrowser/1.0"})
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "script-src" in page.headers["content-security-policy"]
    for code in codes:
        assert code not in page.text
        assert mask(code) in page.text
    assert seen(http, oid) == [False, False]

    revealed = http.client.post(f"/p/{token}/reveal", data={"csrf": csrf_of(page.text)},
                                headers={"User-Agent": "PhoneBrowser/1.0",
                                         "Origin": PUBLIC_URL})
    assert revealed.status_code == 200
    for code in codes:
        assert code in revealed.text
    assert seen(http, oid) == [True, True]
    with http.engine.connect() as conn:
        views = conn.execute(select(pickup_views).order_by(pickup_views.c.id)).all()
        entry = conn.execute(select(audit_log).where(audit_log.c.action == "pickup_reveal")).one()
    assert [v.kind for v in views] == ["view", "reveal"]
    assert all(v.user_agent == "PhoneBrowser/1.0" for v in views)
    assert all(re.fullmatch(r"[0-9a-f]{64}", v.ip_hash) for v in views)
    assert "testclient" not in {v.ip_hash for v in views}
    assert entry.subject == f"order:{oid}"
    assert audit.verify(http.engine).ok


def test_reveal_needs_the_page_csrf_token_and_same_origin(http: Http) -> None:
    """A reveal posted without the page's token, or from another site, shows nothing."""
    oid = http.order("R2")
    token = link_for(http, oid, ttl=None)
    csrf = csrf_of(http.client.get(f"/p/{token}").text)
    assert http.client.post(f"/p/{token}/reveal", data={"csrf": "0" * 32}).status_code == 403
    assert http.client.post(f"/p/{token}/reveal", data={"csrf": csrf},
                            headers={"Origin": "https://evil.example"}).status_code == 403
    assert http.client.post(f"/p/{token}/reveal", data={"csrf": csrf},
                            headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert http.client.post(f"/p/{token}/reveal", data={"csrf": csrf},
                            headers={"Origin": "null"}).status_code == 403
    assert seen(http, oid) == [False]


def test_unknown_expired_revoked_and_failed_lookups_look_the_same(http: Http) -> None:
    """Every "nothing here" answer is the same page with the same status."""
    live = http.order("E1", buyer="buyer-00001111")
    expired = http.order("E2")
    revoked = http.order("E3")
    good = link_for(http, live, ttl=timedelta(days=1))
    old = link_for(http, expired, ttl=timedelta(days=1), now=utcnow() - timedelta(days=2))
    gone = link_for(http, revoked, ttl=None)
    assert links.revoke(http.engine, revoked, actor="test") == 1
    answers = [
        http.client.get("/p/" + "A" * 32),
        http.client.get("/p/short"),
        http.client.get(f"/p/{old}"),
        http.client.get(f"/p/{gone}"),
        http.client.get(f"/p/{good[:-1]}{'B' if good[-1] != 'B' else 'C'}"),
        http.client.post("/p", data={"order": "E1", "check": "9999"}),
        http.client.post("/p", data={"order": "NOPE", "check": "1111"}),
        http.client.post(f"/p/{old}/reveal", data={"csrf": csrf_for(http, old)}),
    ]
    assert {(a.status_code, a.text) for a in answers} == {(404, answers[0].text)}
    assert http.client.get(f"/p/{good}").status_code == 200


def csrf_for(h: Http, token: str) -> str:
    return pickup.csrf_for(h.ctx, token)


def test_lookup_with_the_shop_check_redirects_to_the_link(http: Http) -> None:
    """Order number plus the last 4 characters of the buyer id open the order's page."""
    oid = http.order("L1", buyer="buyer-00001234")
    form = http.client.get("/p")
    assert form.status_code == 200
    assert "后4位" in form.text
    response = http.client.post("/p", data={"order": "L1", "check": " 1234 "},
                                follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert re.fullmatch(r"p/[A-Za-z0-9_-]{32}", location)
    assert links.resolve(http.engine, http.ctx.link_key, location[2:]).order_id == oid  # type: ignore[union-attr]
    # The same order looked up again reuses its link.
    again = http.client.post("/p", data={"order": "L1", "check": "1234"}, follow_redirects=False)
    assert again.headers["location"] == location


def test_lookup_disabled_when_the_shop_says_none(engine: Engine, vault: Vault) -> None:
    """With ``lookup_check: none`` the form and the lookup both give the neutral page."""
    seed_codes(engine, vault, "p1", 2)
    h = make_http(engine, vault, shop=shop_config(pickup=PickupConfig(lookup_check="none")))
    h.order("N1", buyer="buyer-00001234")
    with h.client:
        assert h.client.get("/p").status_code == 404
        response = h.client.post("/p", data={"order": "N1", "check": "1234"},
                                 follow_redirects=False)
    assert response.status_code == 404


def test_paid_amount_only_beside_another_check(engine: Engine, vault: Vault) -> None:
    """``paid_amount`` alone is no lookup check at all; beside ``buyer_id_suffix`` it takes
    the amount as a buyer types it."""
    seed_codes(engine, vault, "p1", 2)
    clock = SimClock()  # misses on one order space its lookups: simulated, not slept
    h = make_http(engine, vault, shop=shop_config(
        pickup=PickupConfig(lookup_check=["buyer_id_suffix", "paid_amount"])),
        clock=clock, sleep=clock.sleep)
    h.order("A1", buyer="buyer-00001234")  # 1 × 10.00
    with h.client:
        for wrong in ("10.01", "1000", "abc", "", "10.001", "NaN", "1e1"):
            assert h.client.post("/p", data={"order": "A1", "paid_amount": wrong,
                                             "buyer_id_suffix": "1234"},
                                 follow_redirects=False).status_code == 404, wrong
        for right in ("10", "10.00", "¥10.0", "10元"):
            assert h.client.post("/p", data={"order": "A1", "paid_amount": right,
                                             "buyer_id_suffix": "1234"},
                                 follow_redirects=False).status_code == 303, right
    with pytest.raises(ValidationError, match="alone is no secret"):
        PickupConfig(lookup_check="paid_amount")


def test_rate_limits_refuse_the_request_after_the_budget(engine: Engine, vault: Vault) -> None:
    """Per link: N requests pass, the N+1th is refused; per IP across links likewise."""
    seed_codes(engine, vault, "p1", 2)
    h = make_http(engine, vault, limits=RateLimits(per_ip=Bucket(8, 0.0001),
                                                   per_order=Bucket(3, 0.0001)))
    oid = h.order("RL1")
    token = link_for(h, oid, ttl=None)
    with h.client:
        assert [h.client.get(f"/p/{token}").status_code for _ in range(4)] == [200, 200, 200, 429]
        # Other (guessed) tokens from the same IP: the IP budget (8) runs out.
        statuses = [h.client.get(f"/p/{'G' * 31}{c}").status_code for c in "abcdefgh"]
    assert statuses == [404] * 4 + [429] * 4
    with engine.connect() as conn:
        assert len(conn.execute(select(pickup_views)).all()) == 3


def test_order_in_other_states_shows_nothing(http: Http) -> None:
    """A cancelled order's link opens nothing (and marks nothing seen)."""
    oid = http.order("C1")
    token = link_for(http, oid, ttl=None)
    orders.cancel(http.engine, oid, actor="test")
    assert http.client.get(f"/p/{token}").status_code == 404


def test_revoke_link_command(http: Http, tmp_path, db_url: str, key_file) -> None:
    """``robot orders revoke-link`` ends the live link; ``--new`` prints a working one."""
    oid = http.order("V1")
    token = link_for(http, oid, ttl=None)
    (tmp_path / "shops").mkdir()
    (tmp_path / "robot.yaml").write_text(
        f"database: {db_url}\nkey_file: {key_file}\nshops: shops/*.yaml\n"
        f"http: {{public_url: '{PUBLIC_URL}'}}\n")
    (tmp_path / "shops" / "mem.yaml").write_text(
        "name: mem\nplatform: memory\nitems:\n  - {sku_id: s1, pool: p1}\n"
        "pickup: {link_ttl: 7d}\n")
    app = App(config_path=tmp_path / "robot.yaml")
    app._engine = http.engine  # the schema is there already (created from the models)
    result = CliRunner().invoke(revoke_link_cmd, [str(oid), "--new", "--json"], obj=app)
    assert result.exit_code == 0, result.output
    assert '"revoked": 1' in result.output
    assert http.client.get(f"/p/{token}").status_code == 404
    new_url = re.search(r'"new_url": "([^"]+)"', result.output).group(1)  # type: ignore[union-attr]
    assert new_url.startswith(PUBLIC_URL + "/p/")
    assert http.client.get(new_url.removeprefix(PUBLIC_URL)).status_code == 200
    with http.engine.connect() as conn:
        rows = conn.execute(select(pickup_links.c.expires_at, pickup_links.c.revoked_at)
                            .order_by(pickup_links.c.id)).all()
    assert rows[0].revoked_at is not None and rows[1].revoked_at is None
    assert rows[1].expires_at is not None


def test_pickup_url_hook_makes_one_link_and_renders_it_again(http: Http) -> None:
    """The write-back's hook returns the same URL on every call, and none with pickup off."""
    oid = http.order("H1")
    hook = links.pickup_url_hook(http.engine, http.vault, {"mem": http.shop}, PUBLIC_URL)
    first = hook(oid)
    assert first is not None and first.startswith(PUBLIC_URL + "/p/")
    assert hook(oid) == first
    with http.engine.connect() as conn:
        stored = conn.execute(select(pickup_links.c.token_hash)).scalars().all()
    token = first.rsplit("/", 1)[1]
    assert stored == [links.token_hash(token)]
    assert token not in str(stored)
    off = shop_config(pickup=PickupConfig(enabled=False))
    assert links.pickup_url_hook(http.engine, http.vault, {"mem": off}, PUBLIC_URL)(oid) is None


def test_a_code_the_vault_refuses_gets_a_clean_503_never_a_500_or_the_code(http: Http) -> None:
    """A delivered code whose row was altered in the database (its ciphertext moved from
    another row) makes the page answer the 'try later' page with 503 and log the refusal,
    instead of failing with a server error; no code of the row is on the page."""
    from robot.schema import codes as codes_table

    oid = http.order("V1", quantity=1)
    other = http.order("V2", quantity=1)
    token = link_for(http, oid, ttl=timedelta(days=30))
    with http.engine.begin() as conn:
        mine = conn.execute(select(deliveries.c.code_id)
                            .where(deliveries.c.order_id == oid)).scalar_one()
        theirs = conn.execute(select(codes_table).join(
            deliveries, deliveries.c.code_id == codes_table.c.id)
            .where(deliveries.c.order_id == other)).one()
        conn.execute(codes_table.update().where(codes_table.c.id == mine).values(
            ciphertext=theirs.ciphertext, key_id=theirs.key_id, aad_version=theirs.aad_version))
    page = http.client.get(f"/p/{token}")
    assert page.status_code == 503
    assert "V2" not in page.text
