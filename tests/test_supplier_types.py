"""The supplier protocol's types (connectors.supplier): secrets stay hidden, bad requests are
refused before any call, a purchase's outcome and content agree."""

from __future__ import annotations

import pickle

import pytest
from structlog.testing import capture_logs

from connectors.log import get_logger
from connectors.supplier import Card, CardSecret, Outcome, Purchase, PurchaseRequest


def test_a_card_secret_never_prints_its_value() -> None:
    """repr, str, f-strings, %-formatting and a logged event show stars, never the code."""
    secret = CardSecret("PW1234567890")
    with capture_logs() as logs:
        get_logger("probe").warning("bought", card=secret, cards=[Card(secret)])
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!s:>40}",
             repr(Card(secret, CardSecret("NO42"))), repr(logs)]
    assert not [s for s in shown if "PW1234567890" in s or "NO42" in s]
    assert secret.reveal() == "PW1234567890"


def test_a_card_secret_is_never_pickled_and_compares_by_value() -> None:
    """Pickling a code fails (it would leave the vault as bytes); equal codes compare equal."""
    with pytest.raises(TypeError):
        pickle.dumps(CardSecret("X1"))
    assert CardSecret("X1") == CardSecret("X1")
    assert CardSecret("X1") != CardSecret("X2")
    with pytest.raises(ValueError):
        CardSecret("  ")


@pytest.mark.parametrize("key", ["", "has space", "x" * 65, "中文", None, 12])
def test_a_bad_idempotency_key_is_refused_before_any_call(key: object) -> None:
    """A key that is empty, too long, not printable ASCII or not a string is refused."""
    with pytest.raises(ValueError, match="idempotency key"):
        PurchaseRequest(key=key, product_id="p")  # type: ignore[arg-type]


@pytest.mark.parametrize("quantity", [0, -1, 10_001, True, 1.5])
def test_a_bad_quantity_is_refused(quantity: object) -> None:
    """Quantity is a whole number from 1 to 10000 (not a bool, not a float)."""
    with pytest.raises(ValueError, match="quantity"):
        PurchaseRequest(key="K1", product_id="p", quantity=quantity)  # type: ignore[arg-type]


def test_an_empty_account_is_refused() -> None:
    """A top-up account given as blanks is refused rather than sent."""
    with pytest.raises(ValueError, match="account"):
        PurchaseRequest(key="K1", product_id="p", account="   ")


def test_a_purchase_outcome_and_content_agree() -> None:
    """Cards only on success; a failure carries its reason; a long reason is cut."""
    with pytest.raises(ValueError, match="cards"):
        Purchase("K1", Outcome.PROCESSING, cards=(Card(CardSecret("C")),))
    with pytest.raises(ValueError, match="says why"):
        Purchase("K1", Outcome.FAILED)
    assert len(Purchase("K1", Outcome.UNKNOWN, reason="x" * 1000).reason or "") == 300
    assert Outcome.SUCCEEDED.final and Outcome.FAILED.final
    assert not (Outcome.UNKNOWN.final or Outcome.ACCEPTED.final or Outcome.PROCESSING.final)


def test_the_robots_json_log_shows_no_card_code() -> None:
    """Through the robot's own JSON logging (redaction and renderer), a code logged by a
    supplier plugin shows as stars."""
    import io
    import logging

    from robot.log import configure_logging

    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    try:
        get_logger("probe").warning("bought", cards=[Card(CardSecret("PW5551234"))])
        for handler in logging.getLogger().handlers:
            handler.flush()
        assert "bought" in stream.getvalue()
        assert "PW5551234" not in stream.getvalue()
    finally:
        configure_logging("warning")
