"""The chaos run's judgements on what was *sent*, as pure functions over records.

The harness gathers the records (each fake's ``write_backs``, the robot's orders and their
codes decrypted with the run's key) and these functions say what is wrong with them, one
line per violation. They are pure so that a test can feed them a deliberately broken
history and see each one fail (``tests/chaos/test_checks.py``).

What they catch, that counting the platform's applied shipments cannot (the platform refuses
a second shipment, so its counter never passes 1):

* a ship call received after the robot had recorded the order shipped: no crash and no lost
  answer explains it (a lost answer leaves the order ``allocated`` in the robot's database,
  so its re-ship comes *before* ``shipped_at``);
* codes or a pickup link sent for an order that differ from what was first sent for it (a
  re-ship or a memo carrying another claim);
* a memo whose masked codes are not the order's codes;
* one plaintext in two deliveries, whatever rows, pools or fingerprints it hides under;
* fewer orders shipped than the run's injected events allow: every order that did not ship
  must be explained by what the run did to it (an unmapped SKU is held, a refund cancels).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Call:
    """One ship or memo call a fake recorded (``connectors.fakekit.WriteBackCall`` as JSON)."""

    seq: int
    received_at: float  # epoch seconds, real time
    kind: str  # ship | memo
    order_id: str
    outcome: str  # applied | refused: ...
    masked_codes: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    #: The part of the order a ship call is for, where a platform ships each part on its
    #: own (抖店 syncs each sub-order's certificates): its codes are compared with the codes
    #: of earlier calls for the same part only. "" where a call ships the whole order.
    part: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Call:
        payload = data.get("payload") or {}
        sub = str(payload.get("order_id") or "") if data["kind"] == "ship" else ""
        return cls(int(data["seq"]), float(data["received_at"]), str(data["kind"]),
                   str(data["order_id"]), str(data["outcome"]),
                   tuple(data.get("masked_codes") or ()), tuple(data.get("links") or ()),
                   part=sub if sub != str(data["order_id"]) else "")


def calls_by_order(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Call]]:
    """A fake's ``write_backs`` grouped by platform order id, in receipt order."""
    out: dict[str, list[Call]] = defaultdict(list)
    for data in records:
        call = Call.from_json(data)
        out[call.order_id].append(call)
    for calls in out.values():
        calls.sort(key=lambda c: c.seq)
    return dict(out)


def epoch(value: datetime | None) -> float | None:
    """A naive-UTC database timestamp as epoch seconds."""
    if value is None:
        return None
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).timestamp()


def check_write_backs(name: str, calls: Sequence[Call], masked: Sequence[str],
                      shipped_at: datetime | None) -> list[str]:
    """What was sent for one order: ``masked`` are the masked forms of the codes the order
    holds at the end, ``shipped_at`` when the robot recorded it shipped (None: never)."""
    out: list[str] = []
    done = epoch(shipped_at)
    for call in calls:
        if call.kind == "ship" and done is not None and call.received_at > done:
            out.append(f"{name}: ship call {call.seq} ({call.outcome}) received "
                       f"{call.received_at - done:.3f} s after the robot had recorded the "
                       "order shipped: a re-ship no crash or lost answer explains")
    # Codes are compared among the calls that carry codes, as the codes sent whatever their
    # order (抖店 signs its certificates with their keys sorted, so a card's PIN comes before
    # its number), links among those that carry a pickup link (抖店's certificates may carry
    # a pool's redemption link instead). A link is compared as the set sent: a platform that
    # takes one link per code repeats the order's.
    for call in calls:
        same = [c for c in calls if c.part == call.part]
        first_codes = next((c for c in same if c.masked_codes), None)
        first_link = next((c for c in same if c.links), None)
        what: list[str] = []
        first: Call | None = None
        if (first_codes is not None and call.masked_codes and call is not first_codes
                and sorted(call.masked_codes) != sorted(first_codes.masked_codes)):
            what.append("codes")
            first = first_codes
        if (first_link is not None and call.links and call is not first_link
                and set(call.links) != set(first_link.links)):
            what.append("link")
            first = first or first_link
        if first is not None:
            again = "a re-ship" if call.kind == "ship" else f"{call.kind} call {call.seq}"
            out.append(f"{name}: {again} sent {' and '.join(what)} that differ from the "
                       f"first {first.kind} call's ({first.seq})")
    for call in calls:
        if call.kind == "memo" and sorted(call.masked_codes) != sorted(masked):
            out.append(f"{name}: memo call {call.seq} carried codes "
                       f"{list(call.masked_codes)}, the order holds {list(masked)}")
    return out


