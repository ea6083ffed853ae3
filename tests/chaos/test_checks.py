"""The chaos checks can fail: each one is fed a deliberately broken history (constructed
records, then a real run of a deliberately broken robot) and must name what is wrong.

Before these checks the chaos suite counted only the platform's *applied* shipments (never
above 1: the platform refuses the second), compared code ids (not plaintexts), checked the
database at write-back time (not what was sent) and let any held or failed order pass.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime

import pytest

from connectors.fakekit import links_in
from tests.chaos import broken
from tests.chaos.checks import (
    Call,
    Explanation,
    Outcome,
    calls_by_order,
    check_outcomes,
    check_plaintexts,
    check_write_backs,
)
from tests.chaos.harness import ChaosPlan, run

T0 = datetime(2025, 3, 1, 12, 0, 0)  # naive UTC, as the database stores it
E0 = T0.replace(tzinfo=UTC).timestamp()
LINK = "http://127.0.0.1:8080/p/tok"


def _ship(seq: int, at: float, outcome: str = "applied", codes: tuple[str, ...] = (),
          links: tuple[str, ...] = ()) -> Call:
    return Call(seq, E0 + at, "ship", "T1", outcome, codes, links)


def _memo(seq: int, at: float, codes: tuple[str, ...], links: tuple[str, ...] = (LINK,)) -> Call:
    return Call(seq, E0 + at, "memo", "T1", "applied", codes, links)


# -- what was sent ------------------------------------------------------------------------------
def test_a_clean_write_back_passes() -> None:
    """One ship, one memo with the order's codes and link: nothing to report."""
    calls = [_ship(1, 0.0), _memo(2, 1.0, ("VI****AB",))]
    assert check_write_backs("T1", calls, ["VI****AB"], T0.replace(microsecond=500_000)) == []


def test_a_reship_explained_by_a_lost_answer_passes() -> None:
    """A second ship call received before the robot recorded the order shipped (its answer
    to the first was lost, or it crashed) is explained: the platform refuses it, no harm."""
    calls = [_ship(1, 0.0), _ship(2, 3.0, "refused: 15 B04"), _memo(3, 4.0, ("VI****AB",))]
    assert check_write_backs("T1", calls, ["VI****AB"], T0.replace(second=3, microsecond=5)) == []


def test_a_reship_after_the_robot_recorded_shipped_is_a_violation() -> None:
    """A ship call received after the robot had recorded the order shipped: no crash or lost
    answer explains it, even though the platform refused it and counts one shipment."""
    calls = [_ship(1, 0.0), _memo(2, 1.0, ("VI****AB",)), _ship(3, 2.0, "refused: B04")]
    found = check_write_backs("T1", calls, ["VI****AB"], T0.replace(microsecond=500_000))
    assert len(found) == 1
    assert "ship call 3 (refused: B04) received 1.500 s after the robot had recorded" in found[0]


def test_a_reship_with_other_codes_or_link_is_a_violation() -> None:
    """A later call carrying codes or a link other than the first one sent is named."""
    codes = [_ship(1, 0.0, codes=("VI****AB",), links=(LINK,)),
             _ship(2, 0.5, "refused: B04", codes=("BA****IV",), links=(LINK,))]
    found = check_write_backs("T1", codes, [], None)
    assert found == ["T1: a re-ship sent codes that differ from the first ship call's (1)"]
    link = [_memo(1, 1.0, ("VI****AB",)), _memo(2, 2.0, ("VI****AB",), (LINK + "X",))]
    found = check_write_backs("T1", link, ["VI****AB"], T0)
    assert found == ["T1: memo call 2 sent link that differ from the first memo call's (1)"]

    # A shipment whose codes carry redemption links (no pickup link) then a memo with the
    # pickup link: nothing differs; a later memo with another pickup link still does.
    handed = [_ship(1, 0.0, codes=("VI****AB",)), _memo(2, 1.0, ("VI****AB",)),
              _memo(3, 2.0, ("VI****AB",), (LINK + "X",))]
    found = check_write_backs("T1", handed, ["VI****AB"], T0.replace(second=5))
    assert found == ["T1: memo call 3 sent link that differ from the first memo call's (2)"]
    # A card's number and PIN in another order (抖店 sorts a certificate's keys: cert_key
    # first) are the same codes; a call carrying another code is not.
    pair = [_ship(1, 0.0, codes=("PI****N1", "NU****R1")), _memo(2, 1.0, ("NU****R1", "PI****N1"))]
    assert check_write_backs("T1", pair, ["NU****R1", "PI****N1"], T0.replace(second=5)) == []
    other = [*pair, _memo(3, 2.0, ("NU****R1", "PI****N2"))]
    assert len(check_write_backs("T1", other, ["NU****R1", "PI****N1"],
                                 T0.replace(second=5))) == 2

