"""One formatting helper for money, times and durations: yuan with two decimals beside the
exact cents, times to the second, durations as a config file writes them."""

from __future__ import annotations

from datetime import datetime

import pytest

from robot.display import format_duration, format_time, with_yuan, yuan


@pytest.mark.parametrize(("cents", "shown"), [(2990, "29.90"), (5, "0.05"), (0, "0.00"),
                                              (-5, "-0.05"), (123456789, "1234567.89"),
                                              (None, "")])
def test_yuan_is_exact_with_two_decimals(cents: int | None, shown: str) -> None:
    """Cents become yuan exactly (no float rounding), always with two decimals."""
    assert yuan(cents) == shown


def test_with_yuan_adds_yuan_beside_every_cents_member() -> None:
    """Every `x_cents` member (at any depth) gains `x` in yuan, or `x_yuan` when `x` is
    taken; the cents stay for exactness."""
    data = {"total_cents": 2990, "lines": [{"unit_price_cents": 1000, "quantity": 3}],
            "cancelled": 2, "cancelled_cents": 500, "margin_cents": None, "flag_cents": True}
    assert with_yuan(data) == {
        "total_cents": 2990, "total": "29.90",
        "lines": [{"unit_price_cents": 1000, "unit_price": "10.00", "quantity": 3}],
        "cancelled": 2, "cancelled_cents": 500, "cancelled_yuan": "5.00",
        "margin_cents": None, "margin": None, "flag_cents": True}


def test_times_are_shown_to_the_second() -> None:
    """No microseconds on screen."""
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 678901)) == "2026-01-02 03:04:05"
    assert format_time(None, empty="never") == "never"


@pytest.mark.parametrize(("seconds", "shown"), [(2592000.0, "30d"), (3600, "1h"), (5400, "90m"),
                                                (90, "90s"), (60, "1m"), (0.2, "200ms"),
                                                (1.5, "1500ms")])
def test_durations_are_shown_as_a_config_file_writes_them(seconds: float, shown: str) -> None:
    """`30d`, not `2592000.0`."""
    assert format_duration(seconds) == shown
