"""``robot demo`` drives 抖店 like the other platforms, plus a live-stream burst: every order
of the stream and of the burst ends where it should, and the summary reports the burst."""

from __future__ import annotations

import asyncio

import pytest

from robot.demo import run_demo


@pytest.mark.usefixtures("demo_logging")
def test_the_demo_ships_a_douyin_stream_and_its_live_stream_burst() -> None:
    """A 抖店-only demo with a burst of 40 orders paid at once: the run is judged OK (every
    order where it should be, no code twice, nothing shipped twice on the platform) and the
    summary names the burst with all 40 shipped."""
    summary = asyncio.run(run_demo(orders_wanted=30, timeout=170, console=None,
                                   only=["douyin"], seed=7, burst=40))
    assert summary.ok, summary
    assert summary.duplicate_codes == 0 and summary.platform_shipments_doubled == 0
    burst = summary.bursts["douyin"]
    assert (burst["orders"], burst["shipped"]) == (40, 40)
    assert burst["all_shipped_seconds"] is not None
    assert summary.per_platform["douyin"]["shipped"] == summary.expected["shipped"] >= 40
