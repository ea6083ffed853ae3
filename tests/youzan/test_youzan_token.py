"""The access token: absolute expiry, durable cache, renewal before expiry and on 4201-4203."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from connectors.youzan.fake import FakeClock
from connectors.youzan.token import SECRET_NAME
from robot.errors import AuthError, Unavailable
from tests.youzan.helpers import MemoryContext, in_process, make_fake


def _fetch(connector, tid: str):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        try:
            return await connector.fetch_order(tid)
        finally:
            await connector.aclose()
    return asyncio.run(main())


def test_token_is_cached_durably_and_reused_by_a_second_connector() -> None:
    """One /auth/token call serves many API calls and a restarted process (same store)."""
    clock = FakeClock()
    fake = make_fake(clock)
    tid = fake.create_trade()
    context = MemoryContext()
    _fetch(in_process(fake, context, clock=clock), tid)
    _fetch(in_process(fake, context, clock=clock), tid)
    assert fake.tokens_issued == 1
    stored = json.loads(context.secrets[SECRET_NAME])
    assert stored["access_token"] == fake.current_token
    assert stored["expires_ms"] == fake.tokens[fake.current_token]  # absolute, as given


def test_token_is_renewed_before_its_absolute_expiry() -> None:
    """Within the margin of ``expires`` a new token is forced; the old one stops working."""
    clock = FakeClock()
    fake = make_fake(clock)
    tid = fake.create_trade()
    context = MemoryContext()
    _fetch(in_process(fake, context, clock=clock), tid)
    first = fake.current_token
    clock.advance(timedelta(days=7) - timedelta(minutes=30))  # margin is one hour
    _fetch(in_process(fake, context, clock=clock), tid)
    assert fake.tokens_issued == 2
    assert fake.current_token != first
    assert first not in fake.tokens  # refresh=true replaced it
    assert json.loads(context.secrets[SECRET_NAME])["access_token"] == fake.current_token


def test_expired_token_mid_run_is_renewed_and_the_call_retried_once() -> None:
    """Gateway 4202 (expired early on Youzan's side): renew, retry, succeed."""
    clock = FakeClock()
    fake = make_fake(clock)
    tid = fake.create_trade()
    connector = in_process(fake, clock=clock)

    async def main() -> None:
        await connector.fetch_order(tid)
        fake.expire_tokens()
        order = await connector.fetch_order(tid)
        assert order.platform_order_id == tid
        await connector.aclose()

    asyncio.run(main())
    assert fake.tokens_issued == 2
    assert fake.calls.count("youzan.trade.get") == 3  # ok, 4202, ok


def test_a_token_renewed_by_another_process_is_picked_up_from_the_store() -> None:
    """4203 because another process forced a new token: reuse the stored one, ask for none."""
    clock = FakeClock()
    fake = make_fake(clock)
    tid = fake.create_trade()
    context = MemoryContext()
    first = in_process(fake, context, clock=clock)
    second = in_process(fake, context, clock=clock)

    async def main() -> None:
        await first.fetch_order(tid)
        # The other process renews (forced), which invalidates the first one's token at once.
        await second.api.tokens.after_rejection(fake.current_token or "")
        issued = fake.tokens_issued
        await first.fetch_order(tid)
        assert fake.tokens_issued == issued
        await first.aclose()
        await second.aclose()

    asyncio.run(main())


def test_revoked_authorization_is_an_auth_error_after_one_renewal() -> None:
    """4201, renewal refused (1004): AuthError, so the core pauses the shop."""
    clock = FakeClock()
    fake = make_fake(clock)
    tid = fake.create_trade()
    context = MemoryContext()
    _fetch(in_process(fake, context, clock=clock), tid)
    fake.revoke_authorization()
    with pytest.raises(AuthError, match="1004"):
        _fetch(in_process(fake, context, clock=clock), tid)


def test_token_rejected_twice_is_retried_later_not_fatal() -> None:
    """A gateway that rejects even the token it just renewed: Unavailable (the core retries
    with backoff), not AuthError — the renewal worked, so the shop must not be paused."""
    clock = FakeClock()
    fake = make_fake(clock)
    tid = fake.create_trade()
    issue = fake.handle_token

    def issue_then_expire(content_type: str, raw: bytes) -> dict[str, object]:
        document = issue(content_type, raw)
        fake.expire_tokens()  # Youzan-side expiry right after issuing: every call gets 4202
        return document

    fake.handle_token = issue_then_expire  # type: ignore[method-assign]
    with pytest.raises(Unavailable, match="again after renewing"):
        _fetch(in_process(fake, clock=clock), tid)
    assert fake.tokens_issued == 2
    assert fake.calls.count("youzan.trade.get") == 2


def test_wrong_secret_or_shop_is_an_auth_error() -> None:
    """Bad client_secret (1000) or an unknown grant (1103) are credential errors."""
    fake = make_fake()
    tid = fake.create_trade()
    with pytest.raises(AuthError, match="1000"):
        _fetch(in_process(fake, client_secret="wrong"), tid)
    with pytest.raises(AuthError, match="1103"):
        _fetch(in_process(fake, grant_id="999"), tid)


def test_token_endpoint_outage_is_unavailable() -> None:
    """An HTML 5xx from /auth/token is retriable, not an authorization problem."""
    fake = make_fake()
    tid = fake.create_trade()
    fake.set_faults(token_endpoint_500=1)
    with pytest.raises(Unavailable):
        _fetch(in_process(fake), tid)


def test_tool_app_uses_the_code_once_then_the_rotating_refresh_token() -> None:
    """authorization_code → refresh_token stored; renewals use (and rotate) it."""
    clock = FakeClock()
    fake = make_fake(clock)
    tid = fake.create_trade()
    context = MemoryContext()
    config = {"authorize_type": "authorization_code", "auth_code": fake.issue_auth_code()}
    _fetch(in_process(fake, context, clock=clock, **config), tid)
    stored = json.loads(context.secrets[SECRET_NAME])
    assert stored["code_used"] is True
    first_refresh = stored["refresh_token"]
    assert first_refresh in fake.refresh_tokens
    fake.expire_tokens()
    _fetch(in_process(fake, context, clock=clock, **config), tid)
    stored = json.loads(context.secrets[SECRET_NAME])
    assert stored["refresh_token"] != first_refresh
    assert first_refresh not in fake.refresh_tokens
    assert fake.auth_codes == set()


def test_tool_app_without_refresh_token_or_unused_code_must_reauthorize() -> None:
    """The code was spent and no refresh token is known: AuthError naming re-authorization."""
    fake = make_fake()
    tid = fake.create_trade()
    context = MemoryContext()
    context.secrets[SECRET_NAME] = json.dumps(
        {"access_token": "gone", "expires_ms": 0, "refresh_token": None, "code_used": True})
    connector = in_process(fake, context, authorize_type="authorization_code",
                           auth_code="spent")
    with pytest.raises(AuthError, match="authorize"):
        _fetch(connector, tid)
