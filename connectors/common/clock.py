"""Clocks for connectors: ours (a callable returning an aware "now"; tests pass a fixed one)
and the platform's, as measured from its answers.

A platform's clock may run ahead of or behind ours. Its incremental windows are in its own
time, so a window planned on our clock can end in the platform's future (orders changed
there later fall before the next window: lost) or lag far behind it. :class:`PlatformClock`
estimates the offset (platform minus ours) from the HTTP ``Date`` header of every answer
(second resolution; every platform gateway sends one), or from a time field a connector
reads in a body, and keeps the median of the recent samples so that one slow or odd answer
does not move the windows.

A sample is the *low* end of what the answer proves: the platform wrote ``Date`` (rounded
down to the second) before we received the answer, so ``Date - received`` is at most the
true offset. Erring low keeps windows on the safe side (ending early delays an order by a
second; ending late could skip one). Offsets larger than :data:`MAX_CORRECTION` are
reported but not applied: no real platform is that far off, and trusting a wrong ``Date``
(a proxy's, say) would move the durable cursor into the future.

Nothing here may ever return a naive datetime.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from connectors.base import ClockReading

Clock = Callable[[], datetime]

#: Recent samples kept; the offset is their median.
SAMPLES = 9
#: Samples older than this (on our clock) are forgotten: the offset is measured afresh.
SAMPLE_MAX_AGE = timedelta(hours=1)
#: Offsets beyond this are reported but not applied to windows or signatures.
MAX_CORRECTION = timedelta(hours=6)


def utc_now() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)


def parse_http_date(value: str) -> datetime | None:
    """An RFC 7231 ``Date`` header as an aware UTC datetime; None if it is not one."""
    if not value or len(value) > 64:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None or moment.tzinfo is None:
        return None  # "-0000" or no zone: not an HTTP date
    return moment.astimezone(UTC)


class PlatformClock:
    """The platform's clock as seen from here: ours plus the median of recent offsets.

    Thread-safe (samples may arrive from several tasks). ``probe`` is an optional cheap
    request made by :meth:`ensure_measured` when there is no recent sample; its answer's
    ``Date`` header is the sample.
    """

    def __init__(self, local: Clock | None = None, *, samples: int = SAMPLES,
                 probe: Callable[[], Awaitable[object]] | None = None) -> None:
        self.local: Clock = local or utc_now
        self._samples: deque[tuple[datetime, float]] = deque(maxlen=samples)
        self._lock = threading.Lock()
        self.probe = probe

    # -- samples ---------------------------------------------------------------------------

    def observe(self, platform_time: datetime, received: datetime | None = None) -> None:
        """Record that the platform's clock read ``platform_time`` (aware) by ``received``
        (our clock; now by default)."""
        if platform_time.tzinfo is None:
            raise ValueError("a platform time must be aware")
        at = received or self.local()
        with self._lock:
            self._samples.append((at, (platform_time - at).total_seconds()))

    def observe_response(self, response: httpx.Response) -> None:
        """Take a sample from an answer's ``Date`` header (ignored when absent, repeated
        or malformed)."""
        values = response.headers.get_list("date")
        if len(values) != 1:
            return
        moment = parse_http_date(values[0])
        if moment is not None:
            self.observe(moment)

    def hooks(self) -> dict[str, list[Callable[[httpx.Response], Awaitable[None]]]]:
        """``event_hooks`` for an ``httpx.AsyncClient``: a sample from every answer."""

        async def on_response(response: httpx.Response) -> None:
            self.observe_response(response)

        return {"response": [on_response]}

    def _fresh(self) -> list[float]:
        horizon = self.local() - SAMPLE_MAX_AGE
        with self._lock:
            while self._samples and self._samples[0][0] < horizon:
                self._samples.popleft()
            return [offset for _, offset in self._samples]

    # -- readings --------------------------------------------------------------------------

    @property
    def measured(self) -> bool:
        return bool(self._fresh())

    def reading(self) -> ClockReading | None:
        """The current estimate, or None when nothing recent was measured."""
        offsets = self._fresh()
        if not offsets:
            return None
        with self._lock:
            last = self._samples[-1][0] if self._samples else self.local()
        median = statistics.median(offsets)
        return ClockReading(round(median, 3), len(offsets), last,
                            applied=abs(median) <= MAX_CORRECTION.total_seconds())

    @property
    def offset(self) -> timedelta:
        """Platform minus ours as applied to windows and signatures (zero when unmeasured
        or beyond :data:`MAX_CORRECTION`)."""
        reading = self.reading()
        if reading is None or not reading.applied:
            return timedelta(0)
        return timedelta(seconds=reading.offset_seconds)

    def platform(self, moment: datetime) -> datetime:
        """``moment`` on our clock, as the platform's clock reads it."""
        return moment + self.offset

    def now(self) -> datetime:
        """The platform's time now (our clock when unmeasured)."""
        return self.platform(self.local())

    async def ensure_measured(self) -> None:
        """Probe the platform when there is no recent sample; a failed probe is ignored
        (the caller then plans with our clock, and re-checks after its own calls)."""
        if self.probe is None or self.measured:
            return
        try:
            await self.probe()
        except Exception:  # noqa: BLE001 - a probe only measures; the real call reports errors
            return


#: A refusal is worth one re-signed retry when its answer moved the measured offset by at
#: least this much (platforms refuse timestamps 5-10 minutes off; smaller moves are noise).
RESIGN_MOVE = timedelta(seconds=60)


def moved_since(clock: PlatformClock, used: timedelta) -> bool:
    """Whether the applied offset moved by :data:`RESIGN_MOVE` since a request was signed
    with ``used``: a refusal of that request may be the platform refusing our timestamp."""
    return abs(clock.offset - used) >= RESIGN_MOVE


async def probe_get(client: httpx.AsyncClient, url: str) -> Any:
    """A bare GET whose only use is its ``Date`` header (the answer is ignored)."""
    await client.get(url)
    return None
