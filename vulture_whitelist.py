"""Names vulture reports as unused that are used, each with the reason (read by `.ci/run`).

vulture cannot see calls made by a framework through a fixed signature; every entry here is
one of those. Anything else it reports is dead code: remove it rather than list it here.
"""

from robot import log

# structlog calls every processor as (logger, method_name, event_dict); redact ignores the name.
log.redact.method_name  # type: ignore[attr-defined]  # noqa: B018
