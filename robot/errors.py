"""The robot's exception tree, grouped by what the operator (or the caller) should do.

The plugin-facing part (marked ``*``) is defined in the ground floor, :mod:`connectors.errors`,
so that connectors and suppliers raise it without importing the robot; this module adds the
core's own errors to the same tree and re-exports the whole of it::

    RobotError *
    ├── Fatal *                stop this shop / command until a person fixes something
    │   ├── ConfigError *      the configuration is wrong (file, shop and field named)
    │   ├── VaultError         the key file is missing, unreadable or wrong
    │   │   └── CodeRejected   one stored code failed authentication (row altered or moved)
    │   ├── AuthError *        platform credentials rejected or authorization expired
    │   └── PermissionDenied * the app lacks a permission on the platform
    ├── Retriable *            try again later (``retry_after`` seconds if the cause said so)
    │   ├── Throttled *        the platform asked us to slow down
    │   └── Unavailable *      5xx, timeout, network error, database unreachable
    │       ├── DatabaseUnavailable  the database cannot be reached or opened (URL masked)
    │       └── DiskFull       the database's disk is full; the transaction was rolled back
    ├── Skippable *            this one item is bad: park it with a reason and go on
    │   ├── NotShippable *     the platform refuses to ship: closed, refunded, unknown
    │   ├── BadPlatformData *  the platform sent something we cannot understand
    │   └── PushRejected *     a pushed message failed verification (signature, age, shape)
    └── UserError              a CLI request that cannot be done as asked (exit status 1)
        └── ImportRejected     an import file has bad lines; nothing was imported

Rules: the class docstring is the default message; driver and HTTP errors are translated at
the boundary with ``raise ... from exc``; no message ever carries a plaintext code or secret.
"""

from __future__ import annotations

from typing import Any

from connectors.errors import (
    AuthError,
    BadPlatformData,
    ConfigError,
    Fatal,
    NotShippable,
    PermissionDenied,
    PushRejected,
    Retriable,
    RobotError,
    Skippable,
    Throttled,
    Unavailable,
)

__all__ = [
    "AuthError",
    "BadPlatformData",
    "CodeRejected",
    "ConfigError",
    "DatabaseUnavailable",
    "DiskFull",
    "Fatal",
    "ImportRejected",
    "NotShippable",
    "PermissionDenied",
    "PushRejected",
    "Retriable",
    "RobotError",
    "Skippable",
    "Throttled",
    "Unavailable",
    "UserError",
    "VaultError",
]


class VaultError(Fatal):
    """The key file is missing, unreadable or does not match the stored codes."""


class CodeRejected(VaultError):
    """A stored code failed authentication: its row was altered, or its ciphertext was copied
    or moved from another row. That code is never handed out."""


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached or opened."""


class DiskFull(Unavailable):
    """The database's disk is full: nothing was written. Free space, then try again."""


class UserError(RobotError):
    """The request cannot be done as asked."""


class ImportRejected(UserError):
    """The import file has bad lines; nothing was imported."""

    def __init__(self, rejects: list[tuple[int, str]], message: str | None = None, *,
                 summary: dict[str, Any] | None = None) -> None:
        self.rejects = rejects
        # Accepted, blank and rejected lines of the file (None when it was refused whole).
        self.summary = summary
        super().__init__(message or f"{len(rejects)} line(s) rejected; nothing was imported")
