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

import threading

import httpx

from connectors.youzan.fake_state import FakeYouzan, PushMessage


class PushSender:
    """Delivers one fake's push messages over HTTP (blocking; call from a worker thread)."""

    def __init__(self, state: FakeYouzan, *, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._state = state
        self._client = httpx.Client(timeout=timeout, transport=transport)
        self._sending = threading.Lock()  # one delivery round at a time keeps order
        self.answers: list[tuple[str, int]] = []  # (msg_id, HTTP status or 0), for tests

    def close(self) -> None:
        self._client.close()

    def deliver_due(self) -> int:
        """Post every message due now (in publication order); returns how many succeeded."""
        url = self._state.push_url
        if not url:
            return 0
        delivered = 0
        with self._sending:
            for message in self._state.due_messages():
                ok = self._post(url, message)
                self._state.record_attempt(message, ok)
                delivered += ok
        return delivered

    def _post(self, url: str, message: PushMessage) -> bool:
        body = self._state.push_body(message, send_count=message.attempts + 1)
        headers = self._state.push_headers(message, body)
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            self.answers.append((message.msg_id, 0))
            return False
        self.answers.append((message.msg_id, response.status_code))
        return response.status_code == 200 and b"success" in response.content


class PushLoop:
    """Runs :meth:`PushSender.deliver_due` every ``interval`` seconds in a daemon thread."""

    def __init__(self, sender: PushSender, interval: float = 1.0) -> None:
        self._sender = sender
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="youzan-fake-push", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sender.deliver_due()
