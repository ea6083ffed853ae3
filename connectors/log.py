"""The logger a plugin logs through: a structlog logger by name, configured by its host.

The host process configures structlog: the robot does so (JSON, with its redaction
processor) as soon as it imports its registry, before any plugin is loaded, so a plugin's
events go through the robot's redaction like the core's own. The logger returned here is
structlog's lazy proxy, so a logger made at import time follows the configuration the host
sets later. Log stable snake_case events with context as keyword arguments; never a
plaintext code, credential, token or signature.

This module is part of the ground floor: it imports nothing from the robot.
"""

from __future__ import annotations

import structlog


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A logger for ``name`` (usually ``__name__``)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
