"""The fake WeChat Pay sender: posts due notifications, signed and encrypted, and retries.

Like WeChat Pay, a delivery counts as received only when the answer is HTTP 200 or 204
(anything else, a timeout or a refused connection is retried on
:data:`connectors.wechat.fake_state.RETRY_DELAYS`, counted from the failed attempt on the
fake's clock). Each attempt is a fresh request: new timestamp (from ``stamp``, the wall clock
by default, because the receiver checks it against its own clock), nonce, signature and
resource nonce; the notification id stays the same. Delivery is driven explicitly
(:meth:`PaySender.deliver_due`, ``POST /__fake__/notify/deliver`` or the background loop of
``robot fake wechat``); the fake's lock is never held while a request is in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import httpx

from connectors.fakekit import DeliveryLoop, HttpSender, wall_now
from connectors.wechat.fake_state import FakeWechat, Notification


class PaySender(HttpSender[Notification]):
    """Delivers one fake's notifications over HTTP (blocking; call from a worker thread)."""

    def __init__(self, state: FakeWechat, *, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None,
                 stamp: Callable[[], datetime] = wall_now) -> None:
        super().__init__(timeout=timeout, transport=transport)
        self._state = state
        self._stamp = stamp

    def _url(self) -> str | None:
        return self._state.notify_url

    def _due(self) -> list[Notification]:
        return self._state.due_notifications()

    def _order(self, due: list[Notification]) -> list[Notification]:
        return self._state.push_order(due)

    def _request(self, item: Notification) -> tuple[str, bytes, Mapping[str, str]]:
        body = self._state.envelope(item)
        return item.notification_id, body, self._state.signed(body, self._stamp())

    def _accepted(self, response: httpx.Response) -> bool:
        return response.status_code in (200, 204)

    def _record(self, item: Notification, ok: bool) -> None:
        self._state.record_attempt(item, ok)


class PayLoop(DeliveryLoop):
    """Runs :meth:`PaySender.deliver_due` every ``interval`` seconds in a daemon thread."""

    def __init__(self, sender: PaySender, interval: float = 1.0) -> None:
        super().__init__(sender.deliver_due, name="wechat-fake-pay", interval=interval)