def check_plaintexts(delivered: Iterable[tuple[str, int, str]]) -> list[str]:
    """``delivered`` is (order name, code id, plaintext) for every delivered code: no
    plaintext may appear twice, whatever rows or pools it hides under. Messages name code
    ids and orders, never the plaintext."""
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for order, code_id, plaintext in delivered:
        seen[plaintext].append((order, code_id))
    out = []
    for holders in seen.values():
        if len(holders) > 1:
            rows = ", ".join(f"code {cid} to {order}" for order, cid in sorted(holders,
                                                                               key=lambda h: h[1]))
            out.append(f"one plaintext delivered {len(holders)} times: {rows}")
    return out


@dataclass(frozen=True)
class Outcome:
    """How one placed order ended, and what the run did to it."""

    name: str
    kind: str  # normal | unknown_sku | refunded | by_hand | topup
    state: str  # the robot's final state, or "absent"
    reason: str | None = None


#: Where each kind of placed order may end without a fault to explain it. ``absent``: the
#: robot never took it in, because it was no longer paid-and-unshipped when the robot first
#: saw it (refunded, or shipped by the merchant, before the first poll). A refund may also
#: arrive after the shipment (``shipped``, then ``refunded``); one racing the write-back may
#: leave it failed with the platform's refusal as its reason.
EXPECTED: Mapping[str, frozenset[str]] = {
    "normal": frozenset({"shipped"}),
    "by_hand": frozenset({"shipped", "absent"}),
    "unknown_sku": frozenset({"held"}),
    "topup": frozenset({"shipped"}),  # its account in the message, or given by the run
    "refunded": frozenset({"cancelled", "refunded", "shipped", "absent", "failed"}),
}
#: Kinds that must ship unless an explanation says otherwise.
MUST_SHIP = ("normal", "topup")


@dataclass(frozen=True)
class Explanation:
    """An end the run's own doing explains: ``state`` with a reason containing ``reason``
    (e.g. a risk rule the run set up holds orders with its rule's name)."""

    state: str
    reason: str


def check_outcomes(outcomes: Sequence[Outcome],
                   explanations: Sequence[Explanation] = ()) -> tuple[int, int, list[str]]:
    """(shipped, the minimum the run explains, violations). Each order that should ship and
    did not must be explained; the count of shipped must reach the minimum."""
    out: list[str] = []
    must = [o for o in outcomes if o.kind in MUST_SHIP]
    explained = 0
    for o in outcomes:
        if o.state in EXPECTED.get(o.kind, frozenset()):
            continue  # (a reason is required of held/failed orders by the harness's own check)
        if any(e.state == o.state and e.reason in (o.reason or "") for e in explanations):
            explained += o.kind in MUST_SHIP
            continue
        out.append(f"{o.name}: ended {o.state} ({o.reason or 'no reason'}), which nothing "
                   "the run injected explains")
    shipped = sum(1 for o in must if o.state == "shipped")
    minimum = len(must) - explained
    if shipped < minimum:
        by_state = Counter(o.state for o in must if o.state != "shipped")
        out.append(f"shipped {shipped} of {len(must)} orders that should ship; the injected "
                   f"faults explain {explained} short, so at least {minimum} "
                   f"(the others ended {dict(sorted(by_state.items()))})")
    return shipped, minimum, out
