"""The fake's push sender: posts due messages, signed, to the configured URL, and retries.

Like Youzan, a delivery counts as received only when the answer is HTTP 200 with ``success``
in its body; anything else (another status, another body, a timeout, a refused connection)
is retried later on :data:`connectors.youzan.fake_state.PUSH_RETRY_DELAYS` with ``sendCount``
incremented, until ``push_max_retries`` is exhausted. Delivery is driven explicitly
(:meth:`PushSender.deliver_due`, ``POST /__fake__/push/deliver``, or the background loop of
``robot fake youzan``), and the fake's lock is never held while a request is in flight (the
receiver may call the fake's API before it answers).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from connectors.fakekit import DeliveryLoop, HttpSender
from connectors.youzan.fake_state import FakeYouzan, PushMessage


class PushSender(HttpSender[PushMessage]):
    """Delivers one fake's push messages over HTTP (blocking; call from a worker thread)."""

    def __init__(self, state: FakeYouzan, *, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(timeout=timeout, transport=transport)
        self._state = state

    def _url(self) -> str | None:
        return self._state.push_url

    def _due(self) -> list[PushMessage]:
        return self._state.due_messages()

    def _order(self, due: list[PushMessage]) -> list[PushMessage]:
        return self._state.push_order(due)

    def _request(self, item: PushMessage) -> tuple[str, bytes, Mapping[str, str]]:
        body = self._state.push_body(item, send_count=item.attempts + 1)
        return item.msg_id, body, self._state.push_headers(item, body)

    def _accepted(self, response: httpx.Response) -> bool:
        return response.status_code == 200 and b"success" in response.content

    def _record(self, item: PushMessage, ok: bool) -> None:
        self._state.record_attempt(item, ok)


class PushLoop(DeliveryLoop):
    """Runs :meth:`PushSender.deliver_due` every ``interval`` seconds in a daemon thread."""

    def __init__(self, sender: PushSender, interval: float = 1.0) -> None:
        super().__init__(sender.deliver_due, name="youzan-fake-push", interval=interval)
