"""The plugin-facing errors, grouped by what the operator (or the caller) should do.

A connector or a supplier maps every failure onto one of these; the core decides what to do
from the group alone. The core's own errors (:mod:`robot.errors`) extend this same tree, so
there is one tree with one root::

    RobotError
    ├── Fatal                  stop this shop / supplier until a person fixes something
    │   ├── ConfigError        the configuration is wrong (file, shop and field named)
    │   ├── AuthError          credentials rejected or authorization expired
    │   └── PermissionDenied   the app lacks a permission on the platform
    ├── Retriable              try again later (``retry_after`` seconds if the cause said so)
    │   ├── Throttled          the platform asked us to slow down
    │   └── Unavailable        5xx, timeout, network error
    └── Skippable              this one item is bad: park it with a reason and go on
        ├── NotShippable       the platform refuses to ship: closed, refunded, unknown
        ├── BadPlatformData    the platform sent something we cannot understand
        └── PushRejected       a pushed message failed verification (signature, age, shape)

More plugin-facing subclasses live beside what raises them: ``TokenRefused`` (an AuthError)
and ``PlatformRefused`` (a Skippable) in :mod:`connectors.common.errors`; ``KeyReused`` (a
Skippable: an idempotency key reused for another purchase) and ``NoSuchPurchase`` (a
Retriable: the supplier holds no order under the key) in :mod:`connectors.supplier`;
``SendUnknown`` (a RobotError of its own, in no group above: a buyer notification may or may
not have been sent, so it is neither retried nor given up) in :mod:`connectors.notifier`.

Rules: the class docstring is the default message; driver and HTTP errors are translated at
the boundary with ``raise ... from exc``; no message ever carries a plaintext code or secret.
This module is part of the ground floor: it imports nothing from the robot.
"""

from __future__ import annotations


class RobotError(Exception):
    """The delivery robot failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class Fatal(RobotError):
    """A person must fix something before this can work."""


class ConfigError(Fatal):
    """The configuration is invalid."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class AuthError(Fatal):
    """The platform rejected our credentials or the seller's authorization has expired."""


class PermissionDenied(Fatal):
    """The platform app lacks a permission this call needs."""


class Retriable(RobotError):
    """A temporary failure: try again later."""

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Throttled(Retriable):
    """The platform throttled us."""


class Unavailable(Retriable):
    """The platform or the database is unavailable (5xx, timeout or network error)."""


class Skippable(RobotError):
    """This one item cannot be processed; park it with the reason and go on."""


class NotShippable(Skippable):
    """The platform will not ship this order (closed, refunded, or not found)."""


class BadPlatformData(Skippable):
    """The platform returned data we cannot understand."""


class PushRejected(Skippable):
    """A pushed message failed verification and was refused without side effects."""