def test_parts_shipped_on_their_own_are_compared_part_by_part() -> None:
    """抖店 syncs each sub-order's certificates in its own call: two parts with different
    codes are no violation; a second call for one part with other codes still is."""
    records = [{"seq": n, "received_at": E0 + n, "kind": "ship", "order_id": "P1",
                "payload": {"order_id": sub}, "outcome": outcome, "masked_codes": [code]}
               for n, sub, code, outcome in ((1, "S1", "VI****AB", "applied"),
                                             (2, "S2", "GA****CD", "applied"),
                                             (3, "S2", "GA****CD", "refused: 000008"))]
    calls = calls_by_order(records)["P1"]
    assert [c.part for c in calls] == ["S1", "S2", "S2"]
    assert check_write_backs("P1", calls, ["VI****AB", "GA****CD"], None) == []
    wrong = calls_by_order([*records, {**records[0], "seq": 4, "masked_codes": ["ZZ****ZZ"]}])
    assert check_write_backs("P1", wrong["P1"], [], None) == [
        "P1: a re-ship sent codes that differ from the first ship call's (1)"]
    # A payload naming the order itself is the whole order, as before.
    whole = calls_by_order([{**records[0], "order_id": "S1"}])["S1"]
    assert whole[0].part == ""


def test_a_memo_with_other_codes_than_the_orders_is_a_violation() -> None:
    """A memo whose masked codes are not the order's codes is named, even if it is the only
    memo (nothing to compare it with but the order)."""
    found = check_write_backs("T1", [_ship(1, 0.0), _memo(2, 1.0, ("BA****IV",))],
                              ["VI****AB"], T0.replace(microsecond=500_000))
    assert found == ["T1: memo call 2 carried codes ['BA****IV'], the order holds ['VI****AB']"]
    short = check_write_backs("T1", [_memo(2, 1.0, ("VI****AB",))], ["VI****AB", "GA****CD"], T0)
    assert len(short) == 1 and "the order holds" in short[0]


def test_recorded_calls_are_grouped_per_order_in_receipt_order() -> None:
    """The fakes' JSON records are read back per order, ordered by their sequence."""
    records = [{"seq": 2, "received_at": 2.0, "kind": "memo", "order_id": "A", "payload": {},
                "outcome": "applied", "masked_codes": ["VI****AB"], "links": [LINK]},
               {"seq": 1, "received_at": 1.0, "kind": "ship", "order_id": "A", "payload": {},
                "outcome": "applied", "masked_codes": [], "links": []},
               {"seq": 3, "received_at": 3.0, "kind": "ship", "order_id": "B", "payload": {},
                "outcome": "applied"}]
    grouped = calls_by_order(records)
    assert [c.seq for c in grouped["A"]] == [1, 2] and grouped["A"][1].links == (LINK,)
    assert [c.kind for c in grouped["B"]] == ["ship"]



def test_a_fake_records_pickup_links_not_redemption_links() -> None:
    """A platform that shows codes gets each with its pool's redemption link; only the
    pickup link is the order's link to compare across calls."""
    text = ('[{"cert_no": "VI****AB", "cert_link": "https://vip.example.com/x?code=VIPAB"}] '
            f"{LINK} https://shop.example.com/p/{'a' * 64}?x=1")
    assert links_in(text) == (LINK, f"https://shop.example.com/p/{'a' * 64}")

