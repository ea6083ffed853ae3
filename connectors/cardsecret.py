"""A plaintext secret that never shows by accident: a card's code, number or PIN.

Part of the ground floor, shared by the channel contract (codes handed to a platform that
shows them to the buyer) and the supplier contract (codes bought for an order). It imports
nothing from the robot.
"""

from __future__ import annotations

import hmac
from typing import Any, NoReturn

__all__ = ["CardSecret"]


class CardSecret:
    """A card's code (or number) in plaintext, which never shows by accident.

    ``repr``, ``str`` and formatting print ``CardSecret('********')``; it is not picklable
    and compares in constant time. :meth:`reveal` is the one way to the plaintext: for the
    vault's encryption (a supplier's card) and for the one call that hands a code to a
    platform that shows it to the buyer (:class:`connectors.base.HandedCode`).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("a card secret is a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The plaintext: only inside the vault boundary."""
        return self._value

    def __repr__(self) -> str:
        return "CardSecret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CardSecret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(CardSecret)  # equal secrets must hash alike; the value is never hashed

    def __reduce__(self) -> NoReturn:
        raise TypeError("a card secret is never pickled")

    def __copy__(self) -> CardSecret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> CardSecret:
        return self
