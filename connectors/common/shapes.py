"""Malformed platform answers, for the fakes: what a real gateway sends on a bad day.

Two kinds of fault, both switched on through a fake's ``corrupt_order`` / ``garble_answers``:

* one order bent out of shape wherever the fake serializes it — a field dropped, set to
  null, or replaced by a huge number written as a string (:data:`FIELD_FAULTS`);
* a whole answer replaced by an HTML page (a WAF, a captive portal, a half-deployed gateway
  answering 200) or by JSON cut off in the middle (:data:`ANSWER_FAULTS`).

Used by the fakes only; the connectors must survive every one of these. Paths are dotted
keys into the order's JSON (``orders.order.0.num``); a numeric part indexes a list.
"""

from __future__ import annotations

import copy
import threading
from collections import defaultdict
from typing import Any

FIELD_FAULTS = ("drop", "null", "huge")
ANSWER_FAULTS = ("html", "truncated")
#: Larger than any integer column (and than 2**64), written as a string like some gateways do.
HUGE_NUMBER = "9" * 30
HTML_PAGE = ("<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
             "<body><h1>系统繁忙，请稍后再试</h1></body></html>")


def bend(document: Any, path: str, how: str) -> Any:
    """A deep copy of ``document`` with the field at ``path`` dropped, nulled or made huge.

    A path that does not reach a field leaves the copy unchanged (the order simply does not
    carry that field in this answer).
    """
    if how not in FIELD_FAULTS:
        raise ValueError(f"unknown field fault {how!r}; use one of {FIELD_FAULTS}")
    bent = copy.deepcopy(document)
    *parents, last = path.split(".")
    node: Any = bent
    for part in parents:
        node = _child(node, part)
        if node is None:
            return bent
    key: Any
    if isinstance(node, list) and _index(node, last):
        key = int(last)
    elif isinstance(node, dict) and (last in node or how != "drop"):
        key = last
    else:
        return bent
    if how == "drop":
        del node[key]
    else:
        node[key] = None if how == "null" else HUGE_NUMBER
    return bent


def _index(node: list[Any], part: str) -> bool:
    return part.isdigit() and int(part) < len(node)


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and _index(node, part):
        return node[int(part)]
    return None


def garble(text: str, how: str) -> tuple[bytes, str]:
    """(body, media type) replacing a JSON answer ``text``: an HTML page or cut-off JSON."""
    if how == "html":
        return HTML_PAGE.encode("utf-8"), "text/html;charset=utf-8"
    if how == "truncated":
        return text.encode("utf-8")[: max(1, len(text.encode("utf-8")) // 2)], \
            "application/json;charset=utf-8"
    raise ValueError(f"unknown answer fault {how!r}; use one of {ANSWER_FAULTS}")


class ShapeFaults:
    """A fake's pending shape faults (thread-safe): per-order field faults, and answer faults
    for the next calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._orders: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._answers: list[str] = []

    def corrupt(self, order_id: str, path: str, how: str) -> None:
        """From now on, serialize order ``order_id`` with ``path`` dropped / null / huge."""
        if how not in FIELD_FAULTS:
            raise ValueError(f"unknown field fault {how!r}; use one of {FIELD_FAULTS}")
        with self._lock:
            self._orders[str(order_id)].append((path, how))

    def garble_next(self, how: str, count: int = 1) -> None:
        """The next ``count`` answers are an HTML page or truncated JSON."""
        if how not in ANSWER_FAULTS:
            raise ValueError(f"unknown answer fault {how!r}; use one of {ANSWER_FAULTS}")
        with self._lock:
            self._answers.extend([how] * count)

    def clear(self, order_id: str | None = None) -> None:
        """Serialize ``order_id`` (every order when None) faithfully again; answers too."""
        with self._lock:
            if order_id is None:
                self._orders.clear()
                self._answers.clear()
            else:
                self._orders.pop(str(order_id), None)

    def apply(self, order_id: object, document: Any) -> Any:
        """``document`` (one order's JSON) with this order's field faults applied."""
        with self._lock:
            faults = list(self._orders.get(str(order_id), ()))
        for path, how in faults:
            document = bend(document, path, how)
        return document

    def take_answer(self) -> str | None:
        """The answer fault due for the call arriving now, if any."""
        with self._lock:
            return self._answers.pop(0) if self._answers else None


__all__ = ["ANSWER_FAULTS", "FIELD_FAULTS", "HTML_PAGE", "HUGE_NUMBER", "ShapeFaults", "bend",
           "garble"]