# -- plaintexts ------------------------------------------------------------------------------------
def test_one_plaintext_in_two_deliveries_is_a_violation_without_showing_it() -> None:
    """Two code rows (other pools, other fingerprints) holding one plaintext, delivered to
    two orders: named by code ids and orders, the plaintext never printed."""
    found = check_plaintexts([("shop A1", 11, "VIP-0123456789AB"),
                              ("shop A2", 907, "VIP-0123456789AB"),
                              ("shop A3", 12, "VIP-FFFFFFFFFFFF")])
    assert found == ["one plaintext delivered 2 times: code 11 to shop A1, code 907 to shop A2"]
    assert "0123456789" not in found[0]
    assert check_plaintexts([("a", 1, "X1"), ("b", 2, "X2")]) == []


# -- outcomes ----------------------------------------------------------------------------------------
def test_expected_outcomes_pass() -> None:
    """Shipped normal orders, held unknown SKUs, cancelled refunds, unseen hand shipments."""
    shipped, minimum, found = check_outcomes([
        Outcome("a", "normal", "shipped"), Outcome("b", "unknown_sku", "held", "unmapped SKU"),
        Outcome("c", "refunded", "cancelled", "closed"), Outcome("d", "by_hand", "absent"),
        Outcome("e", "refunded", "absent")])
    assert (shipped, minimum, found) == (1, 1, [])


def test_an_unexplained_held_or_failed_order_is_a_violation() -> None:
    """A normal order held (with a plausible reason) or failed, with no injected fault or
    rule of the run to explain it, is named, and shipped falls below the minimum."""
    shipped, minimum, found = check_outcomes([
        Outcome("a", "normal", "shipped"), Outcome("b", "normal", "held", broken.HOLD_REASON),
        Outcome("c", "normal", "failed", "platform call timed out (after 40 attempts)"),
        Outcome("d", "unknown_sku", "shipped")])
    assert (shipped, minimum) == (1, 3)
    assert found[0] == ("b: ended held (risk: buyer velocity), which nothing the run "
                        "injected explains")
    assert found[1].startswith("c: ended failed")
    assert found[2].startswith("d: ended shipped")
    assert found[3].startswith("shipped 1 of 3 orders that should ship; the injected faults "
                               "explain 0 short, so at least 3")


def test_an_explained_hold_lowers_the_minimum() -> None:
    """A hold the run set up (a risk rule it configured) explains one order short."""
    shipped, minimum, found = check_outcomes(
        [Outcome("a", "normal", "shipped"), Outcome("b", "normal", "held", "risk: buyer_rate")],
        [Explanation("held", "risk: buyer_rate")])
    assert (shipped, minimum, found) == (1, 1, [])


# -- a real run of a broken robot --------------------------------------------------------------
@pytest.mark.timeout(600)
def test_a_chaos_run_of_a_deliberately_broken_robot_reports_each_fault() -> None:
    """A small SQLite run of a robot that re-ships with other codes after recording shipped,
    writes memos with them, holds orders for no reason and loses a claimed code now and
    then, over stock hiding one code in two rows: every one of these is reported."""
    report = run(ChaosPlan(backend="sqlite", robots=1, orders=60, seconds=10, kill_every=6,
                           robot_module="tests.chaos.broken",
                           after_import=broken.duplicate_plaintexts, say=print))
    try:
        print("\n".join(report.lines()))
        text = "\n".join(report.violations)
        assert "after the robot had recorded the order shipped" in text
        assert re.search(r"sent codes( and link)? that differ from the first", text)
        assert "carried codes" in text and "the order holds" in text
        assert "one plaintext delivered 2 times" in text
        assert re.search(rf"ended held \([^)]*{broken.HOLD_REASON}\), which nothing the run "
                         "injected explains", text)
        assert "orders that should ship; the injected faults explain 0 short" in text
        assert "codes in two deliveries" not in text  # the rows differ: only plaintexts match
        assert re.search(r"\d+ codes are neither in stock, nor delivered, nor retired", text)
    finally:
        if report.workdir:
            shutil.rmtree(report.workdir, ignore_errors=True)
