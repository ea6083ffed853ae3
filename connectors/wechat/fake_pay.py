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

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from connectors.wechat.fake_state import FakeWechat, Notification


def _wall() -> datetime:
    return datetime.now(UTC)


class PaySender:
    """Delivers one fake's notifications over HTTP (blocking; call from a worker thread)."""

    def __init__(self, state: FakeWechat, *, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None,
                 stamp: Callable[[], datetime] = _wall) -> None:
        self._state = state
        self._client = httpx.Client(timeout=timeout, transport=transport)
        self._stamp = stamp
        self._sending = threading.Lock()  # one delivery round at a time keeps order
        self.answers: list[tuple[str, int]] = []  # (notification id, HTTP status or 0)

    def close(self) -> None:
        self._client.close()

    def deliver_due(self) -> int:
        """Post every notification due now (in order); returns how many were accepted."""
        url = self._state.notify_url
        if not url:
            return 0
        delivered = 0
        with self._sending:
            for note in self._state.due_notifications():
                ok = self._post(url, note)
                self._state.record_attempt(note, ok)
                delivered += ok
        return delivered

    def _post(self, url: str, note: Notification) -> bool:
        body = self._state.envelope(note)
        headers = self._state.signed(body, self._stamp())
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            self.answers.append((note.notification_id, 0))
            return False
        self.answers.append((note.notification_id, response.status_code))
        return response.status_code in (200, 204)


class PayLoop:
    """Runs :meth:`PaySender.deliver_due` every ``interval`` seconds in a daemon thread."""

    def __init__(self, sender: PaySender, interval: float = 1.0) -> None:
        self._sender = sender
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wechat-fake-pay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sender.deliver_due()
